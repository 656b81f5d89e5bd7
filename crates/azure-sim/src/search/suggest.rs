//! Suggest and autocomplete: prefix matching over the source fields of a suggester
//! (`analyzingInfixMatching`: each query term may match the start of any word of a field).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::analysis::{terms, tokens};
use super::query::{filtered, prepare_filter, prepare_select, project};
use super::schema::Schema;
use super::store::{values_at, Index, StoredDoc};
use super::{bad_request, SearchApiError};

/// Parameters of a suggest or autocomplete request, from either a GET query or a POST body
/// (normalised to the POST names).
#[derive(Debug, Clone, Default)]
pub struct SuggestParams {
    pub search: String,
    pub suggester: String,
    pub filter: Option<String>,
    pub select: Option<String>,
    pub orderby: Option<String>,
    pub search_fields: Option<String>,
    pub top: usize,
    pub pre_tag: Option<String>,
    pub post_tag: Option<String>,
    pub mode: Option<String>,
}

impl SuggestParams {
    /// From a JSON object with POST names (`search`, `suggesterName`, `filter`, `top`, ...).
    pub fn from_object(obj: &Map<String, Value>) -> Result<Self, SearchApiError> {
        let text = |name: &str| -> Result<Option<String>, SearchApiError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad_request(format!(
                    "The parameter '{name}' must be a string."
                ))),
            }
        };
        let search =
            text("search")?.ok_or_else(|| bad_request("The 'search' parameter is required."))?;
        if search.chars().count() > 100 || search.trim().is_empty() {
            return Err(bad_request(
                "The 'search' parameter must have between 1 and 100 characters.",
            ));
        }
        let suggester = text("suggesterName")?
            .ok_or_else(|| bad_request("The 'suggesterName' parameter is required."))?;
        let top = match obj.get("top") {
            None | Some(Value::Null) => 5,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| bad_request("'top' must be between 1 and 100."))?,
        };
        Ok(SuggestParams {
            search,
            suggester,
            filter: text("filter")?,
            select: text("select")?,
            orderby: text("orderby")?,
            search_fields: text("searchFields")?,
            top,
            pre_tag: text("highlightPreTag")?,
            post_tag: text("highlightPostTag")?,
            mode: text("autocompleteMode")?,
        })
    }

    /// From GET query pairs (`$filter`, `$top`, `$select`, `$orderby` and plain names).
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, SearchApiError> {
        let mut obj = Map::new();
        for (name, value) in pairs {
            let key = name.strip_prefix('$').unwrap_or(name);
            let value = if key == "top" {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| bad_request("'$top' must be an integer."))?;
                Value::from(n)
            } else {
                Value::String(value.clone())
            };
            obj.insert(key.to_owned(), value);
        }
        Self::from_object(&obj)
    }
}

/// The suggester's fields, narrowed by `searchFields`.
fn suggester_fields(schema: &Schema, p: &SuggestParams) -> Result<Vec<String>, SearchApiError> {
    let Some(s) = schema.suggesters.iter().find(|s| s.name == p.suggester) else {
        return Err(bad_request(format!(
            "The specified suggester name '{}' does not exist in this index definition.",
            p.suggester
        )));
    };
    match p.search_fields.as_deref().filter(|f| !f.trim().is_empty()) {
        None => Ok(s.source_fields.clone()),
        Some(list) => {
            let fields: Vec<String> = list.split(',').map(|f| f.trim().to_owned()).collect();
            for f in &fields {
                if !s.source_fields.contains(f) {
                    return Err(bad_request(format!(
                        "The field '{f}' in searchFields is not a source field of suggester '{}'.",
                        s.name
                    )));
                }
            }
            Ok(fields)
        }
    }
}

fn candidate_docs<'a>(
    index: &'a Index,
    p: &SuggestParams,
) -> Result<Vec<&'a StoredDoc>, SearchApiError> {
    let filter = p
        .filter
        .as_deref()
        .map(|f| prepare_filter(&index.schema, f))
        .transpose()?;
    Ok(filtered(index, filter.as_ref()))
}

/// Whether every query term starts some word of `text`.
fn infix_match(text: &str, query: &[String]) -> bool {
    let words = terms(text);
    !query.is_empty()
        && query
            .iter()
            .all(|q| words.iter().any(|w| w.starts_with(q.as_str())))
}

