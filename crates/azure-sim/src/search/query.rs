//! Search requests: parameters from a GET query string or a POST body, their validation
//! against the index schema, and execution (filter, full-text BM25, vector kNN, fusion,
//! ordering, facets, paging, projection, highlights).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use odata_filter::{
    evaluate_with, parse_order_by, parse_select, Expr, FieldUse, GeoPoint, IsMatch, OrderBy,
    QueryType, SearchMode, SortKey,
};
use serde_json::{Map, Number, Value};

use super::fulltext::TextQuery;
use super::schema::{Field, Metric, Scalar, Schema};
use super::store::{values_at, Index, StoredDoc};
use super::{bad_request, SearchApiError};

/// Results per page when `top` is not given.
pub const DEFAULT_PAGE: usize = 50;
/// Most results in one page.
pub const MAX_PAGE: usize = 1000;
/// Largest `skip`.
pub const MAX_SKIP: usize = 100_000;
/// Reciprocal rank fusion constant (Azure uses 60).
const RRF_K: f64 = 60.0;

/// One `vectorQueries` entry of kind `vector`.
#[derive(Debug, Clone)]
pub struct VectorQuery {
    pub vector: Vec<f64>,
    pub fields: Vec<String>,
    pub k: usize,
    pub weight: f64,
}

/// A search request's parameters, whichever way they arrived.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub search: Option<String>,
    pub filter: Option<String>,
    pub orderby: Option<String>,
    pub select: Option<String>,
    pub search_fields: Option<String>,
    pub top: Option<usize>,
    pub skip: usize,
    pub count: bool,
    pub facets: Vec<String>,
    pub highlight: Option<String>,
    pub highlight_pre: Option<String>,
    pub highlight_post: Option<String>,
    pub full: bool,
    pub mode_all: bool,
    pub vectors: Vec<VectorQuery>,
    pub post_filter: bool,
}

fn as_string(body: &Map<String, Value>, name: &str) -> Result<Option<String>, SearchApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_request(format!(
            "The parameter '{name}' must be a string."
        ))),
    }
}

fn as_count(value: Option<&Value>, name: &str) -> Result<Option<usize>, SearchApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                bad_request(format!(
                    "The parameter '{name}' must be a non-negative integer."
                ))
            }),
    }
}

fn parse_count_text(text: &str, name: &str) -> Result<usize, SearchApiError> {
    text.trim().parse::<usize>().map_err(|_| {
        bad_request(format!(
            "The parameter '{name}' must be a non-negative integer."
        ))
    })
}

fn query_type(text: Option<&str>) -> Result<bool, SearchApiError> {
    match text {
        None | Some("simple") => Ok(false),
        Some("full") => Ok(true),
        Some("semantic") => Err(bad_request(
            "Semantic ranking is not supported by the emulator.",
        )),
        Some(other) => Err(bad_request(format!("Invalid queryType '{other}'."))),
    }
}

fn search_mode(text: Option<&str>) -> Result<bool, SearchApiError> {
    match text {
        None | Some("any") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(bad_request(format!("Invalid searchMode '{other}'."))),
    }
}

fn check_skip(skip: usize) -> Result<(), SearchApiError> {
    if skip > MAX_SKIP {
        return Err(bad_request(format!("$skip cannot exceed {MAX_SKIP}.")));
    }
    Ok(())
}

