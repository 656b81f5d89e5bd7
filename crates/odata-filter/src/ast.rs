//! The typed syntax tree of a filter.
//!
//! Every value of these types can only print as well-formed OData: identifiers are validated
//! when built ([`Ident::new`]), strings are always quoted with `''` escapes, numbers and dates
//! are formatted by this crate. That is what lets a router splice a caller's tree into a larger
//! one and serialise it without the caller's text ever being re-interpreted.

use chrono::{DateTime, FixedOffset};
use std::cmp::Ordering;

use crate::ParseError;

/// Words that cannot be used as a field name or range variable, because the grammar gives
/// them a meaning of their own. Case-sensitive, as in Azure.
pub(crate) const RESERVED: &[&str] = &[
    "and", "or", "not", "eq", "ne", "gt", "lt", "ge", "le", "true", "false", "null", "any", "all",
    "NaN", "INF",
];

/// Whether `name` matches `[a-zA-Z_][a-zA-Z_0-9]*` and is not a reserved word.
pub(crate) fn is_valid_ident(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !RESERVED.contains(&name)
}

/// A field name segment or a lambda range variable: `[a-zA-Z_][a-zA-Z_0-9]*`, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

impl Ident {
    /// Validates `name` as an OData identifier.
    pub fn new(name: &str) -> Result<Self, ParseError> {
        if is_valid_ident(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(ParseError::new(
                0,
                format!("'{name}' is not a valid identifier"),
            ))
        }
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Ident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the first segment of a [`Path`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathRoot {
    /// A field of the document: `Address/City`.
    Field,
    /// A lambda range variable in scope: the `t` of `Tags/any(t: t eq 'x')`, or `r/Name`.
    Variable,
}

/// A field path (`Address/City`) or a range-variable path (`room/BaseRate`).
///
/// Never empty. Equality ignores the source position, so a re-parsed filter equals its original.
#[derive(Debug, Clone)]
pub struct Path {
    root: PathRoot,
    segments: Vec<Ident>,
    position: usize,
}

impl Path {
    pub(crate) fn new(root: PathRoot, segments: Vec<Ident>, position: usize) -> Self {
        Self {
            root,
            segments,
            position,
        }
    }

    /// A field path from its `/`-separated text, for example `"Address/City"`.
    pub fn field(path: &str) -> Result<Self, ParseError> {
        Self::parse_segments(PathRoot::Field, path)
    }

    /// A path rooted at a range variable, for example `"t"` or `"room/BaseRate"`. Only
    /// meaningful inside the body of a lambda that binds the variable.
    pub fn variable(path: &str) -> Result<Self, ParseError> {
        Self::parse_segments(PathRoot::Variable, path)
    }

    fn parse_segments(root: PathRoot, path: &str) -> Result<Self, ParseError> {
        let segments = path
            .split('/')
            .map(Ident::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(root, segments, 0))
    }

    /// Whether the path starts at a field or at a range variable.
    pub fn root(&self) -> PathRoot {
        self.root
    }

    /// The segments; for a [`PathRoot::Variable`] path the first one is the variable.
    pub fn segments(&self) -> &[Ident] {
        &self.segments
    }

    /// 0-based character offset of the path in the parsed input (0 if built in code).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl PartialEq for Path {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.segments == other.segments
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `lt`
    Lt,
    /// `ge`
    Ge,
    /// `le`
    Le,
}

impl CompareOp {
    /// The operator's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Gt => "gt",
            Self::Lt => "lt",
            Self::Ge => "ge",
            Self::Le => "le",
        }
    }

    pub(crate) fn from_keyword(word: &str) -> Option<Self> {
        Some(match word {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "gt" => Self::Gt,
            "lt" => Self::Lt,
            "ge" => Self::Ge,
            "le" => Self::Le,
            _ => return None,
        })
    }

    /// The operator with its operands swapped: `5 lt x` is `x gt 5`.
    pub fn flipped(self) -> Self {
        match self {
            Self::Eq => Self::Eq,
            Self::Ne => Self::Ne,
            Self::Gt => Self::Lt,
            Self::Lt => Self::Gt,
            Self::Ge => Self::Le,
            Self::Le => Self::Ge,
        }
    }
}

/// A constant.
#[derive(Debug, Clone)]
pub enum Literal {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// An integer such as `42` or `-7` (Edm.Int32 / Edm.Int64).
    Int(i64),
    /// A number with a fraction or exponent (`1.5`, `2e10`), or `NaN`, `INF`, `-INF`.
    Double(f64),
    /// A single-quoted string; the value is unescaped (`'it''s'` holds `it's`).
    String(String),
    /// A DateTimeOffset such as `2024-01-01T00:00:00Z` or `2024-01-01T02:00:00+02:00`.
    DateTime(DateTime<FixedOffset>),
}

impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            // total_cmp so that NaN equals NaN and a tree containing it equals its re-parse.
            (Self::Double(a), Self::Double(b)) => a.total_cmp(b) == Ordering::Equal,
            (Self::String(a), Self::String(b)) => a == b,
            (Self::DateTime(a), Self::DateTime(b)) => a == b && a.offset() == b.offset(),
            _ => false,
        }
    }
}

