//! Full-text queries: the simple syntax (and the common part of the Lucene syntax), matching
//! with `searchMode` any/all, and BM25 scoring over the analysed fields.
//!
//! Supported: terms, `"phrases"`, `prefix*`, `+required`, `-excluded` / `!excluded`, `|` and
//! parentheses (ignored: clauses are flat), `*` for everything; with `queryType=full` also
//! `field:term`, `AND`, `OR`, `NOT`, `&&`, `||`, and `~N` / `^N` suffixes (ignored).
//! As in Azure, with `searchMode=any` an excluded term is OR-ed: `wifi -luxury` matches
//! documents with `wifi` or without `luxury`.

use std::collections::HashSet;

use super::analysis::{terms, AnalyzedField};
use super::store::{Index, StoredDoc};

const K1: f64 = 1.2;
const B: f64 = 0.75;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occur {
    Should,
    Must,
    MustNot,
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Word(String),
    Phrase(Vec<String>),
    Prefix(String),
    Everything,
}

#[derive(Debug, Clone)]
struct Clause {
    occur: Occur,
    term: Term,
    field: Option<String>,
}

/// A parsed full-text query.
#[derive(Debug, Clone)]
pub struct TextQuery {
    clauses: Vec<Clause>,
    mode_all: bool,
}