impl SearchParams {
    /// From the JSON body of `POST .../docs/search` (camelCase names, no `$`).
    pub fn from_body(body: &Map<String, Value>) -> Result<Self, SearchApiError> {
        let facets = match body.get("facets") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|f| f.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad_request("'facets' must be an array of strings."))?,
            Some(_) => return Err(bad_request("'facets' must be an array of strings.")),
        };
        let count = match body.get("count") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad_request("'count' must be a boolean.")),
        };
        let vectors = match body.get("vectorQueries") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(parse_vector_query)
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad_request("'vectorQueries' must be an array.")),
        };
        let post_filter = match as_string(body, "vectorFilterMode")?.as_deref() {
            None | Some("preFilter") => false,
            Some("postFilter") => true,
            Some(other) => return Err(bad_request(format!("Invalid vectorFilterMode '{other}'."))),
        };
        let params = SearchParams {
            search: as_string(body, "search")?,
            filter: as_string(body, "filter")?,
            orderby: as_string(body, "orderby")?,
            select: as_string(body, "select")?,
            search_fields: as_string(body, "searchFields")?,
            top: as_count(body.get("top"), "top")?,
            skip: as_count(body.get("skip"), "skip")?.unwrap_or(0),
            count,
            facets,
            highlight: as_string(body, "highlight")?,
            highlight_pre: as_string(body, "highlightPreTag")?,
            highlight_post: as_string(body, "highlightPostTag")?,
            full: query_type(as_string(body, "queryType")?.as_deref())?,
            mode_all: search_mode(as_string(body, "searchMode")?.as_deref())?,
            vectors,
            post_filter,
        };
        check_skip(params.skip)?;
        Ok(params)
    }

    /// From the query string of `GET .../docs?search=...&$filter=...`.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, SearchApiError> {
        let mut p = SearchParams::default();
        let mut query_type_text = None;
        let mut mode_text = None;
        for (name, value) in pairs {
            match name.as_str() {
                "search" => p.search = Some(value.clone()),
                "$filter" => p.filter = Some(value.clone()),
                "$orderby" => p.orderby = Some(value.clone()),
                "$select" => p.select = Some(value.clone()),
                "searchFields" => p.search_fields = Some(value.clone()),
                "$top" => p.top = Some(parse_count_text(value, "$top")?),
                "$skip" => p.skip = parse_count_text(value, "$skip")?,
                "$count" => {
                    p.count = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad_request("$count must be true or false.")),
                    }
                }
                "facet" => p.facets.push(value.clone()),
                "highlight" => p.highlight = Some(value.clone()),
                "highlightPreTag" => p.highlight_pre = Some(value.clone()),
                "highlightPostTag" => p.highlight_post = Some(value.clone()),
                "queryType" => query_type_text = Some(value.clone()),
                "searchMode" => mode_text = Some(value.clone()),
                _ => {}
            }
        }
        p.full = query_type(query_type_text.as_deref())?;
        p.mode_all = search_mode(mode_text.as_deref())?;
        check_skip(p.skip)?;
        Ok(p)
    }
}

fn parse_vector_query(value: &Value) -> Result<VectorQuery, SearchApiError> {
    let Some(obj) = value.as_object() else {
        return Err(bad_request("Each vector query must be an object."));
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("vector") => {}
        Some(other) => {
            return Err(bad_request(format!(
                "Vector query kind '{other}' is not supported by the emulator; send 'vector' with an embedding."
            )))
        }
        None => return Err(bad_request("A vector query must have a 'kind'.")),
    }
    let vector = obj
        .get("vector")
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .map(Value::as_f64)
                .collect::<Option<Vec<f64>>>()
        })
        .ok_or_else(|| bad_request("A vector query must have a 'vector' of numbers."))?;
    let fields: Vec<String> = obj
        .get("fields")
        .and_then(Value::as_str)
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if fields.is_empty() {
        return Err(bad_request("A vector query must name its 'fields'."));
    }
    let k = as_count(obj.get("k"), "k")?.unwrap_or(DEFAULT_PAGE);
    if k == 0 {
        return Err(bad_request("'k' must be at least 1."));
    }
    let weight = obj.get("weight").and_then(Value::as_f64).unwrap_or(1.0);
    Ok(VectorQuery {
        vector,
        fields,
        k,
        weight,
    })
}

/// A parsed `search.ismatch` call ready to run against documents.
struct IsMatchQuery {
    position: usize,
    scoring: bool,
    query: TextQuery,
    fields: Vec<String>,
}

/// How a facet's values are ordered.
#[derive(Debug, Clone, Copy)]
enum FacetSort {
    CountDesc,
    CountAsc,
    ValueAsc,
    ValueDesc,
}

#[derive(Debug, Clone)]
struct FacetSpec {
    field: String,
    count: usize,
    sort: FacetSort,
    ranges: Option<Vec<Number>>,
    interval: Option<f64>,
}

