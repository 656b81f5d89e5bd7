//! The tenant boundary as a property: for any caller filter, either it is rejected, or
//! `(caller) and (tenant clause)` serialised and parsed again is the same tree and is false
//! for every document of another tenant.

#![cfg(test)]

use odata_filter::{evaluate, parse, CompareOp, Expr, Literal, Path};
use serde_json::{json, Map, Value};

/// Hostile or tricky caller filters. Each must be rejected or stay contained.
const HOSTILE: &[&str] = &[
    "x eq 1) or (true",
    "x eq 1) or tenantId eq 'B' or (true",
    "x eq 1)) or ((true",
    "x eq 1 or (true",
    "x eq 1 or true)",
    "((((x eq 1)))",
    "true",
    "true or true",
    "not false",
    "x eq 1 or true",
    "tenantId eq 'B'",
    "tenantId ne 'A'",
    "tenantId eq 'A' or tenantId eq 'B'",
    "tenantIds/any(t: t eq 'B')",
    "tenantIds/all(t: t ne 'A')",
    "tenantId eq null or true",
    "x eq 1 or not tenantId eq 'A'",
    "x eq 1 or not (tenantId eq 'A')",
    "x eq 'a'' or ''1''=''1'",
    "x eq 'a' or 'b'",
    "x eq 'unterminated",
    "x eq 'it''s' ) or (true",
    "x eq '''' or true or ''''",
    "x eq 'a\\'' or true or '",
    "x eq 1 -- comment",
    "x eq 1 /* comment */ or true",
    "x eq 1 // or true",
    "x eq 1 # or true",
    "x eq 1; or true",
    "x eq 1, true",
    "x eq 1%29 or %28true",
    "x eq 1\u{0} or true",
    "x eq 1\u{a0}or true",
    "x eq 1\u{2028}or true",
    "x eq 1\u{200b} or true",
    "x eq 1 \u{ff2f}\u{ff32} true",
    "x eq 1 \u{43e}r true",
    "x eq 1 OR true",
    "x eq 1 Or true",
    "x eq 1\tor\ttrue",
    "x eq 1\r\nor true",
    "'x' eq 'x'",
    "1 eq 1",
    "x eq x",
    "x eq 1 and",
    "or true",
    "and true",
    ")",
    "(",
    "",
    "   ",
    "$filter=true",
    "search.ismatch('*')",
    "search.ismatch('tenantId:B', 'tenantId', 'full', 'any')",
    "search.in(tenantId, 'A,B', ',') or true",
    "search.in(tenantId, 'A'', ''B')",
    "geo.distance(loc, geography'POINT(0 0)'')) or (true') lt 1",
    "geo.intersects(loc, geography'POLYGON((0 0, 1 0, 1 1, 0 0))') or true",
    "Tags/any(t: t eq 'x') or Tags/all()",
    "Tags/any(t: t eq 'x' or tenantId eq 'B')",
    "Tags/any(tenantId: tenantId eq 'B')",
    "x eq 1 and (tenantId ne 'A' or true)",
    "not (tenantId eq 'A')",
    "not not true",
    "x eq 2024-01-01T00:00:00Z or true",
    "x eq NaN or x ne NaN",
    "x eq -INF or true",
    "x eq 1e999",
    "x eq 99999999999999999999 or true",
    "x eq datetimeoffset'2024-01-01' or true",
    "x eq binary'AA==' or true",
    "x/any(t: true)",
];

fn tenant_clauses() -> Vec<(Expr, Map<String, Value>)> {
    let foreign = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let base = json!({
        "x": 1, "y": 2, "isActive": true, "Tags": ["x", "B"], "loc": {"type": "Point", "coordinates": [0.5, 0.5]},
        "t": "B",
    });
    let mut doc_a = foreign(base.clone());
    doc_a.insert("tenantId".into(), json!("B"));
    let mut doc_b = foreign(base);
    doc_b.insert("tenantIds".into(), json!(["B", "C"]));
    vec![
        (
            Expr::compare(
                Path::field("tenantId").unwrap(),
                CompareOp::Eq,
                Literal::String("A".into()),
            ),
            doc_a,
        ),
        (
            Expr::any_in(Path::field("tenantIds").unwrap(), &["A"]).unwrap(),
            doc_b,
        ),
    ]
}

/// The property: rejected, or contained.
fn assert_contained(caller_text: &str) -> bool {
    let Ok(caller) = parse(caller_text) else {
        return false;
    };
    for (tenant, foreign_doc) in tenant_clauses() {
        let combined = caller.clone().and(tenant);
        let text = combined.to_string();
        let reparsed = parse(&text)
            .unwrap_or_else(|e| panic!("{caller_text:?} combined as {text:?} does not parse: {e}"));
        assert_eq!(
            reparsed, combined,
            "{caller_text:?} changed shape through {text:?}"
        );
        assert_eq!(reparsed.to_string(), text, "serialisation is not canonical");
        assert!(
            !evaluate(&reparsed, &foreign_doc),
            "{caller_text:?} combined as {text:?} matched another tenant's document"
        );
    }
    true
}

#[test]
fn no_hostile_filter_escapes_the_tenant_clause() {
    assert!(HOSTILE.len() >= 30);
    let mut accepted = 0;
    for filter in HOSTILE {
        if assert_contained(filter) {
            accepted += 1;
        }
    }
    // Both outcomes are exercised: some hostile filters parse and are still contained.
    assert!(accepted >= 10, "only {accepted} parsed");
    assert!(
        HOSTILE.len() - accepted >= 30,
        "only {} rejected",
        HOSTILE.len() - accepted
    );
}