fn highlight(text: &str, query: &[String], pre: &str, post: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for t in tokens(text) {
        if let Some(q) = query.iter().find(|q| t.term.starts_with(q.as_str())) {
            // Wrap the matched prefix; the analyzer lowercases, so lengths are comparable for
            // the ASCII and most other text this emulator sees.
            let end = text
                .get(t.start..)
                .and_then(|rest| {
                    rest.char_indices()
                        .nth(q.chars().count())
                        .map(|(i, _)| t.start + i)
                })
                .unwrap_or(t.end)
                .min(t.end);
            out.push_str(text.get(last..t.start).unwrap_or_default());
            out.push_str(pre);
            out.push_str(text.get(t.start..end).unwrap_or_default());
            out.push_str(post);
            last = end;
        }
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

/// `POST /docs/search.post.suggest`: documents whose suggester fields match the query prefix.
pub fn suggest(index: &Index, p: &SuggestParams) -> Result<Value, SearchApiError> {
    let schema = &index.schema;
    let fields = suggester_fields(schema, p)?;
    let select =
        prepare_select(schema, p.select.as_deref())?.unwrap_or_else(|| vec![schema.key.clone()]);
    if p.orderby.as_deref().is_some_and(|o| !o.trim().is_empty()) {
        // Validate, then keep insertion order: suggest ordering is by relevance otherwise.
        odata_filter::parse_order_by(p.orderby.as_deref().unwrap_or_default())
            .map_err(|e| bad_request(format!("{e}\r\nParameter name: $orderby")))?;
    }
    let query = terms(&p.search);
    let mut value = Vec::new();
    for doc in candidate_docs(index, p)? {
        let matched = fields.iter().find_map(|f| {
            values_at(&doc.fields, f)
                .into_iter()
                .filter_map(Value::as_str)
                .find(|text| infix_match(text, &query))
        });
        let Some(text) = matched else { continue };
        let text = match (&p.pre_tag, &p.post_tag) {
            (Some(pre), Some(post)) => highlight(text, &query, pre, post),
            _ => text.to_owned(),
        };
        let mut obj = project(schema, &doc.fields, Some(&select));
        obj.insert("@search.text".into(), Value::String(text));
        value.push(Value::Object(obj));
        if value.len() >= p.top {
            break;
        }
    }
    Ok(json!({ "value": value }))
}

/// `POST /docs/search.post.autocomplete`: completions of the last query term from the
/// suggester fields of matching documents, most frequent first.
pub fn autocomplete(index: &Index, p: &SuggestParams) -> Result<Value, SearchApiError> {
    let fields = suggester_fields(&index.schema, p)?;
    let mode = p.mode.as_deref().unwrap_or("oneTerm");
    if !matches!(mode, "oneTerm" | "twoTerms" | "oneTermWithContext") {
        return Err(bad_request(format!("Invalid autocompleteMode '{mode}'.")));
    }
    let query = terms(&p.search);
    let Some((partial, context)) = query.split_last() else {
        return Ok(json!({ "value": [] }));
    };
    // What the caller typed before the last term, kept verbatim for queryPlusText.
    let typed_prefix = p
        .search
        .to_lowercase()
        .rfind(partial.as_str())
        .and_then(|i| p.search.get(..i))
        .unwrap_or_default()
        .to_owned();
    let mut candidates: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for doc in candidate_docs(index, p)? {
        let mut seen = std::collections::HashSet::new();
        for f in &fields {
            for text in values_at(&doc.fields, f)
                .into_iter()
                .filter_map(Value::as_str)
            {
                let words = terms(text);
                if !context.iter().all(|c| words.contains(c)) {
                    continue;
                }
                for (i, w) in words.iter().enumerate() {
                    if !w.starts_with(partial.as_str()) {
                        continue;
                    }
                    let preceded = i >= context.len()
                        && words
                            .get(i - context.len()..i)
                            .is_some_and(|before| before == context);
                    let (text, completion) = match mode {
                        "twoTerms" => match words.get(i + 1) {
                            Some(next) => (format!("{w} {next}"), format!("{w} {next}")),
                            None => (w.clone(), w.clone()),
                        },
                        "oneTermWithContext" => {
                            if !preceded {
                                continue;
                            }
                            let mut full = context.to_vec();
                            full.push(w.clone());
                            (full.join(" "), w.clone())
                        }
                        _ => (w.clone(), w.clone()),
                    };
                    if seen.insert(text.clone()) {
                        candidates.entry(text).or_insert((completion, 0)).1 += 1;
                    }
                }
            }
        }
    }
    let mut ranked: Vec<(String, String, u64)> = candidates
        .into_iter()
        .map(|(t, (c, n))| (t, c, n))
        .collect();
    ranked.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let value: Vec<Value> = ranked
        .into_iter()
        .take(p.top)
        .map(|(text, completion, _)| {
            json!({"text": text, "queryPlusText": format!("{typed_prefix}{completion}")})
        })
        .collect();
    Ok(json!({ "value": value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlight_wraps_matched_prefixes() {
        let q = vec!["hot".to_owned()];
        assert_eq!(
            highlight("Blue Hotel", &q, "<b>", "</b>"),
            "Blue <b>Hot</b>el"
        );
    }

    #[test]
    fn infix_matching_needs_every_term_as_a_word_prefix() {
        let q = vec!["blu".to_owned(), "ho".to_owned()];
        assert!(infix_match("Blue Horizon Hotel", &q));
        assert!(!infix_match("Red Horizon", &q));
    }
}