/// A validated search, ready to run.
pub struct Prepared {
    filter: Option<Expr>,
    ismatch: Vec<IsMatchQuery>,
    text: Option<TextQuery>,
    search_fields: Vec<String>,
    order: Vec<OrderBy>,
    select: Option<Vec<String>>,
    facets: Vec<FacetSpec>,
    highlight: Vec<String>,
    pre_tag: String,
    post_tag: String,
    vectors: Vec<(VectorQuery, Vec<(String, Metric)>)>,
    post_filter: bool,
    top: Option<usize>,
    skip: usize,
    count: bool,
}

/// Parses and checks a `$filter` against the schema: every field must exist and be
/// filterable (or searchable, for `search.ismatch` field lists).
pub fn prepare_filter(schema: &Schema, text: &str) -> Result<Expr, SearchApiError> {
    let expr = odata_filter::parse(text)
        .map_err(|e| bad_request(format!("{e}\r\nParameter name: $filter")))?;
    for r in expr.field_paths() {
        let Some(field) = schema.field(&r.path) else {
            return Err(bad_request(format!(
                "Invalid expression: Could not find a property named '{}' on type 'search.document' at position {}.\r\nParameter name: $filter",
                r.path, r.position
            )));
        };
        let ok = match r.usage {
            FieldUse::Filter => field.filterable || field.ty.scalar == Scalar::Complex,
            FieldUse::FullText => field.searchable && field.ty.is_text(),
        };
        if !ok {
            let attr = if r.usage == FieldUse::Filter {
                "filterable"
            } else {
                "searchable"
            };
            return Err(bad_request(format!(
                "Invalid expression: The field '{}' is not {attr} at position {}.\r\nParameter name: $filter",
                r.path, r.position
            )));
        }
    }
    Ok(expr)
}

fn ismatch_queries(index: &Index, filter: Option<&Expr>) -> Vec<IsMatchQuery> {
    let mut out = Vec::new();
    if let Some(expr) = filter {
        expr.walk(&mut |node| {
            if let Expr::IsMatch(m) = node {
                out.push(ismatch_query(index, m));
            }
        });
    }
    out
}

fn ismatch_query(index: &Index, m: &IsMatch) -> IsMatchQuery {
    let (full, all) = match m.mode {
        Some((qt, sm)) => (qt == QueryType::Full, sm == SearchMode::All),
        None => (false, false),
    };
    let named = m.field_list();
    let fields = if named.is_empty() {
        index.searchable_fields().to_vec()
    } else {
        named.into_iter().map(str::to_owned).collect()
    };
    IsMatchQuery {
        position: m.position,
        scoring: m.scoring,
        query: TextQuery::parse(&m.query, full, all),
        fields,
    }
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks that `fields` (a `searchFields`-style list) are searchable text fields.
pub fn check_searchable(
    schema: &Schema,
    fields: &[String],
    param: &str,
) -> Result<(), SearchApiError> {
    for f in fields {
        match schema.field(f) {
            Some(field) if field.searchable && field.ty.is_text() => {}
            Some(_) => {
                return Err(bad_request(format!(
                    "The field '{f}' in '{param}' is not searchable."
                )))
            }
            None => {
                return Err(bad_request(format!(
                    "The field '{f}' in '{param}' does not exist in the index."
                )))
            }
        }
    }
    Ok(())
}

/// Parses `$select` and checks every field exists and is retrievable.
pub fn prepare_select(
    schema: &Schema,
    text: Option<&str>,
) -> Result<Option<Vec<String>>, SearchApiError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let paths =
        parse_select(text).map_err(|e| bad_request(format!("{e}\r\nParameter name: $select")))?;
    let Some(paths) = paths else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for p in paths {
        let path = p.to_string();
        match schema.field(&path) {
            Some(f) if f.retrievable => out.push(path),
            Some(_) => {
                return Err(bad_request(format!(
                    "The field '{path}' in $select is not retrievable."
                )))
            }
            None => {
                return Err(bad_request(format!(
                    "Could not find a property named '{path}' in $select."
                )))
            }
        }
    }
    Ok(Some(out))
}

