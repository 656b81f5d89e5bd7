//! Every request and answer that crosses the boundary of a shared index, as pure functions.
//!
//! Requests are first normalised to the JSON body of the POST operation (a GET search's query
//! string becomes the same body), so one rewrite covers both route styles. Then, for a shared
//! index ([`Boundary`]):
//! - the caller's filter is parsed (strictly), refused if it names a gateway field, its
//!   key-field literals are namespaced, and it is ANDed with the partition clause; the
//!   combination is serialised and parsed again before it is sent;
//! - `select`, `orderby`, `searchFields`, `facets`, `highlight` naming a gateway field are
//!   refused; vector queries are pre-filtered;
//! - document keys get the partition prefix (fixed width, so injective) on the way in and lose
//!   it on the way out, wherever they appear; gateway fields never leave;
//! - continuation parameters are rebuilt from the caller's own request, never from upstream's.
//!
//! Unknown parameters are refused (400) on every placement: what is not understood cannot be
//! checked.

use odata_filter::{parse, parse_order_by, parse_select, CompareOp, Expr, Literal, Operand};
use odata_filter::{Path, PathRoot, SortKey, MAX_DEPTH};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::names::partition_code;
use crate::schema::{is_reserved, PARTITION_FIELD};
use crate::SearchError;

/// Longest document key Azure accepts.
pub const MAX_KEY_LEN: usize = 1024;
/// Most actions in one index batch.
pub const MAX_BATCH_ACTIONS: usize = 1000;

/// Search body parameters passed on (after checks); anything else is refused.
const SEARCH_PARAMS: &[&str] = &[
    "search",
    "filter",
    "orderby",
    "select",
    "searchFields",
    "top",
    "skip",
    "count",
    "facets",
    "highlight",
    "highlightPreTag",
    "highlightPostTag",
    "queryType",
    "searchMode",
    "scoringProfile",
    "scoringParameters",
    "scoringStatistics",
    "sessionId",
    "minimumCoverage",
    "vectorQueries",
    "vectorFilterMode",
    "semanticConfiguration",
    "queryLanguage",
    "speller",
    "answers",
    "captions",
    "semanticQuery",
];

/// Suggest and autocomplete body parameters.
const SUGGEST_PARAMS: &[&str] = &[
    "search",
    "suggesterName",
    "filter",
    "select",
    "orderby",
    "searchFields",
    "top",
    "highlightPreTag",
    "highlightPostTag",
    "fuzzy",
    "minimumCoverage",
    "autocompleteMode",
    "useFuzzyMatching",
];

/// The partition boundary of a shared index: the partition's code, its key prefix and its
/// filter clause.
#[derive(Debug, Clone)]
pub struct Boundary {
    code: String,
    prefix: String,
    key_field: String,
    clause: Expr,
}

impl Boundary {
    /// The boundary of partition `id` in an index whose key field is `key_field`.
    pub fn new(id: Uuid, key_field: &str) -> Result<Self, SearchError> {
        let code = partition_code(id);
        let clause = Expr::compare(
            Path::field(PARTITION_FIELD).map_err(|e| SearchError::Naming(e.to_string()))?,
            CompareOp::Eq,
            Literal::String(code.clone()),
        );
        Ok(Self {
            prefix: format!("{code}_"),
            code,
            key_field: key_field.to_owned(),
            clause,
        })
    }

    /// The value of the partition field of this partition's documents.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The prefix of this partition's document keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The filter clause that selects exactly this partition's documents.
    pub fn clause(&self) -> &Expr {
        &self.clause
    }

    /// The stored key of the caller's `key`, checked.
    pub fn wrap_key(&self, key: &str) -> Result<String, SearchError> {
        validate_key(key)?;
        let wrapped = format!("{}{key}", self.prefix);
        if wrapped.len() > MAX_KEY_LEN {
            return Err(SearchError::bad(format!(
                "The document key is too long: at most {} characters are allowed in this index.",
                MAX_KEY_LEN - self.prefix.len()
            )));
        }
        Ok(wrapped)
    }