#[test]
fn filters_that_try_to_break_out_are_rejected_outright() {
    for filter in [
        "x eq 1) or (true",
        "x eq 1) or tenantId eq 'B' or (true",
        "x eq 1 or (true",
        "x eq 1 or true)",
        "x eq 'unterminated",
        "x eq 'it''s' ) or (true",
        "x eq 1 -- comment",
        "x eq 1 /* comment */ or true",
        "x eq 1\u{a0}or true",
        "x eq 1 \u{43e}r true",
        "x eq 1 OR true",
        "x eq 1%29 or %28true",
    ] {
        let err = parse(filter).expect_err(filter);
        assert!(err.to_string().starts_with("Invalid expression: "), "{err}");
    }
}

#[test]
fn quotes_inside_strings_stay_inside_the_string() {
    let caller = parse("x eq 'a'' or ''1''=''1'").unwrap();
    let Expr::Compare(c) = &caller else {
        panic!("{caller:?}")
    };
    assert_eq!(c.value, Literal::String("a' or '1'='1".into()));
    let (tenant, _) = tenant_clauses().remove(0);
    assert_eq!(
        caller.and(tenant).to_string(),
        "(x eq 'a'' or ''1''=''1') and (tenantId eq 'A')"
    );
}

/// A small deterministic generator, so the fuzz run is reproducible without dependencies.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_token_soup_is_rejected_or_contained() {
    const FRAGMENTS: &[&str] = &[
        "x",
        "y",
        "tenantId",
        "tenantIds",
        "Tags",
        "isActive",
        "t",
        "eq",
        "ne",
        "gt",
        "le",
        "and",
        "or",
        "not",
        "(",
        ")",
        "(",
        ")",
        "'A'",
        "'B'",
        "''",
        "'",
        "''''",
        "1",
        "-1",
        "2.5",
        "true",
        "false",
        "null",
        "NaN",
        "-INF",
        "/",
        "any(",
        "all(",
        "t:",
        ":",
        ",",
        "search.in(",
        "search.ismatch('x')",
        "geo.distance(loc, geography'POINT(0 0)')",
        "2024-01-01T00:00:00Z",
        "--",
        "\u{a0}",
        "%20",
        "\\",
        "\"",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let len = 1 + rng.below(14);
        let mut text = String::new();
        for _ in 0..len {
            text.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            if rng.below(4) != 0 {
                text.push(' ');
            }
        }
        if assert_contained(&text) {
            parsed += 1;
        }
    }
    assert!(
        parsed > 100,
        "the generator should produce some valid filters, got {parsed}"
    );
}

/// Random text from the grammar itself, with random spacing and redundant parentheses.
fn gen_filter(rng: &mut XorShift, depth: usize, vars: &mut Vec<String>) -> String {
    const OPS: &[&str] = &["eq", "ne", "gt", "lt", "ge", "le"];
    const LITERALS: &[&str] = &[
        "1",
        "-7",
        "2.5",
        "1e3",
        "NaN",
        "INF",
        "-INF",
        "null",
        "true",
        "false",
        "'A'",
        "'B'",
        "'it''s'",
        "''",
        "'x) or (true'",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00+01:00",
    ];
    let field = |rng: &mut XorShift, vars: &[String]| -> String {
        if vars.is_empty() {
            ["x", "y", "tenantId", "Tags", "isActive", "a/b"][rng.below(6)].to_owned()
        } else {
            let v = &vars[rng.below(vars.len())];
            if rng.below(2) == 0 {
                v.clone()
            } else {
                format!("{v}/sub")
            }
        }
    };
    let sp = |rng: &mut XorShift| [" ", "  ", "\t", "\n"][rng.below(4)];
    let choice = if depth == 0 {
        rng.below(5)
    } else {
        rng.below(11)
    };
    match choice {
        0 => {
            let (f, l) = (field(rng, vars), LITERALS[rng.below(LITERALS.len())]);
            let op = OPS[rng.below(OPS.len())];
            if rng.below(3) == 0 {
                format!("{l}{}{op}{}{f}", sp(rng), sp(rng))
            } else {
                format!("{f}{}{op}{}{l}", sp(rng), sp(rng))
            }
        }
        1 => field(rng, vars),
        2 => ["true", "false"][rng.below(2)].to_owned(),
        3 => format!(
            "search.in({}, 'A,B C', {})",
            field(rng, vars),
            ["','", "'|'", "' '"][rng.below(3)]
        ),
        4 if vars.is_empty() => format!(
            "search.ismatch{}('q''s', 'name')",
            ["", "scoring"][rng.below(2)]
        ),
        4 => format!(
            "geo.distance({}, geography'POINT(1 2)') lt 5",
            field(rng, vars)
        ),
        5 | 6 => {
            let word = ["and", "or"][rng.below(2)];
            let a = gen_filter(rng, depth - 1, vars);
            let b = gen_filter(rng, depth - 1, vars);
            format!("({a}){}{word}{}({b})", sp(rng), sp(rng))
        }
        7 => format!("not ({})", gen_filter(rng, depth - 1, vars)),
        8 => format!("(({}))", gen_filter(rng, depth - 1, vars)),
        _ => {
            let var = format!("v{}", vars.len());
            let coll = field(rng, vars);
            vars.push(var.clone());
            let body = gen_filter(rng, depth - 1, vars);
            vars.pop();
            let kind = ["any", "all"][rng.below(2)];
            format!("{coll}/{kind}({var}:{}{body})", sp(rng))
        }
    }
}

#[test]
fn random_grammatical_filters_round_trip_and_stay_contained() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..5_000 {
        let depth = rng.below(6);
        let text = gen_filter(&mut rng, depth, &mut Vec::new());
        assert!(parse(&text).is_ok(), "{text:?}: {:?}", parse(&text).err());
        assert!(assert_contained(&text));
    }
}