fn parse_facet(schema: &Schema, text: &str) -> Result<FacetSpec, SearchApiError> {
    let mut parts = text.split(',');
    let field = parts.next().unwrap_or_default().trim().to_owned();
    let Some(f) = schema.field(&field) else {
        return Err(bad_request(format!(
            "The field '{field}' in facet '{text}' does not exist."
        )));
    };
    if !f.facetable {
        return Err(bad_request(format!(
            "The field '{field}' is not facetable."
        )));
    }
    let numeric = matches!(f.ty.scalar, Scalar::Int32 | Scalar::Int64 | Scalar::Double);
    let mut spec = FacetSpec {
        field,
        count: 10,
        sort: FacetSort::CountDesc,
        ranges: None,
        interval: None,
    };
    for part in parts {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| bad_request(format!("Invalid facet parameter '{part}'.")))?;
        match name.trim() {
            "count" => spec.count = parse_count_text(value, "facet count")?,
            "sort" => {
                spec.sort = match value.trim() {
                    "count" => FacetSort::CountDesc,
                    "-count" => FacetSort::CountAsc,
                    "value" => FacetSort::ValueAsc,
                    "-value" => FacetSort::ValueDesc,
                    other => return Err(bad_request(format!("Invalid facet sort '{other}'."))),
                }
            }
            "values" if numeric => {
                let bounds = value
                    .split('|')
                    .map(|v| serde_json::from_str::<Number>(v.trim()).ok())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad_request(format!("Invalid facet values '{value}'.")))?;
                spec.ranges = Some(bounds);
            }
            "interval" if numeric => {
                let i = value.trim().parse::<f64>().ok().filter(|i| *i > 0.0);
                spec.interval =
                    Some(i.ok_or_else(|| {
                        bad_request(format!("Invalid facet interval '{value}'."))
                    })?);
            }
            other => {
                return Err(bad_request(format!(
                    "Facet parameter '{other}' is not supported for '{}'.",
                    spec.field
                )))
            }
        }
    }
    Ok(spec)
}

impl Prepared {
    /// Validates `p` against the index.
    pub fn new(index: &Index, p: &SearchParams) -> Result<Prepared, SearchApiError> {
        let schema = &index.schema;
        let filter = p
            .filter
            .as_deref()
            .map(|f| prepare_filter(schema, f))
            .transpose()?;
        let ismatch = ismatch_queries(index, filter.as_ref());
        let search_fields = match p.search_fields.as_deref() {
            Some(list) if !list.trim().is_empty() => {
                let fields = comma_list(list);
                check_searchable(schema, &fields, "searchFields")?;
                fields
            }
            _ => index.searchable_fields().to_vec(),
        };
        let text = p
            .search
            .as_deref()
            .map(|s| TextQuery::parse(s, p.full, p.mode_all));
        if let Some(t) = &text {
            let named: Vec<String> = t.named_fields().map(str::to_owned).collect();
            check_searchable(schema, &named, "search")?;
        }
        let order = match p.orderby.as_deref().filter(|o| !o.trim().is_empty()) {
            None => Vec::new(),
            Some(o) => {
                let clauses = parse_order_by(o)
                    .map_err(|e| bad_request(format!("{e}\r\nParameter name: $orderby")))?;
                for c in &clauses {
                    let path = match &c.key {
                        SortKey::Field(path) => path,
                        SortKey::GeoDistance(g) => &g.target,
                        SortKey::Score => continue,
                    };
                    let name = path.to_string();
                    match schema.field(&name) {
                        Some(f)
                            if matches!(c.key, SortKey::GeoDistance(_))
                                && f.ty.scalar == Scalar::GeographyPoint => {}
                        Some(f) if matches!(c.key, SortKey::Field(_)) && f.sortable => {}
                        Some(_) => {
                            return Err(bad_request(format!(
                                "The field '{name}' is not sortable.\r\nParameter name: $orderby"
                            )))
                        }
                        None => {
                            return Err(bad_request(format!(
                                "Could not find a property named '{name}' in $orderby."
                            )))
                        }
                    }
                }
                clauses
            }
        };
        let select = prepare_select(schema, p.select.as_deref())?;
        let facets = p
            .facets
            .iter()
            .map(|f| parse_facet(schema, f))
            .collect::<Result<_, _>>()?;
        let highlight: Vec<String> = p
            .highlight
            .as_deref()
            .map(comma_list)
            .unwrap_or_default()
            .into_iter()
            .map(|h| match h.rsplit_once('-') {
                Some((name, n)) if n.chars().all(|c| c.is_ascii_digit()) => name.to_owned(),
                _ => h,
            })
            .collect();
        check_searchable(schema, &highlight, "highlight")?;
        let mut vectors = Vec::new();
        for vq in &p.vectors {
            let mut fields = Vec::new();
            for name in &vq.fields {
                let Some(f) = schema.field(name).filter(|f| f.ty.is_vector()) else {
                    return Err(bad_request(format!(
                        "The field '{name}' is not a vector field."
                    )));
                };
                if f.dimensions != Some(vq.vector.len()) {
                    return Err(bad_request(format!(
                        "The vector field '{name}' has {} dimensions but the query vector has {}.",
                        f.dimensions.unwrap_or_default(),
                        vq.vector.len()
                    )));
                }
                let metric = f
                    .vector_profile
                    .as_ref()
                    .and_then(|pr| schema.profiles.get(pr))
                    .copied()
                    .unwrap_or(Metric::Cosine);
                fields.push((name.clone(), metric));
            }
            vectors.push((vq.clone(), fields));
        }
        Ok(Prepared {
            filter,
            ismatch,
            text,
            search_fields,
            order,
            select,
            facets,
            highlight,
            pre_tag: p.highlight_pre.clone().unwrap_or_else(|| "<em>".to_owned()),
            post_tag: p
                .highlight_post
                .clone()
                .unwrap_or_else(|| "</em>".to_owned()),
            vectors,
            post_filter: p.post_filter,
            top: p.top,
            skip: p.skip,
            count: p.count,
        })
    }
}