    /// The caller's key of a stored key, when it belongs to this partition.
    pub fn unwrap_key<'a>(&self, stored: &'a str) -> Option<&'a str> {
        stored.strip_prefix(self.prefix.as_str())
    }

    /// `(caller) and partition clause`, serialised; the caller's filter checked first.
    pub fn filter(&self, caller: Option<&str>) -> Result<String, SearchError> {
        let combined = match caller.filter(|f| !f.trim().is_empty()) {
            None => self.clause.clone(),
            Some(text) => {
                let mut expr = parse(text).map_err(|e| SearchError::bad(e.to_string()))?;
                check_filter_fields(&expr)?;
                self.prefix_key_literals(&mut expr)?;
                expr.and(self.clause.clone())
            }
        };
        if combined.depth() > MAX_DEPTH {
            return Err(SearchError::bad(format!(
                "Invalid expression: the filter is nested too deeply (at most {} levels).",
                MAX_DEPTH - 1
            )));
        }
        let text = combined.to_string();
        // The serialised tree must read back as itself; anything else is never sent.
        match parse(&text) {
            Ok(reparsed) if reparsed == combined => Ok(text),
            _ => Err(SearchError::bad(
                "Invalid expression: the filter cannot be combined with the index's access rules.",
            )),
        }
    }

    /// Namespaces the string literals compared with the key field, so `id eq '1'` means the
    /// caller's document `1`.
    fn prefix_key_literals(&self, expr: &mut Expr) -> Result<(), SearchError> {
        let is_key = |p: &Path| {
            p.root() == PathRoot::Field
                && p.segments().len() == 1
                && p.segments()[0].as_str() == self.key_field
        };
        match expr {
            Expr::Not(inner) => self.prefix_key_literals(inner),
            Expr::And(items) | Expr::Or(items) => items
                .iter_mut()
                .try_for_each(|item| self.prefix_key_literals(item)),
            Expr::Compare(c) => {
                if let (Operand::Path(p), Literal::String(s)) = (&c.operand, &mut c.value) {
                    if is_key(p) {
                        *s = format!("{}{s}", self.prefix);
                    }
                }
                Ok(())
            }
            Expr::SearchIn(s) if is_key(&s.target) => {
                let values: Vec<String> = s
                    .value_list()
                    .map(|v| format!("{}{v}", self.prefix))
                    .collect();
                if values.is_empty() {
                    return Ok(());
                }
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                *expr = Expr::search_in(s.target.clone(), &refs)
                    .map_err(|e| SearchError::bad(e.to_string()))?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Azure's document key rule: 1 to 1024 letters, digits, `_`, `-` or `=`, not starting with `_`.
pub fn validate_key(key: &str) -> Result<(), SearchError> {
    if key.is_empty() {
        return Err(SearchError::bad("The document key cannot be empty."));
    }
    if key.starts_with('_') {
        return Err(SearchError::bad(
            "Invalid document key: a key cannot start with an underscore.",
        ));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '='))
    {
        return Err(SearchError::bad(
            "Invalid document key: keys can only contain letters, digits, underscore (_), dash (-), or equal sign (=).",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(SearchError::bad(format!(
            "Invalid document key: at most {MAX_KEY_LEN} characters are allowed."
        )));
    }
    Ok(())
}

fn reserved_error() -> SearchError {
    SearchError::bad("Field names starting with 'bulkhead' are reserved and cannot be used.")
}

fn check_name(name: &str) -> Result<(), SearchError> {
    if name.split('/').any(|seg| is_reserved(seg.trim())) {
        return Err(reserved_error());
    }
    Ok(())
}

fn check_path(path: &Path) -> Result<(), SearchError> {
    if path.segments().iter().any(|s| is_reserved(s.as_str())) {
        return Err(reserved_error());
    }
    Ok(())
}

fn contains_reserved_text(text: &str) -> bool {
    text.to_ascii_lowercase()
        .contains(crate::schema::RESERVED_PREFIX)
}

fn check_filter_fields(expr: &Expr) -> Result<(), SearchError> {
    for field in expr.field_paths() {
        check_name(&field.path)?;
    }
    let mut bad = false;
    expr.walk(&mut |e| {
        if let Expr::IsMatch(m) = e {
            bad |= contains_reserved_text(&m.query);
        }
    });
    if bad {
        return Err(reserved_error());
    }
    Ok(())
}

fn string_param<'a>(
    body: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, SearchError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SearchError::bad(format!(
            "The parameter '{name}' must be a string."
        ))),
    }
}

fn check_list(body: &Map<String, Value>, name: &str) -> Result<(), SearchError> {
    if let Some(list) = string_param(body, name)? {
        for item in list.split(',') {
            check_name(item)?;
        }
    }
    Ok(())
}

fn check_select_orderby(body: &Map<String, Value>) -> Result<(), SearchError> {
    if let Some(select) = string_param(body, "select")? {
        let paths = parse_select(select).map_err(|e| SearchError::bad(e.to_string()))?;
        for path in paths.iter().flatten() {
            check_path(path)?;
        }
    }
    if let Some(orderby) = string_param(body, "orderby")? {
        let clauses = parse_order_by(orderby).map_err(|e| SearchError::bad(e.to_string()))?;
        for clause in &clauses {
            match &clause.key {
                SortKey::Field(p) => check_path(p)?,
                SortKey::GeoDistance(g) => check_path(&g.target)?,
                SortKey::Score => {}
            }
        }
    }
    Ok(())
}

fn refuse_unknown(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), SearchError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(SearchError::bad(format!(
            "The parameter '{}' is not supported by this gateway.",
            unknown.chars().take(100).collect::<String>()
        ))),
        None => Ok(()),
    }
}

