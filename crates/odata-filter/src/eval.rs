//! Evaluates a filter against one JSON document, with Azure AI Search's OData semantics.
//!
//! - A missing field is `null`. `x eq null` is true for a missing or null `x`, `x ne 5` is true
//!   for it, and `gt`/`lt`/`ge`/`le` with a null on either side are false.
//! - Numbers compare numerically (integers exactly), `NaN` equals `NaN` and orders with nothing;
//!   stored `"NaN"`, `"INF"`, `"-INF"` strings (Azure's JSON for them) count as numbers.
//! - Strings compare ordinally by UTF-16 code unit, like .NET's ordinal comparison.
//! - A DateTimeOffset constant compares as an instant with a stored RFC 3339 string.
//! - Values of different kinds are never equal: `eq` is false and `ne` true.
//! - `any` over an empty or missing collection is false, `all` over it true.
//! - `geo.distance` is in kilometres (haversine) to a GeoJSON point
//!   `{"type":"Point","coordinates":[lon,lat]}`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::ast::{
    CompareOp, Comparison, Expr, GeoPoint, IsMatch, LambdaKind, Literal, Operand, Path, PathRoot,
};
use crate::lexer::parse_datetime;

/// Mean Earth radius used by `geo.distance`, in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Answers `search.ismatch` / `search.ismatchscoring` for one document; the full-text engine
/// is the caller's (the emulator's index), not this crate's.
pub trait FullText {
    /// Whether `doc` matches the call's query over the call's fields.
    fn is_match(&self, call: &IsMatch, doc: &Map<String, Value>) -> bool;
}

impl<F> FullText for F
where
    F: Fn(&IsMatch, &Map<String, Value>) -> bool,
{
    fn is_match(&self, call: &IsMatch, doc: &Map<String, Value>) -> bool {
        self(call, doc)
    }
}

/// A [`FullText`] under which no document matches any full-text query.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFullText;

impl FullText for NoFullText {
    fn is_match(&self, _call: &IsMatch, _doc: &Map<String, Value>) -> bool {
        false
    }
}

/// Whether `doc` satisfies `expr`; `search.ismatch` matches nothing.
pub fn evaluate(expr: &Expr, doc: &Map<String, Value>) -> bool {
    evaluate_with(expr, doc, &NoFullText)
}

/// Whether `doc` satisfies `expr`, asking `full_text` about `search.ismatch` calls.
pub fn evaluate_with(expr: &Expr, doc: &Map<String, Value>, full_text: &dyn FullText) -> bool {
    let mut ctx = Ctx {
        doc,
        full_text,
        vars: Vec::new(),
    };
    ctx.eval(expr)
}

struct Ctx<'a> {
    doc: &'a Map<String, Value>,
    full_text: &'a dyn FullText,
    /// Range variables bound by enclosing lambdas, innermost last.
    vars: Vec<(&'a str, &'a Value)>,
}