/// A point on Earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Longitude, -180..=180.
    pub lon: f64,
    /// Latitude, -90..=90.
    pub lat: f64,
}

/// `geo.distance(field, geography'POINT(lon lat)')`, in kilometres.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoDistance {
    /// The Edm.GeographyPoint field (or range variable).
    pub target: Path,
    /// The constant point.
    pub point: GeoPoint,
}

/// The left side of a comparison: what is compared with the constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A field or range-variable path.
    Path(Path),
    /// A `geo.distance(...)` call.
    GeoDistance(GeoDistance),
}

/// `operand op value`. A constant-first comparison (`5 lt x`) is stored flipped (`x gt 5`).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The field side.
    pub operand: Operand,
    /// The operator, as seen from the field side.
    pub op: CompareOp,
    /// The constant side.
    pub value: Literal,
}

/// `any` or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LambdaKind {
    /// True when some element satisfies the predicate (false on an empty collection).
    Any,
    /// True when every element satisfies the predicate (true on an empty collection).
    All,
}

/// The `t: predicate` part of a lambda.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaBody {
    /// The range variable bound to each element.
    pub variable: Ident,
    /// The predicate applied to each element.
    pub predicate: Box<Expr>,
}

/// `Coll/any(t: ...)`, `Coll/all(t: ...)` or `Coll/any()` (the collection is not empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Lambda {
    /// `any` or `all`.
    pub kind: LambdaKind,
    /// The collection iterated over.
    pub collection: Path,
    /// `None` only for `Coll/any()`.
    pub body: Option<LambdaBody>,
}

/// `search.in(target, 'values')` or `search.in(target, 'values', 'delimiters')`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchIn {
    /// The string field or range variable tested for membership.
    pub target: Path,
    /// The raw list, split by [`SearchIn::delimiters`].
    pub values: String,
    /// Each character is a delimiter; `None` means space and comma.
    pub delimiters: Option<String>,
}

impl SearchIn {
    /// The list's values: `values` split on any delimiter character, empty pieces dropped.
    pub fn value_list(&self) -> impl Iterator<Item = &str> {
        let delims: &str = self.delimiters.as_deref().unwrap_or(" ,");
        self.values
            .split(move |c: char| delims.contains(c))
            .filter(|v| !v.is_empty())
    }
}

/// The `queryType` argument of `search.ismatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// `'simple'`
    Simple,
    /// `'full'` (Lucene syntax)
    Full,
}

/// The `searchMode` argument of `search.ismatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchMode {
    /// `'any'`: a document matches if any term matches.
    Any,
    /// `'all'`: a document matches if every term matches.
    All,
}

/// `search.ismatch(...)` or `search.ismatchscoring(...)`: a full-text query used as a filter.
///
/// Equality ignores the source position.
#[derive(Debug, Clone)]
pub struct IsMatch {
    /// `search.ismatchscoring`: the match also contributes to the score.
    pub scoring: bool,
    /// The query text.
    pub query: String,
    /// Comma-separated field list; `None` means all searchable fields.
    pub fields: Option<String>,
    /// Query type and search mode, given together or not at all.
    pub mode: Option<(QueryType, SearchMode)>,
    /// 0-based character offset of the call in the parsed input (0 if built in code).
    pub position: usize,
}