/// Checks and rewrites a search request body for its index.
pub fn search_request(
    body: &Map<String, Value>,
    boundary: Option<&Boundary>,
) -> Result<Map<String, Value>, SearchError> {
    refuse_unknown(body, SEARCH_PARAMS)?;
    let mut out = body.clone();
    let Some(boundary) = boundary else {
        return Ok(out);
    };
    check_select_orderby(body)?;
    check_list(body, "searchFields")?;
    check_list(body, "highlight")?;
    match body.get("facets") {
        None | Some(Value::Null) => {}
        Some(Value::Array(facets)) => {
            for facet in facets {
                let spec = facet
                    .as_str()
                    .ok_or_else(|| SearchError::bad("'facets' must be an array of strings."))?;
                check_name(spec.split(',').next().unwrap_or_default())?;
            }
        }
        Some(_) => return Err(SearchError::bad("'facets' must be an array of strings.")),
    }
    if let Some(search) = string_param(body, "search")? {
        if string_param(body, "queryType")? == Some("full") && contains_reserved_text(search) {
            return Err(reserved_error());
        }
    }
    match body.get("vectorQueries") {
        None | Some(Value::Null) => {}
        Some(Value::Array(queries)) => {
            for query in queries {
                let obj = query
                    .as_object()
                    .ok_or_else(|| SearchError::bad("'vectorQueries' must hold objects."))?;
                if obj.contains_key("filterOverride") {
                    return Err(SearchError::bad(
                        "'filterOverride' is not supported by this gateway.",
                    ));
                }
                if let Some(fields) = obj.get("fields").and_then(Value::as_str) {
                    for f in fields.split(',') {
                        check_name(f)?;
                    }
                }
            }
            // The partition filter applies before ranking, so no other partition's vector
            // takes a place in the top k.
            out.insert("vectorFilterMode".into(), Value::from("preFilter"));
        }
        Some(_) => return Err(SearchError::bad("'vectorQueries' must be an array.")),
    }
    let filter = boundary.filter(string_param(body, "filter")?)?;
    out.insert("filter".into(), Value::String(filter));
    Ok(out)
}

/// Checks and rewrites a suggest or autocomplete request body for its index.
pub fn suggest_request(
    body: &Map<String, Value>,
    boundary: Option<&Boundary>,
) -> Result<Map<String, Value>, SearchError> {
    refuse_unknown(body, SUGGEST_PARAMS)?;
    let mut out = body.clone();
    let Some(boundary) = boundary else {
        return Ok(out);
    };
    check_select_orderby(body)?;
    check_list(body, "searchFields")?;
    let filter = boundary.filter(string_param(body, "filter")?)?;
    out.insert("filter".into(), Value::String(filter));
    Ok(out)
}