/// What a search produced; the handler wraps it in Azure's response shape.
pub struct Outcome {
    pub value: Vec<Value>,
    pub count: Option<usize>,
    pub facets: Option<Value>,
    /// `(skip, top)` of the next page, when more results remain.
    pub next: Option<(usize, Option<usize>)>,
}

/// Whether `doc` passes the filter (with `search.ismatch` evaluated on the document).
fn passes(index: &Index, filter: Option<&Expr>, ismatch: &[IsMatchQuery], doc: &StoredDoc) -> bool {
    let Some(expr) = filter else {
        return true;
    };
    let full_text = |call: &IsMatch, _: &Map<String, Value>| {
        ismatch
            .iter()
            .find(|q| q.position == call.position)
            .is_some_and(|q| q.query.score(index, doc, &q.fields).is_some())
    };
    evaluate_with(expr, &doc.fields, &full_text)
}

/// Documents passing `filter`, in insertion order.
pub fn filtered<'a>(index: &'a Index, filter: Option<&Expr>) -> Vec<&'a StoredDoc> {
    let ismatch = ismatch_queries(index, filter);
    index
        .docs()
        .into_iter()
        .filter(|d| passes(index, filter, &ismatch, d))
        .collect()
}

fn similarity(metric: Metric, a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match metric {
        Metric::Cosine => {
            let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                dot / (na * nb)
            };
            // Azure reports 1 / (1 + cosine distance).
            1.0 / (1.0 + (1.0 - cos))
        }
        Metric::Euclidean => {
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt();
            1.0 / (1.0 + d)
        }
        Metric::DotProduct => dot,
    }
}

fn stored_vector(doc: &StoredDoc, field: &str) -> Option<Vec<f64>> {
    doc.fields
        .get(field)?
        .as_array()?
        .iter()
        .map(Value::as_f64)
        .collect()
}