impl<'a> Ctx<'a> {
    fn eval(&mut self, expr: &'a Expr) -> bool {
        match expr {
            Expr::Bool(b) => *b,
            Expr::Path(p) => self.resolve(p).and_then(Value::as_bool) == Some(true),
            Expr::Not(inner) => !self.eval(inner),
            Expr::And(items) => items.iter().all(|e| self.eval(e)),
            Expr::Or(items) => items.iter().any(|e| self.eval(e)),
            Expr::Compare(c) => self.compare(c),
            Expr::Lambda(l) => {
                let elements: &'a [Value] = match self.resolve(&l.collection) {
                    None => &[],
                    Some(Value::Array(items)) => items,
                    // Not a collection: neither quantifier can hold.
                    Some(_) => return false,
                };
                let Some(body) = &l.body else {
                    return !elements.is_empty();
                };
                let name = body.variable.as_str();
                let mut test = |element: &'a Value| {
                    self.vars.push((name, element));
                    let result = self.eval(&body.predicate);
                    self.vars.pop();
                    result
                };
                match l.kind {
                    LambdaKind::Any => elements.iter().any(&mut test),
                    LambdaKind::All => elements.iter().all(&mut test),
                }
            }
            Expr::SearchIn(s) => match self.resolve(&s.target).and_then(Value::as_str) {
                Some(value) => s.value_list().any(|v| v == value),
                None => false,
            },
            Expr::IsMatch(m) => self.full_text.is_match(m, self.doc),
            Expr::GeoIntersects(g) => self
                .resolve(&g.target)
                .and_then(geojson_point)
                .is_some_and(|p| point_in_ring(p, &g.polygon)),
        }
    }

    /// The value at `path`, or `None` when missing or null.
    fn resolve(&self, path: &Path) -> Option<&'a Value> {
        let segments = path.segments();
        let (first, rest) = segments.split_first()?;
        let mut value: &'a Value = match path.root() {
            PathRoot::Field => self.doc.get(first.as_str())?,
            PathRoot::Variable => {
                self.vars
                    .iter()
                    .rev()
                    .find(|(name, _)| *name == first.as_str())?
                    .1
            }
        };
        for seg in rest {
            value = value.as_object()?.get(seg.as_str())?;
        }
        (!value.is_null()).then_some(value)
    }

    fn compare(&self, c: &Comparison) -> bool {
        let ordering = match &c.operand {
            Operand::Path(p) => {
                let value = self.resolve(p);
                if value.is_none() || matches!(c.value, Literal::Null) {
                    // Null on at least one side: only eq/ne can hold.
                    let both_null = value.is_none() && matches!(c.value, Literal::Null);
                    return match c.op {
                        CompareOp::Eq => both_null,
                        CompareOp::Ne => !both_null,
                        _ => false,
                    };
                }
                value.and_then(|v| order(v, &c.value))
            }
            Operand::GeoDistance(g) => {
                let distance = self
                    .resolve(&g.target)
                    .and_then(geojson_point)
                    .map(|p| haversine_km(p, g.point));
                match (distance, literal_number(&c.value)) {
                    (Some(d), Some(n)) => cmp_f64(d, n),
                    _ => None,
                }
            }
        };
        match c.op {
            CompareOp::Eq => ordering == Some(Ordering::Equal),
            CompareOp::Ne => ordering != Some(Ordering::Equal),
            CompareOp::Gt => ordering == Some(Ordering::Greater),
            CompareOp::Lt => ordering == Some(Ordering::Less),
            CompareOp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
            CompareOp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        }
    }
}

/// How a stored (non-null) value orders against a constant, `None` when incomparable.
/// Booleans are only ever equal or incomparable, so `gt` on them is false.
fn order(value: &Value, literal: &Literal) -> Option<Ordering> {
    match literal {
        Literal::Null => None,
        Literal::Bool(b) => (value.as_bool()? == *b).then_some(Ordering::Equal),
        Literal::Int(i) => match value.as_i64() {
            Some(v) => Some(v.cmp(i)),
            // Lossy above 2^53, as Azure's own double comparison is.
            #[expect(clippy::cast_precision_loss, reason = "integer compared with a double")]
            None => cmp_f64(stored_number(value)?, *i as f64),
        },
        Literal::Double(d) => cmp_f64(stored_number(value)?, *d),
        Literal::String(s) => Some(value.as_str()?.encode_utf16().cmp(s.encode_utf16())),
        Literal::DateTime(dt) => {
            let stored = parse_stored_datetime(value.as_str()?)?;
            Some(stored.cmp(dt))
        }
    }
}

fn stored_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "INF" => Some(f64::INFINITY),
            "-INF" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn literal_number(literal: &Literal) -> Option<f64> {
    match literal {
        #[expect(clippy::cast_precision_loss, reason = "distance threshold")]
        Literal::Int(i) => Some(*i as f64),
        Literal::Double(d) => Some(*d),
        _ => None,
    }
}

/// `NaN` equals `NaN` (so `x eq NaN` finds stored NaNs) and orders with nothing else.
fn cmp_f64(a: f64, b: f64) -> Option<Ordering> {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Some(Ordering::Equal),
        (false, false) => a.partial_cmp(&b),
        _ => None,
    }
}