/// The search that counts a partition's documents (`$count` of a shared index).
pub fn count_request(boundary: &Boundary) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("search".into(), Value::from("*"));
    body.insert("filter".into(), Value::String(boundary.clause.to_string()));
    body.insert("count".into(), Value::Bool(true));
    body.insert("top".into(), Value::from(0));
    body
}

/// The search that looks up the caller's `key` in a shared index: the stored key AND the
/// partition clause, so a document is found only if both its key prefix and its partition
/// field are the caller's.
pub fn lookup_request(
    boundary: &Boundary,
    key: &str,
    select: Option<&str>,
) -> Result<Map<String, Value>, SearchError> {
    let stored = boundary.wrap_key(key)?;
    let key_path =
        Path::field(&boundary.key_field).map_err(|e| SearchError::Naming(e.to_string()))?;
    let filter = Expr::compare(key_path, CompareOp::Eq, Literal::String(stored))
        .and(boundary.clause.clone());
    let mut body = Map::new();
    body.insert("search".into(), Value::from("*"));
    body.insert("filter".into(), Value::String(filter.to_string()));
    body.insert("top".into(), Value::from(1));
    if let Some(select) = select {
        body.insert("select".into(), Value::from(select));
        check_select_orderby(&body)?;
    }
    Ok(body)
}

/// Checks and rewrites an index batch: keys namespaced, the partition field forced, gateway
/// fields refused. Without a boundary the actions are only checked.
pub fn batch_request(
    body: &Map<String, Value>,
    key_field: &str,
    boundary: Option<&Boundary>,
) -> Result<Map<String, Value>, SearchError> {
    let Some(Value::Array(actions)) = body.get("value") else {
        return Err(SearchError::bad(
            "The request body must have a 'value' array of actions.",
        ));
    };
    if actions.is_empty() {
        return Err(SearchError::bad(
            "The batch must contain at least one action.",
        ));
    }
    if actions.len() > MAX_BATCH_ACTIONS {
        return Err(SearchError::bad(format!(
            "The batch has {} actions; at most {MAX_BATCH_ACTIONS} are allowed in one request.",
            actions.len()
        )));
    }
    let mut out = Vec::with_capacity(actions.len());
    for (i, action) in actions.iter().enumerate() {
        let Some(doc) = action.as_object() else {
            return Err(SearchError::bad(format!(
                "Action {i} must be a JSON object."
            )));
        };
        let kind = match doc.get("@search.action") {
            None => "upload",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(SearchError::bad(format!(
                    "Action {i}: '@search.action' must be a string."
                )))
            }
        };
        if !matches!(kind, "upload" | "merge" | "mergeOrUpload" | "delete") {
            return Err(SearchError::bad(format!(
                "Action {i}: '@search.action' must be upload, merge, mergeOrUpload or delete."
            )));
        }
        let Some(Value::String(key)) = doc.get(key_field) else {
            return Err(SearchError::bad(format!(
                "Action {i}: the key field '{key_field}' is missing or not a string."
            )));
        };
        let Some(boundary) = boundary else {
            validate_key(key).map_err(|e| SearchError::bad(format!("Action {i}: {e}")))?;
            out.push(action.clone());
            continue;
        };
        if doc.keys().any(|k| is_reserved(k)) {
            return Err(reserved_error());
        }
        let stored = boundary
            .wrap_key(key)
            .map_err(|e| SearchError::bad(format!("Action {i}: {e}")))?;
        let mut rewritten = doc.clone();
        rewritten.insert(key_field.to_owned(), Value::String(stored));
        if kind != "delete" {
            rewritten.insert(PARTITION_FIELD.into(), Value::String(boundary.code.clone()));
        }
        out.push(Value::Object(rewritten));
    }
    let mut body = Map::new();
    body.insert("value".into(), Value::Array(out));
    Ok(body)
}