/// Runs a prepared search.
pub fn run(index: &Index, q: &Prepared) -> Outcome {
    let all = index.docs();
    let passing: Vec<&StoredDoc> = all
        .iter()
        .copied()
        .filter(|d| passes(index, q.filter.as_ref(), &q.ismatch, d))
        .collect();
    let scoring_bonus = |doc: &StoredDoc| -> f64 {
        q.ismatch
            .iter()
            .filter(|m| m.scoring)
            .filter_map(|m| m.query.score(index, doc, &m.fields))
            .sum()
    };

    let mut lists: Vec<(f64, Vec<(&StoredDoc, f64)>)> = Vec::new();
    let real_text = q.text.as_ref().filter(|t| !t.matches_everything());
    if let Some(text) = real_text {
        let mut hits: Vec<(&StoredDoc, f64)> = passing
            .iter()
            .filter_map(|d| {
                Some((
                    *d,
                    text.score(index, d, &q.search_fields)? + scoring_bonus(d),
                ))
            })
            .collect();
        sort_by_score(&mut hits);
        lists.push((1.0, hits));
    } else if q.vectors.is_empty() {
        let hits = passing
            .iter()
            .map(|d| (*d, 1.0 + scoring_bonus(d)))
            .collect();
        lists.push((1.0, hits));
    }
    for (vq, fields) in &q.vectors {
        for (field, metric) in fields {
            let candidates: &[&StoredDoc] = if q.post_filter { &all } else { &passing };
            let mut hits: Vec<(&StoredDoc, f64)> = candidates
                .iter()
                .filter_map(|d| {
                    Some((
                        *d,
                        similarity(*metric, &vq.vector, &stored_vector(d, field)?),
                    ))
                })
                .collect();
            sort_by_score(&mut hits);
            hits.truncate(vq.k);
            if q.post_filter {
                hits.retain(|(d, _)| passes(index, q.filter.as_ref(), &q.ismatch, d));
            }
            lists.push((vq.weight, hits));
        }
    }

    let mut results: Vec<(&StoredDoc, f64)> = if lists.len() == 1 {
        lists.pop().map(|(_, l)| l).unwrap_or_default()
    } else {
        // Reciprocal rank fusion, as Azure does for hybrid and multi-vector queries.
        let mut fused: HashMap<u64, (&StoredDoc, f64)> = HashMap::new();
        for (weight, list) in &lists {
            for (rank, (doc, _)) in list.iter().enumerate() {
                #[expect(clippy::cast_precision_loss, reason = "ranks are small")]
                let contribution = weight / (RRF_K + (rank + 1) as f64);
                fused.entry(doc.seq).or_insert((*doc, 0.0)).1 += contribution;
            }
        }
        fused.into_values().collect()
    };
    sort_results(&mut results, &q.order, &index.schema);

    let total = results.len();
    let facets = (!q.facets.is_empty()).then(|| facets(&q.facets, &results, &index.schema));
    let page_size = q.top.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let start = q.skip.min(total);
    let end = start.saturating_add(page_size).min(total);
    let next = match q.top {
        None if end < total => Some((end, None)),
        Some(top) if top > MAX_PAGE && end < total => Some((end, Some(top - MAX_PAGE))),
        _ => None,
    };
    let highlighter = q.text.as_ref().map(TextQuery::highlight_terms);
    let value = results
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|(doc, score)| {
            let mut obj = project(&index.schema, &doc.fields, q.select.as_deref());
            obj.insert(
                "@search.score".into(),
                Number::from_f64(*score).map_or(Value::Null, Value::Number),
            );
            if let (Some((words, prefixes)), false) = (&highlighter, q.highlight.is_empty()) {
                let h = highlights(doc, &q.highlight, words, prefixes, &q.pre_tag, &q.post_tag);
                if !h.is_empty() {
                    obj.insert("@search.highlights".into(), Value::Object(h));
                }
            }
            Value::Object(obj)
        })
        .collect();
    Outcome {
        value,
        count: q.count.then_some(total),
        facets,
        next,
    }
}

fn sort_by_score(hits: &mut [(&StoredDoc, f64)]) {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.seq.cmp(&b.0.seq)));
}

/// The single value at a path (no collections), if any.
fn single_value<'a>(fields: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('/');
    let mut current = fields.get(segments.next()?)?;
    for seg in segments {
        current = current.as_object()?.get(seg)?;
    }
    (!current.is_null()).then_some(current)
}

/// Orders two stored values of one field; nulls first.
fn compare_values(a: Option<&Value>, b: Option<&Value>, scalar: Scalar) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => compare_present(a, b, scalar),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
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