fn parse_stored_datetime(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| parse_datetime(s))
}

impl GeoPoint {
    /// Reads a stored Edm.GeographyPoint: GeoJSON `{"type":"Point","coordinates":[lon,lat]}`.
    pub fn from_geojson(value: &Value) -> Option<GeoPoint> {
        geojson_point(value)
    }

    /// Great-circle distance to `other` in kilometres, as `geo.distance` computes it.
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        haversine_km(self, other)
    }
}

fn geojson_point(value: &Value) -> Option<GeoPoint> {
    let obj = value.as_object()?;
    if obj.get("type").and_then(Value::as_str) != Some("Point") {
        return None;
    }
    match obj.get("coordinates")?.as_array()?.as_slice() {
        [lon, lat, ..] => Some(GeoPoint {
            lon: lon.as_f64()?,
            lat: lat.as_f64()?,
        }),
        _ => None,
    }
}

/// Great-circle distance in kilometres.
fn haversine_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Ray casting in the lon/lat plane; fine for the small polygons filters use.
fn point_in_ring(p: GeoPoint, ring: &[GeoPoint]) -> bool {
    let mut inside = false;
    for edge in ring.windows(2) {
        let [a, b] = [edge[0], edge[1]];
        if (a.lat > p.lat) != (b.lat > p.lat)
            && p.lon < (b.lon - a.lon) * (p.lat - a.lat) / (b.lat - a.lat) + a.lon
        {
            inside = !inside;
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        let v = json!({
            "id": "1",
            "name": "Hotel Ærø",
            "rating": 4,
            "price": 99.5,
            "big": 9007199254740993_i64,
            "nan": "NaN",
            "inf": "INF",
            "isActive": true,
            "isClosed": false,
            "nothing": null,
            "opened": "2020-05-01T12:00:00Z",
            "tags": ["pool", "wifi"],
            "empty": [],
            "address": {"city": "Oslo", "zip": "0150"},
            "rooms": [
                {"type": "single", "rate": 80, "tags": ["view"]},
                {"type": "double", "rate": 150, "tags": []}
            ],
            "location": {"type": "Point", "coordinates": [10.75, 59.91]}
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn filters_evaluate_with_odata_semantics() {
        let cases: &[(&str, bool)] = &[
            ("rating eq 4", true),
            ("rating eq 4.0", true),
            ("rating ne 4", false),
            ("rating gt 3 and rating lt 5", true),
            ("rating ge 4 and rating le 4", true),
            ("3 lt rating", true),
            ("price gt 99", true),
            ("price eq 99.5", true),
            ("big eq 9007199254740993", true),
            ("big gt 9007199254740992", true),
            ("nan eq NaN", true),
            ("nan gt 0", false),
            ("nan ne 1.5", true),
            ("inf eq INF", true),
            ("inf gt 1e300", true),
            ("rating lt INF", true),
            ("rating gt -INF", true),
            ("name eq 'Hotel Ærø'", true),
            ("name gt 'Hotel A'", true),
            ("name lt 'hotel'", true),
            ("name eq 'hotel ærø'", false),
            ("isActive", true),
            ("isClosed", false),
            ("not isActive", false),
            ("not isClosed", true),
            ("isActive eq true", true),
            ("isActive ne false", true),
            ("isActive gt false", false),
            ("missing", false),
            ("not missing", true),
            ("missing eq null", true),
            ("nothing eq null", true),
            ("missing ne null", false),
            ("rating eq null", false),
            ("rating ne null", true),
            ("missing ne 'x'", true),
            ("missing eq 'x'", false),
            ("missing gt 1", false),
            ("missing lt 1", false),
            ("missing ge null", false),
            ("rating eq '4'", false),
            ("rating ne '4'", true),
            ("name gt 5", false),
            ("opened gt 2020-01-01T00:00:00Z", true),
            ("opened eq 2020-05-01T14:00:00+02:00", true),
            ("opened lt 2020-05-01T11:59:59Z", false),
            ("opened eq '2020-05-01T12:00:00Z'", true),
            ("address/city eq 'Oslo'", true),
            ("address/zip eq '0150'", true),
            ("address/missing eq null", true),
            ("tags/any(t: t eq 'pool')", true),
            ("tags/any(t: t eq 'spa')", false),
            ("tags/all(t: t ne 'spa')", true),
            ("tags/all(t: t eq 'pool')", false),
            ("tags/any()", true),
            ("empty/any()", false),
            ("empty/any(t: t eq 'x')", false),
            ("empty/all(t: t eq 'x')", true),
            ("missing/any()", false),
            ("missing/all(t: t eq 'x')", true),
            ("name/any()", false),
            ("name/all(t: t eq 'x')", false),
            ("tags/any(t: search.in(t, 'spa, wifi'))", true),
            ("tags/any(t: search.in(t, 'spa|pool', '|'))", true),
            ("tags/any(t: search.in(t, 'spa pool wifi', '|'))", false),
            ("search.in(name, 'Hotel Ærø', ',')", true),
            ("search.in(name, 'Hotel Ærø')", false),
            ("search.in(rating, '4')", false),
            ("rooms/any(r: r/rate lt 100 and r/type eq 'single')", true),
            ("rooms/any(r: r/rate lt 100 and r/type eq 'double')", false),
            ("rooms/all(r: r/rate gt 50)", true),
            ("rooms/any(r: r/tags/any(t: t eq 'view'))", true),
            ("rooms/any(r: r/tags/any())", true),
            ("rooms/all(r: r/tags/any())", false),
            (
                "geo.distance(location, geography'POINT(10.75 59.91)') eq 0",
                true,
            ),
            // Oslo to Bergen is about 305 km.
            (
                "geo.distance(location, geography'POINT(5.32 60.39)') lt 310",
                true,
            ),
            (
                "geo.distance(location, geography'POINT(5.32 60.39)') lt 300",
                false,
            ),
            (
                "geo.distance(nothing, geography'POINT(5.32 60.39)') lt 300",
                false,
            ),
            (
                "geo.intersects(location, geography'POLYGON((10 59, 11 59, 11 60, 10 60, 10 59))')",
                true,
            ),
            (
                "geo.intersects(location, geography'POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))')",
                false,
            ),
            ("search.ismatch('pool')", false),
            ("true", true),
            ("false", false),
            ("not (rating eq 4 or rating eq 5)", false),
            ("rating eq 1 or rating eq 4 and isActive", true),
            ("(rating eq 1 or rating eq 4) and isClosed", false),
        ];
        let d = doc();
        for (filter, expected) in cases {
            let e = parse(filter).unwrap_or_else(|err| panic!("{filter}: {err}"));
            assert_eq!(evaluate(&e, &d), *expected, "{filter}");
        }
    }

    #[test]
    fn full_text_calls_are_delegated() {
        let e = parse("search.ismatch('pool', 'name,tags') and rating gt 3").unwrap();
        let engine = |call: &IsMatch, doc: &Map<String, Value>| {
            call.query == "pool"
                && call.field_list() == ["name", "tags"]
                && doc.contains_key("tags")
        };
        assert!(evaluate_with(&e, &doc(), &engine));
        assert!(!evaluate_with(&e, &doc(), &NoFullText));
    }

    #[test]
    fn strings_compare_by_utf16_code_unit_like_dotnet() {
        // U+FF21 (BMP, above the surrogate range) sorts after U+1F600 in UTF-8 order but
        // before it in UTF-16 order, where U+1F600 is a surrogate pair starting 0xD83D.
        let mut d = Map::new();
        d.insert("s".into(), json!("\u{1F600}"));
        assert!(evaluate(&parse("s lt '\u{FF21}'").unwrap(), &d));
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        let paris = GeoPoint {
            lon: 2.3522,
            lat: 48.8566,
        };
        let london = GeoPoint {
            lon: -0.1276,
            lat: 51.5072,
        };
        let d = haversine_km(paris, london);
        assert!((d - 343.5).abs() < 1.5, "{d}");
    }
}