/// Removes this partition's key prefix and every gateway field from an answer: document
/// values, batch results, highlights, facets, autocomplete terms, error messages.
pub fn clean_answer(value: &mut Value, boundary: Option<&Boundary>) {
    match value {
        Value::Object(obj) => {
            obj.retain(|k, _| !is_reserved(k));
            obj.remove("@odata.context");
            for v in obj.values_mut() {
                clean_answer(v, boundary);
            }
        }
        Value::Array(items) => {
            for item in items {
                clean_answer(item, boundary);
            }
        }
        Value::String(s) => {
            if let Some(b) = boundary {
                if s.contains(b.prefix.as_str()) {
                    *s = s.replace(b.prefix.as_str(), "");
                }
                if s.contains(b.code.as_str()) {
                    *s = s.replace(b.code.as_str(), "");
                }
            }
        }
        _ => {}
    }
}

/// Replaces upstream's continuation with one built from the caller's own request: the
/// caller's body with upstream's `skip` and `top`, and a link to the gateway.
pub fn continue_with(
    answer: &mut Map<String, Value>,
    caller: &Map<String, Value>,
    next_link: impl FnOnce(&Map<String, Value>) -> String,
) {
    let Some(Value::Object(upstream)) = answer.remove("@search.nextPageParameters") else {
        answer.remove("@odata.nextLink");
        return;
    };
    let mut next = caller.clone();
    for name in ["skip", "top"] {
        match upstream.get(name) {
            Some(v @ Value::Number(_)) => next.insert(name.into(), v.clone()),
            _ => next.remove(name),
        };
    }
    answer.insert("@odata.nextLink".into(), Value::String(next_link(&next)));
    answer.insert("@search.nextPageParameters".into(), Value::Object(next));
}

/// A GET search's query string as the equivalent POST body.
pub fn search_body_from_query(
    pairs: &[(String, String)],
) -> Result<Map<String, Value>, SearchError> {
    let mut body = Map::new();
    let mut facets = Vec::new();
    for (name, value) in pairs {
        let key = match name.as_str() {
            "api-version" => continue,
            "facet" => {
                facets.push(Value::String(value.clone()));
                continue;
            }
            "$top" | "$skip" => {
                let n: u64 = value.parse().map_err(|_| {
                    SearchError::bad(format!("'{name}' must be a non-negative integer."))
                })?;
                body.insert(name[1..].to_owned(), Value::from(n));
                continue;
            }
            "$count" => {
                let b = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(SearchError::bad("'$count' must be true or false.")),
                };
                body.insert("count".into(), Value::Bool(b));
                continue;
            }
            "$filter" | "$orderby" | "$select" => &name[1..],
            other => other,
        };
        if body.contains_key(key) {
            return Err(SearchError::bad(format!(
                "The parameter '{name}' is given twice."
            )));
        }
        body.insert(key.to_owned(), Value::String(value.clone()));
    }
    if !facets.is_empty() {
        body.insert("facets".into(), Value::Array(facets));
    }
    Ok(body)
}

/// A GET suggest or autocomplete query string as the equivalent POST body.
pub fn suggest_body_from_query(
    pairs: &[(String, String)],
) -> Result<Map<String, Value>, SearchError> {
    let mut body = Map::new();
    for (name, value) in pairs {
        if name == "api-version" {
            continue;
        }
        let key = name.strip_prefix('$').unwrap_or(name);
        let value = match key {
            "top" | "minimumCoverage" => Value::from(
                value
                    .parse::<f64>()
                    .map_err(|_| SearchError::bad(format!("'{name}' must be a number.")))?,
            ),
            "fuzzy" | "useFuzzyMatching" => Value::Bool(value == "true"),
            _ => Value::String(value.clone()),
        };
        let value = match (key, &value) {
            ("top", Value::Number(n)) => n.as_f64().map(|f| Value::from(f as u64)).unwrap_or(value),
            _ => value,
        };
        body.insert(key.to_owned(), value);
    }
    Ok(body)
}