fn compare_present(a: &Value, b: &Value, scalar: Scalar) -> Ordering {
    match scalar {
        Scalar::DateTimeOffset => {
            let parse = |v: &Value| {
                v.as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            };
            parse(a).cmp(&parse(b))
        }
        _ => match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&y.as_f64().unwrap_or(0.0)),
            },
            (Value::String(x), Value::String(y)) => match (number(a), number(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => x.encode_utf16().cmp(y.encode_utf16()),
            },
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => match (number(a), number(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => Ordering::Equal,
            },
        },
    }
}

fn sort_results(results: &mut [(&StoredDoc, f64)], order: &[OrderBy], schema: &Schema) {
    if order.is_empty() {
        sort_by_score(results);
        return;
    }
    results.sort_by(|(da, sa), (db, sb)| {
        for clause in order {
            let ord = match &clause.key {
                SortKey::Score => sa.total_cmp(sb),
                SortKey::Field(path) => {
                    let name = path.to_string();
                    let scalar = schema.field(&name).map_or(Scalar::String, |f| f.ty.scalar);
                    compare_values(
                        single_value(&da.fields, &name),
                        single_value(&db.fields, &name),
                        scalar,
                    )
                }
                SortKey::GeoDistance(g) => {
                    let name = g.target.to_string();
                    let dist = |d: &StoredDoc| {
                        single_value(&d.fields, &name)
                            .and_then(GeoPoint::from_geojson)
                            .map(|p| p.distance_km(g.point))
                    };
                    match (dist(da), dist(db)) {
                        (None, None) => Ordering::Equal,
                        (None, Some(_)) => Ordering::Less,
                        (Some(_), None) => Ordering::Greater,
                        (Some(x), Some(y)) => x.total_cmp(&y),
                    }
                }
            };
            let ord = if clause.descending {
                ord.reverse()
            } else {
                ord
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        // As in Azure, ties are broken by relevance.
        sb.total_cmp(sa).then(da.seq.cmp(&db.seq))
    });
}

fn facets(specs: &[FacetSpec], results: &[(&StoredDoc, f64)], schema: &Schema) -> Value {
    let mut out = Map::new();
    for spec in specs {
        let scalar = schema
            .field(&spec.field)
            .map_or(Scalar::String, |f| f.ty.scalar);
        let mut counts: BTreeMap<String, (Value, u64)> = BTreeMap::new();
        for (doc, _) in results {
            let mut seen = std::collections::HashSet::new();
            for v in values_at(&doc.fields, &spec.field) {
                let key = v.to_string();
                if seen.insert(key.clone()) {
                    counts.entry(key).or_insert_with(|| (v.clone(), 0)).1 += 1;
                }
            }
        }
        let buckets = if let Some(bounds) = &spec.ranges {
            range_buckets(bounds, counts.values())
        } else if let Some(interval) = spec.interval {
            interval_buckets(interval, scalar, counts.values())
        } else {
            let mut entries: Vec<(Value, u64)> = counts.into_values().collect();
            entries.sort_by(|(va, ca), (vb, cb)| {
                let by_value = compare_present(va, vb, scalar);
                match spec.sort {
                    FacetSort::CountDesc => cb.cmp(ca).then(by_value),
                    FacetSort::CountAsc => ca.cmp(cb).then(by_value),
                    FacetSort::ValueAsc => by_value,
                    FacetSort::ValueDesc => by_value.reverse(),
                }
            });
            if spec.count > 0 {
                entries.truncate(spec.count);
            }
            entries
                .into_iter()
                .map(|(value, count)| serde_json::json!({"value": value, "count": count}))
                .collect()
        };
        out.insert(spec.field.clone(), Value::Array(buckets));
    }
    Value::Object(out)
}

fn range_buckets<'a>(
    bounds: &[Number],
    values: impl Iterator<Item = &'a (Value, u64)>,
) -> Vec<Value> {
    let mut counts = vec![0u64; bounds.len() + 1];
    for (v, c) in values {
        let Some(x) = number(v) else { continue };
        let slot = bounds
            .iter()
            .take_while(|b| b.as_f64().is_some_and(|b| x >= b))
            .count();
        if let Some(n) = counts.get_mut(slot) {
            *n += c;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| {
            let mut bucket = Map::new();
            if i > 0 {
                if let Some(from) = bounds.get(i - 1) {
                    bucket.insert("from".into(), Value::Number(from.clone()));
                }
            }
            if let Some(to) = bounds.get(i) {
                bucket.insert("to".into(), Value::Number(to.clone()));
            }
            bucket.insert("count".into(), Value::from(count));
            Value::Object(bucket)
        })
        .collect()
}

fn interval_buckets<'a>(
    interval: f64,
    scalar: Scalar,
    values: impl Iterator<Item = &'a (Value, u64)>,
) -> Vec<Value> {
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    for (v, c) in values {
        let Some(x) = number(v).filter(|x| x.is_finite()) else {
            continue;
        };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "bucket index of a finite value"
        )]
        let slot = (x / interval).floor() as i64;
        *buckets.entry(slot).or_default() += c;
    }
    buckets
        .into_iter()
        .map(|(slot, count)| {
            #[expect(clippy::cast_precision_loss, reason = "bucket start")]
            let start = slot as f64 * interval;
            let value = if matches!(scalar, Scalar::Int32 | Scalar::Int64) && start.fract() == 0.0 {
                #[expect(clippy::cast_possible_truncation, reason = "integral bucket start")]
                Value::from(start as i64)
            } else {
                Number::from_f64(start).map_or(Value::Null, Value::Number)
            };
            serde_json::json!({"value": value, "count": count})
        })
        .collect()
}