impl IsMatch {
    /// The named fields, trimmed; empty when all searchable fields are meant.
    pub fn field_list(&self) -> Vec<&str> {
        self.fields
            .as_deref()
            .map(|f| {
                f.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl PartialEq for IsMatch {
    fn eq(&self, other: &Self) -> bool {
        self.scoring == other.scoring
            && self.query == other.query
            && self.fields == other.fields
            && self.mode == other.mode
    }
}

/// `geo.intersects(field, geography'POLYGON((...))')`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoIntersects {
    /// The Edm.GeographyPoint field (or range variable).
    pub target: Path,
    /// The closed ring: at least four points, the last equal to the first.
    pub polygon: Vec<GeoPoint>,
}

/// A boolean filter expression.
///
/// `And`/`Or` are n-ary and flattened: `a and (b and c)` is `And([a, b, c])`, so long chains
/// stay shallow. An empty `And` is `true`, an empty `Or` is `false`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `true` or `false`.
    Bool(bool),
    /// A bare boolean field or range variable: `isActive`.
    Path(Path),
    /// `not operand`.
    Not(Box<Expr>),
    /// `a and b and ...`.
    And(Vec<Expr>),
    /// `a or b or ...`.
    Or(Vec<Expr>),
    /// `field op constant`.
    Compare(Comparison),
    /// `Coll/any(...)` or `Coll/all(...)`.
    Lambda(Lambda),
    /// `search.in(...)`.
    SearchIn(SearchIn),
    /// `search.ismatch(...)` or `search.ismatchscoring(...)`.
    IsMatch(IsMatch),
    /// `geo.intersects(...)`.
    GeoIntersects(GeoIntersects),
}

/// Whether a referenced field is filtered on or searched in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldUse {
    /// Compared, tested by `search.in`, iterated by a lambda or read by a geo function: the
    /// field must be filterable.
    Filter,
    /// Named in the field list of `search.ismatch`: the field must be searchable.
    FullText,
}

/// A field referenced by a filter, with range variables resolved to the collection they
/// range over: in `Rooms/any(r: r/Rate lt 5)` both `Rooms` and `Rooms/Rate` are referenced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRef {
    /// The full `/`-separated field path.
    pub path: String,
    /// 0-based character offset of the reference in the parsed input.
    pub position: usize,
    /// How the field is used.
    pub usage: FieldUse,
}

impl Expr {
    /// `self and other`, flattened. The router's tenant boundary: whatever `self` is, the
    /// result is true only where `other` is true.
    #[must_use]
    pub fn and(self, other: Expr) -> Expr {
        Expr::all_of(vec![self, other])
    }

    /// `self or other`, flattened.
    #[must_use]
    pub fn or(self, other: Expr) -> Expr {
        Expr::any_of(vec![self, other])
    }

    /// The conjunction of `items`, nested `And`s flattened; a single item is returned as is.
    pub fn all_of(items: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Expr::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if flat.len() == 1 {
            flat.pop().unwrap_or(Expr::Bool(true))
        } else {
            Expr::And(flat)
        }
    }