/// Serialises query pairs, percent-encoding each component.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'$') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;
    use odata_filter::evaluate;
    use serde_json::json;

    fn a() -> Boundary {
        Boundary::new(Uuid::from_u128(0xA), "id").unwrap()
    }
    fn b() -> Boundary {
        Boundary::new(Uuid::from_u128(0xB), "id").unwrap()
    }
    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }
    /// A document of partition `p` as stored, with key `key`.
    fn stored(p: &Boundary, key: &str) -> Map<String, Value> {
        obj(
            json!({"id": p.wrap_key(key).unwrap(), PARTITION_FIELD: p.code(), "x": 1,
            "title": "pool", "tags": ["pool"]}),
        )
    }

    const HOSTILE_FILTERS: &[&str] = &[
        "x eq 1) or (true",
        "x eq 1)) or ((true",
        "true",
        "true or true",
        "not false",
        "x eq 1 or true",
        "x eq 1 or not (x eq 1)",
        "id ne 'nothing'",
        "id eq '1' or true",
        "search.in(id, '1,2,3')",
        "search.in(id, '1a2', 'a')",
        "tags/any(t: t eq 'pool') or true",
        "tags/all(t: t ne 'zzz')",
        "x eq 'a'' or ''1''=''1'",
        "x eq '''' or true or ''''",
        "search.ismatch('pool')",
        "search.ismatch('*', 'title', 'full', 'any') or true",
        "x eq null or x ne null",
    ];

    #[test]
    fn every_hostile_filter_is_refused_or_false_for_another_partitions_documents() {
        let docs = [stored(&b(), "1"), stored(&b(), "2"), stored(&a(), "1")];
        for filter in HOSTILE_FILTERS {
            let combined = match a().filter(Some(filter)) {
                Ok(combined) => combined,
                Err(SearchError::BadRequest(_)) => continue,
                Err(other) => panic!("{filter}: {other}"),
            };
            let expr = parse(&combined).unwrap();
            // search.ismatch is evaluated as false without full text: only the structure matters.
            assert!(!evaluate(&expr, &docs[0]), "{filter} -> {combined}");
            assert!(!evaluate(&expr, &docs[1]), "{filter} -> {combined}");
            let bounded = match &expr {
                Expr::And(items) => items.contains(a().clause()),
                other => other == a().clause(),
            };
            assert!(bounded, "{filter} -> {combined}");
        }
    }

    #[test]
    fn filters_naming_the_partition_field_or_outside_the_grammar_are_refused() {
        let refused = [
            "bulkheadTenant eq 'x'",
            "BULKHEADTENANT ne 'x'",
            "x eq 1 or bulkheadTenant ne 'a'",
            "not (bulkheadTenant eq 'a')",
            "search.in(bulkheadTenant, 'a,b')",
            "bulkheadTenant/any(t: t eq 'a')",
            "tags/any(t: search.in(bulkheadTenant, 'a'))",
            "search.ismatch('x', 'bulkheadTenant')",
            "search.ismatch('bulkheadTenant:x', 'title', 'full', 'any')",
            "x eq 1 -- comment",
            "x eq 1 /* c */ or true",
            "x eq 'unterminated",
            "x eq 1 or (true",
            "x eq 1\u{a0}or true",
            "x eq 1 OR true",
            ")",
        ];
        for filter in refused {
            assert!(
                matches!(a().filter(Some(filter)), Err(SearchError::BadRequest(_))),
                "{filter}"
            );
        }
    }

    #[test]
    fn key_literals_in_filters_name_the_callers_own_documents() {
        let combined = a()
            .filter(Some("id eq '1' or search.in(id, '2,3')"))
            .unwrap();
        let expr = parse(&combined).unwrap();
        assert!(evaluate(&expr, &stored(&a(), "1")));
        assert!(evaluate(&expr, &stored(&a(), "3")));
        assert!(!evaluate(&expr, &stored(&a(), "4")));
        assert!(!evaluate(&expr, &stored(&b(), "1")));
    }

    #[test]
    fn an_absent_or_blank_filter_is_the_partition_clause() {
        for f in [None, Some(""), Some("   ")] {
            assert_eq!(
                a().filter(f).unwrap(),
                format!("{PARTITION_FIELD} eq '{}'", a().code())
            );
        }
    }

    #[test]
    fn a_filter_at_the_depth_limit_is_refused_not_sent_deeper() {
        let deep = format!("{}x eq 1{}", "not (".repeat(98), ")".repeat(98));
        if parse(&deep).is_ok() {
            let result = a().filter(Some(&deep));
            if let Ok(text) = result {
                assert!(parse(&text).is_ok());
            }
        }
    }

    #[test]
    fn keys_are_prefixed_injectively_and_checked() {
        let (pa, pb) = (a(), b());
        assert_eq!(pa.prefix().len(), crate::PARTITION_CODE_LEN + 1);
        assert_ne!(pa.wrap_key("1").unwrap(), pb.wrap_key("1").unwrap());
        assert_eq!(pa.unwrap_key(&pa.wrap_key("k-1=").unwrap()), Some("k-1="));
        assert_eq!(pa.unwrap_key(&pb.wrap_key("1").unwrap()), None);
        let max = MAX_KEY_LEN - pa.prefix().len();
        assert!(pa.wrap_key(&"k".repeat(max)).is_ok());
        for bad in [
            String::new(),
            "_x".into(),
            "a b".into(),
            "a/b".into(),
            "a'b".into(),
            "é".into(),
            "k".repeat(max + 1),
        ] {
            assert!(
                matches!(pa.wrap_key(&bad), Err(SearchError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parameters_naming_gateway_fields_are_refused() {
        let refused = [
            json!({"select": "id,bulkheadTenant"}),
            json!({"select": "BulkheadTenant"}),
            json!({"orderby": "bulkheadTenant desc"}),
            json!({"orderby": "x, bulkheadTenant"}),
            json!({"searchFields": "title, bulkheadTenant"}),
            json!({"facets": ["bulkheadTenant,count:100"]}),
            json!({"facets": ["x", "bulkheadTenant"]}),
            json!({"highlight": "bulkheadTenant"}),
            json!({"search": "bulkheadTenant:abc", "queryType": "full"}),
            json!({"vectorQueries": [{"kind": "vector", "vector": [1.0], "fields": "bulkheadTenant"}]}),
            json!({"vectorQueries": [{"kind": "vector", "vector": [1.0], "fields": "v", "filterOverride": "true"}]}),
            json!({"filter": "bulkheadTenant ne ''"}),
            json!({"unknownParam": 1}),
            json!({"select": "id) or (true"}),
        ];
        for body in refused {
            let result = search_request(&obj(body.clone()), Some(&a()));
            assert!(matches!(result, Err(SearchError::BadRequest(_))), "{body}");
        }
        let ok = search_request(
            &obj(
                json!({"search": "pool", "select": "id,title", "orderby": "x desc",
                "facets": ["tags,count:5"], "count": true, "top": 3,
                "vectorQueries": [{"kind": "vector", "vector": [1.0], "fields": "v"}],
                "vectorFilterMode": "postFilter"}),
            ),
            Some(&a()),
        )
        .unwrap();
        assert_eq!(ok["vectorFilterMode"], "preFilter");
        assert!(ok["filter"].as_str().unwrap().contains(a().code()));
    }

    #[test]
    fn suggest_and_lookup_and_count_carry_the_partition_clause() {
        let s = suggest_request(
            &obj(json!({"search": "po", "suggesterName": "sg",
            "filter": "x eq 1) or (true"})),
            Some(&a()),
        );
        assert!(s.is_err());
        let s = suggest_request(
            &obj(json!({"search": "po", "suggesterName": "sg"})),
            Some(&a()),
        )
        .unwrap();
        assert!(s["filter"].as_str().unwrap().contains(a().code()));
        let l = lookup_request(&a(), "1", None).unwrap();
        let expr = parse(l["filter"].as_str().unwrap()).unwrap();
        assert!(evaluate(&expr, &stored(&a(), "1")));
        assert!(!evaluate(&expr, &stored(&b(), "1")));
        assert!(lookup_request(&a(), "1", Some("bulkheadTenant")).is_err());
        assert!(lookup_request(&a(), "a'b", None).is_err());
        let c = count_request(&a());
        assert_eq!(c["top"], 0);
        assert!(c["filter"].as_str().unwrap().contains(a().code()));
    }

    #[test]
    fn batches_are_namespaced_and_forced_into_the_partition() {
        let body = obj(json!({"value": [
            {"@search.action": "upload", "id": "1", "x": 1},
            {"@search.action": "merge", "id": "2"},
            {"@search.action": "delete", "id": "3"},
            {"id": "4"}
        ]}));
        let out = batch_request(&body, "id", Some(&a())).unwrap();
        let actions = out["value"].as_array().unwrap();
        for (i, action) in actions.iter().enumerate() {
            assert_eq!(action["id"], a().wrap_key(&(i + 1).to_string()).unwrap());
        }
        assert_eq!(actions[0][PARTITION_FIELD], a().code());
        assert_eq!(actions[1][PARTITION_FIELD], a().code());
        assert!(actions[2].get(PARTITION_FIELD).is_none());
        let refused = [
            json!({"value": [{"id": "1", "bulkheadTenant": "x"}]}),
            json!({"value": [{"id": "1", "BULKHEADtenant": "x"}]}),
            json!({"value": [{"id": "a b"}]}),
            json!({"value": [{"id": 1}]}),
            json!({"value": [{"x": 1}]}),
            json!({"value": [{"@search.action": "drop", "id": "1"}]}),
            json!({"value": []}),
            json!({"value": "x"}),
        ];
        for body in refused {
            assert!(
                batch_request(&obj(body.clone()), "id", Some(&a())).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn answers_lose_prefixes_and_gateway_fields() {
        let pa = a();
        let mut answer = json!({
            "@odata.context": "http://up/indexes('shared-x')/$metadata",
            "value": [{"id": pa.wrap_key("1").unwrap(), "bulkheadTenant": pa.code(),
                "@search.highlights": {"id": [format!("<em>{}1</em>", pa.prefix())]}}],
            "@search.facets": {"id": [{"value": pa.wrap_key("1").unwrap(), "count": 1}]},
        });
        clean_answer(&mut answer, Some(&pa));
        let text = answer.to_string();
        assert!(!text.contains(pa.code()), "{text}");
        assert!(!text.to_lowercase().contains("bulkhead"), "{text}");
        assert!(!text.contains("odata.context"), "{text}");
        assert_eq!(answer["value"][0]["id"], "1");
    }

    #[test]
    fn continuations_are_rebuilt_from_the_callers_request() {
        let caller = obj(json!({"search": "*", "filter": "x eq 1"}));
        let mut answer = obj(json!({"value": [], "@search.nextPageParameters":
            {"search": "*", "filter": "(x eq 1) and bulkheadTenant eq 'a'", "skip": 50},
            "@odata.nextLink": "http://upstream/secret"}));
        continue_with(&mut answer, &caller, |_| "http://gw/next".into());
        assert_eq!(
            answer["@search.nextPageParameters"],
            json!({"search": "*", "filter": "x eq 1", "skip": 50})
        );
        assert_eq!(answer["@odata.nextLink"], "http://gw/next");
        let mut last = obj(json!({"value": [], "@odata.nextLink": "http://upstream/x"}));
        continue_with(&mut last, &caller, |_| unreachable!());
        assert!(last.get("@odata.nextLink").is_none());
    }

    #[test]
    fn get_parameters_become_the_post_body() {
        let pairs: Vec<(String, String)> = [
            ("api-version", "2024-07-01"),
            ("search", "pool"),
            ("$filter", "x eq 1"),
            ("$top", "5"),
            ("$skip", "10"),
            ("$count", "true"),
            ("facet", "a"),
            ("facet", "b,count:3"),
            ("$select", "id"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let body = search_body_from_query(&pairs).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"search": "pool", "filter": "x eq 1", "top": 5, "skip": 10, "count": true,
                "facets": ["a", "b,count:3"], "select": "id"})
        );
        let twice = vec![
            ("$filter".to_owned(), "a".to_owned()),
            ("$filter".to_owned(), "b".to_owned()),
        ];
        assert!(search_body_from_query(&twice).is_err());
        assert_eq!(
            encode_query(&[("$filter".into(), "a eq 'b c'".into())]),
            "$filter=a%20eq%20%27b%20c%27"
        );
    }
}