/// The retrievable fields of a document (or the selected ones), with nulls for missing ones.
pub fn project(
    schema: &Schema,
    fields: &Map<String, Value>,
    select: Option<&[String]>,
) -> Map<String, Value> {
    let paths: Option<Vec<Vec<&str>>> =
        select.map(|s| s.iter().map(|p| p.split('/').collect()).collect());
    project_object(&schema.fields, fields, paths.as_deref())
}

fn project_object(
    fields: &[Field],
    obj: &Map<String, Value>,
    select: Option<&[Vec<&str>]>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields {
        let sub: Option<Vec<Vec<&str>>> = match select {
            None => None,
            Some(paths) => {
                let mine: Vec<&Vec<&str>> = paths
                    .iter()
                    .filter(|p| p.first() == Some(&field.name.as_str()))
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                if mine.iter().any(|p| p.len() == 1) {
                    None
                } else {
                    Some(mine.iter().map(|p| p[1..].to_vec()).collect())
                }
            }
        };
        if select.is_none() && !field.retrievable {
            continue;
        }
        let value = obj.get(&field.name).cloned().unwrap_or(Value::Null);
        let value = if field.ty.scalar == Scalar::Complex {
            match value {
                Value::Object(o) => {
                    Value::Object(project_object(&field.fields, &o, sub.as_deref()))
                }
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::Object(o) => {
                                Value::Object(project_object(&field.fields, o, sub.as_deref()))
                            }
                            other => other.clone(),
                        })
                        .collect(),
                ),
                other => other,
            }
        } else {
            value
        };
        out.insert(field.name.clone(), value);
    }
    out
}

/// `@search.highlights`: for each highlight field, the values containing a query term with
/// the terms wrapped in the tags.
fn highlights(
    doc: &StoredDoc,
    fields: &[String],
    words: &std::collections::HashSet<String>,
    prefixes: &[String],
    pre: &str,
    post: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields {
        let mut fragments = Vec::new();
        for value in values_at(&doc.fields, field) {
            let Some(text) = value.as_str() else { continue };
            let mut marked = String::new();
            let mut last = 0;
            let mut hit = false;
            for t in super::analysis::tokens(text) {
                if words.contains(&t.term)
                    || prefixes.iter().any(|p| t.term.starts_with(p.as_str()))
                {
                    hit = true;
                    marked.push_str(text.get(last..t.start).unwrap_or_default());
                    marked.push_str(pre);
                    marked.push_str(text.get(t.start..t.end).unwrap_or_default());
                    marked.push_str(post);
                    last = t.end;
                }
            }
            if hit {
                marked.push_str(text.get(last..).unwrap_or_default());
                fragments.push(Value::String(marked));
            }
        }
        if !fragments.is_empty() {
            out.insert(field.clone(), Value::Array(fragments));
        }
    }
    out
}