    /// The disjunction of `items`, nested `Or`s flattened; a single item is returned as is.
    pub fn any_of(items: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Expr::Or(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if flat.len() == 1 {
            flat.pop().unwrap_or(Expr::Bool(false))
        } else {
            Expr::Or(flat)
        }
    }

    /// `field op value`.
    pub fn compare(field: Path, op: CompareOp, value: Literal) -> Expr {
        Expr::Compare(Comparison {
            operand: Operand::Path(field),
            op,
            value,
        })
    }

    /// `search.in(target, '...')` over `values`, choosing a delimiter that occurs in no value.
    ///
    /// Fails if `values` is empty, a value is empty, or no candidate delimiter is free.
    pub fn search_in(target: Path, values: &[&str]) -> Result<Expr, ParseError> {
        if values.is_empty() || values.iter().any(|v| v.is_empty()) {
            return Err(ParseError::new(0, "search.in needs non-empty values"));
        }
        let free = |d: char| values.iter().all(|v| !v.contains(d));
        let delimiters = if free(' ') && free(',') {
            None
        } else {
            let candidate = [',', '|', ';', '~', '^', '\t']
                .into_iter()
                .find(|&d| free(d))
                .ok_or_else(|| ParseError::new(0, "no delimiter is free for search.in values"))?;
            Some(candidate.to_string())
        };
        let sep = delimiters.as_deref().unwrap_or(",");
        Ok(Expr::SearchIn(SearchIn {
            target,
            values: values.join(sep),
            delimiters,
        }))
    }

    /// `collection/any(t: search.in(t, '...'))`: the documented idiom for a security field of
    /// type `Collection(Edm.String)`, true when the collection holds any of `values`.
    pub fn any_in(collection: Path, values: &[&str]) -> Result<Expr, ParseError> {
        let variable = Ident::new("t")?;
        let predicate = Expr::search_in(Path::variable("t")?, values)?;
        Ok(Expr::Lambda(Lambda {
            kind: LambdaKind::Any,
            collection,
            body: Some(LambdaBody {
                variable,
                predicate: Box::new(predicate),
            }),
        }))
    }

    /// Nesting depth of the tree: 1 for a leaf (comparison, function, path, literal), plus one
    /// for each enclosing `not`, `and`, `or` or lambda.
    pub fn depth(&self) -> usize {
        1 + match self {
            Expr::Not(inner) => inner.depth(),
            Expr::And(items) | Expr::Or(items) => items.iter().map(Expr::depth).max().unwrap_or(0),
            Expr::Lambda(Lambda {
                body: Some(body), ..
            }) => body.predicate.depth(),
            _ => 0,
        }
    }

    /// Calls `visit` on this expression and every sub-expression, parents first.
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Expr)) {
        visit(self);
        match self {
            Expr::Not(inner) => inner.walk(visit),
            Expr::And(items) | Expr::Or(items) => {
                for item in items {
                    item.walk(visit);
                }
            }
            Expr::Lambda(Lambda {
                body: Some(body), ..
            }) => body.predicate.walk(visit),
            _ => {}
        }
    }

    /// Every field the filter references, in order of appearance (repeats kept), with range
    /// variables resolved. A router uses this to refuse a filter that names a field the caller
    /// may not see. Fields named inside the query text of `search.ismatch` with
    /// `queryType 'full'` (Lucene `field:term`) are not listed.
    pub fn field_paths(&self) -> Vec<FieldRef> {
        let mut out = Vec::new();
        let mut scopes: Vec<(String, String)> = Vec::new();
        collect_fields(self, &mut scopes, &mut out);
        out
    }
}

/// Resolves `path` to a full field path, or `None` for a variable not in scope.
fn resolve(path: &Path, scopes: &[(String, String)]) -> Option<String> {
    let segs: Vec<&str> = path.segments().iter().map(Ident::as_str).collect();
    match path.root() {
        PathRoot::Field => Some(segs.join("/")),
        PathRoot::Variable => {
            let (first, rest) = segs.split_first()?;
            let (_, base) = scopes.iter().rev().find(|(name, _)| name == first)?;
            let mut full = base.clone();
            for seg in rest {
                full.push('/');
                full.push_str(seg);
            }
            Some(full)
        }
    }
}

fn push_path(path: &Path, scopes: &[(String, String)], out: &mut Vec<FieldRef>) {
    if let Some(full) = resolve(path, scopes) {
        out.push(FieldRef {
            path: full,
            position: path.position(),
            usage: FieldUse::Filter,
        });
    }
}

fn collect_fields(expr: &Expr, scopes: &mut Vec<(String, String)>, out: &mut Vec<FieldRef>) {
    match expr {
        Expr::Bool(_) => {}
        Expr::Path(p) => push_path(p, scopes, out),
        Expr::Not(inner) => collect_fields(inner, scopes, out),
        Expr::And(items) | Expr::Or(items) => {
            for item in items {
                collect_fields(item, scopes, out);
            }
        }
        Expr::Compare(c) => match &c.operand {
            Operand::Path(p) => push_path(p, scopes, out),
            Operand::GeoDistance(g) => push_path(&g.target, scopes, out),
        },
        Expr::Lambda(l) => {
            push_path(&l.collection, scopes, out);
            if let Some(body) = &l.body {
                let base = resolve(&l.collection, scopes).unwrap_or_default();
                scopes.push((body.variable.as_str().to_owned(), base));
                collect_fields(&body.predicate, scopes, out);
                scopes.pop();
            }
        }
        Expr::SearchIn(s) => push_path(&s.target, scopes, out),
        Expr::GeoIntersects(g) => push_path(&g.target, scopes, out),
        Expr::IsMatch(m) => {
            for field in m.field_list() {
                out.push(FieldRef {
                    path: field.to_owned(),
                    position: m.position,
                    usage: FieldUse::FullText,
                });
            }
        }
    }
}