/// Splits on whitespace, keeping quoted phrases (with their quotes) together.
fn split_query(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            '(' | ')' if !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl TextQuery {
    /// Parses `text` in the simple syntax, or the Lucene syntax when `full`.
    pub fn parse(text: &str, full: bool, mode_all: bool) -> TextQuery {
        let mut clauses = Vec::new();
        let mut pending: Option<Occur> = None;
        let mut and_next = false;
        for raw in split_query(text) {
            if matches!(raw.as_str(), "|" | "||") || (full && raw == "OR") {
                continue;
            }
            if raw == "&&" || (full && raw == "AND") {
                if let Some(last) = clauses.last_mut() {
                    let last: &mut Clause = last;
                    if last.occur == Occur::Should {
                        last.occur = Occur::Must;
                    }
                }
                and_next = true;
                continue;
            }
            if full && raw == "NOT" {
                pending = Some(Occur::MustNot);
                continue;
            }
            let mut token = raw.as_str();
            let mut occur =
                pending
                    .take()
                    .unwrap_or(if and_next { Occur::Must } else { Occur::Should });
            and_next = false;
            if let Some(rest) = token.strip_prefix('+') {
                occur = Occur::Must;
                token = rest;
            } else if let Some(rest) = token.strip_prefix('-').or_else(|| token.strip_prefix('!')) {
                occur = Occur::MustNot;
                token = rest;
            }
            let mut field = None;
            if full && !token.starts_with('"') {
                if let Some((f, rest)) = token.split_once(':') {
                    if !f.is_empty()
                        && f.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
                    {
                        field = Some(f.to_owned());
                        token = rest;
                    }
                }
            }
            // Boosts, fuzziness and proximity do not change what matches here.
            if let Some(idx) = token.rfind(['~', '^']) {
                if token[idx + 1..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
                {
                    token = &token[..idx];
                }
            }
            let term = if token == "*" {
                Term::Everything
            } else if token.len() >= 2 && token.starts_with('"') && token.ends_with('"') {
                let words = terms(&token[1..token.len() - 1]);
                match words.len() {
                    0 => continue,
                    1 => Term::Word(words.into_iter().next().unwrap_or_default()),
                    _ => Term::Phrase(words),
                }
            } else if let Some(stem) = token.strip_suffix('*') {
                match terms(stem).as_slice() {
                    [one] => Term::Prefix(one.clone()),
                    [] => Term::Everything,
                    many => Term::Phrase(many.to_vec()),
                }
            } else {
                let words = terms(token);
                match words.len() {
                    0 => continue,
                    1 => Term::Word(words.into_iter().next().unwrap_or_default()),
                    _ => Term::Phrase(words),
                }
            };
            clauses.push(Clause { occur, term, field });
        }
        TextQuery { clauses, mode_all }
    }

    /// `*`, empty, or only `*` clauses: every document matches with score 1.
    pub fn matches_everything(&self) -> bool {
        self.clauses
            .iter()
            .all(|c| c.term == Term::Everything && c.occur != Occur::MustNot)
    }

    /// The document's score, or `None` if it does not match. `fields` are the fields searched
    /// when a clause names none.
    pub fn score(&self, index: &Index, doc: &StoredDoc, fields: &[String]) -> Option<f64> {
        if self.matches_everything() {
            return Some(1.0);
        }
        let n_docs = index.len().max(1);
        let mut total = 0.0;
        let mut any_positive = false;
        let mut any_negative_holds = false;
        let mut has_must = false;
        for clause in &self.clauses {
            let (matched, score) = self.clause_score(clause, index, doc, fields, n_docs);
            match clause.occur {
                Occur::Must => {
                    has_must = true;
                    if !matched {
                        return None;
                    }
                    total += score;
                }
                Occur::Should => {
                    if matched {
                        any_positive = true;
                        total += score;
                    } else if self.mode_all {
                        return None;
                    }
                }
                Occur::MustNot => {
                    if matched {
                        if self.mode_all {
                            return None;
                        }
                    } else {
                        any_negative_holds = true;
                    }
                }
            }
        }
        let matched = self.mode_all || has_must || any_positive || any_negative_holds;
        matched.then_some(total)
    }

    fn clause_score(
        &self,
        clause: &Clause,
        index: &Index,
        doc: &StoredDoc,
        fields: &[String],
        n_docs: usize,
    ) -> (bool, f64) {
        let named;
        let fields: &[String] = match &clause.field {
            Some(f) => {
                named = [f.clone()];
                &named
            }
            None => fields,
        };
        let mut matched = false;
        let mut score = 0.0;
        for path in fields {
            let Some(field) = doc.analyzed.get(path) else {
                continue;
            };
            let avg = index.field_stats(path).map_or(1.0, |s| s.avg_len());
            let df = |t: &str| {
                index
                    .field_stats(path)
                    .and_then(|s| s.df.get(t).copied())
                    .unwrap_or(0)
            };
            let bm25 = |t: &str| bm25(field, t, df(t), n_docs, avg);
            match &clause.term {
                Term::Everything => {
                    matched = true;
                    score += 1.0;
                }
                Term::Word(w) => {
                    if field.tf(w) > 0 {
                        matched = true;
                        score += bm25(w);
                    }
                }
                Term::Phrase(words) => {
                    if field.has_phrase(words) {
                        matched = true;
                        score += words.iter().map(|w| bm25(w)).sum::<f64>();
                    }
                }
                Term::Prefix(p) => {
                    // Lucene rewrites prefix queries to a constant score.
                    if field.terms_with_prefix(p).next().is_some() {
                        matched = true;
                        score += 1.0;
                    }
                }
            }
        }
        (matched, score)
    }

    /// Words and prefixes of the positive clauses, for highlighting.
    pub fn highlight_terms(&self) -> (HashSet<String>, Vec<String>) {
        let mut words = HashSet::new();
        let mut prefixes = Vec::new();
        for c in self.clauses.iter().filter(|c| c.occur != Occur::MustNot) {
            match &c.term {
                Term::Word(w) => {
                    words.insert(w.clone());
                }
                Term::Phrase(ws) => words.extend(ws.iter().cloned()),
                Term::Prefix(p) => prefixes.push(p.clone()),
                Term::Everything => {}
            }
        }
        (words, prefixes)
    }

    /// Field names given as `field:term` (full syntax), to validate.
    pub fn named_fields(&self) -> impl Iterator<Item = &str> {
        self.clauses.iter().filter_map(|c| c.field.as_deref())
    }
}

fn bm25(field: &AnalyzedField, term: &str, df: u64, n_docs: usize, avg_len: f64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "scores")]
    let (tf, n, df, len) = (
        field.tf(term) as f64,
        n_docs as f64,
        df as f64,
        f64::from(field.len),
    );
    if tf == 0.0 {
        return 0.0;
    }
    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::schema::Schema;
    use serde_json::json;

    fn index() -> Index {
        let def = json!({"name": "tx", "fields": [
            {"name": "id", "type": "Edm.String", "key": true, "searchable": false},
            {"name": "body", "type": "Edm.String"},
        ]});
        let mut ix = Index::new(Schema::parse("tx", &def).unwrap());
        ix.apply_batch(&[
            json!({"id": "1", "body": "luxury hotel with pool and wifi"}),
            json!({"id": "2", "body": "budget hotel with wifi"}),
            json!({"id": "3", "body": "luxury luxury luxury spa"}),
            json!({"id": "4", "body": "camping site"}),
        ]);
        ix
    }

    fn hits(ix: &Index, q: &str, full: bool, all: bool) -> Vec<String> {
        let query = TextQuery::parse(q, full, all);
        let fields = ix.searchable_fields().to_vec();
        let mut scored: Vec<(f64, String)> = ix
            .docs()
            .into_iter()
            .filter_map(|d| {
                let s = query.score(ix, d, &fields)?;
                Some((s, d.fields["id"].as_str().unwrap().to_owned()))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, id)| id).collect()
    }

    #[test]
    fn search_modes_and_operators_match_like_azure() {
        let ix = index();
        let cases: &[(&str, bool, bool, &[&str])] = &[
            ("luxury", false, false, &["3", "1"]),
            ("luxury wifi", false, false, &["1", "3", "2"]),
            ("luxury wifi", false, true, &["1"]),
            ("+luxury wifi", false, false, &["1", "3"]),
            ("wifi -luxury", false, true, &["2"]),
            ("hotel -luxury", false, false, &["2", "1", "4"]),
            ("\"hotel with wifi\"", false, false, &["2"]),
            ("lux*", false, false, &["1", "3"]),
            ("*", false, false, &["1", "2", "3", "4"]),
            ("body:camping", true, false, &["4"]),
            ("luxury AND pool", true, false, &["1"]),
            ("luxury NOT pool", true, true, &["3"]),
            ("LUXURY~1", false, false, &["3", "1"]),
            ("nothing", false, false, &[]),
        ];
        for (q, full, all, expected) in cases {
            assert_eq!(
                hits(&ix, q, *full, *all),
                *expected,
                "query {q:?} full={full} all={all}"
            );
        }
    }

    #[test]
    fn bm25_prefers_rarer_terms_and_shorter_fields() {
        let ix = index();
        let q = TextQuery::parse("hotel", false, false);
        let fields = ix.searchable_fields().to_vec();
        let s1 = q.score(&ix, ix.get("1").unwrap(), &fields).unwrap();
        let s2 = q.score(&ix, ix.get("2").unwrap(), &fields).unwrap();
        assert!(s2 > s1, "shorter field scores higher: {s2} vs {s1}");
        let rare = TextQuery::parse("camping", false, false)
            .score(&ix, ix.get("4").unwrap(), &fields)
            .unwrap();
        assert!(rare > s2);
    }
}
