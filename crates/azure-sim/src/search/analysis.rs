//! The one analyzer the emulator has: lowercase, split on anything that is not a letter or a
//! digit. Applied to documents when they are indexed and to query text.

use std::collections::HashMap;

/// Position gap between the values of a collection, so that a phrase never spans two values
/// (Lucene's position increment gap).
const VALUE_GAP: u32 = 100;

/// A token with its byte range in the analysed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub term: String,
    pub start: usize,
    pub end: usize,
}

/// Splits `text` into lowercase alphanumeric tokens.
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if start.is_none() {
                start = Some(i);
            }
        } else if let Some(s) = start.take() {
            out.push(token(text, s, i));
        }
    }
    if let Some(s) = start {
        out.push(token(text, s, text.len()));
    }
    out
}

fn token(text: &str, start: usize, end: usize) -> Token {
    Token {
        term: text.get(start..end).unwrap_or_default().to_lowercase(),
        start,
        end,
    }
}

/// Just the terms of `text`.
pub fn terms(text: &str) -> Vec<String> {
    tokens(text).into_iter().map(|t| t.term).collect()
}

/// One searchable field of one document, analysed: term positions and length.
#[derive(Debug, Clone, Default)]
pub struct AnalyzedField {
    /// Number of tokens (the BM25 field length).
    pub len: u32,
    /// Term to its positions, ascending.
    pub postings: HashMap<String, Vec<u32>>,
}

impl AnalyzedField {
    /// Analyses the values of a field (one for a string, several for a collection).
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut field = AnalyzedField::default();
        let mut position = 0u32;
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                position += VALUE_GAP;
            }
            for t in tokens(value) {
                field.postings.entry(t.term).or_default().push(position);
                position += 1;
                field.len += 1;
            }
        }
        field
    }

    /// Term frequency.
    pub fn tf(&self, term: &str) -> usize {
        self.postings.get(term).map_or(0, Vec::len)
    }

    /// Whether `phrase` occurs with consecutive positions.
    pub fn has_phrase(&self, phrase: &[String]) -> bool {
        let Some((first, rest)) = phrase.split_first() else {
            return false;
        };
        let Some(starts) = self.postings.get(first) else {
            return false;
        };
        starts.iter().any(|&p| {
            rest.iter().enumerate().all(|(i, term)| {
                let want = p + 1 + u32::try_from(i).unwrap_or(u32::MAX);
                self.postings
                    .get(term)
                    .is_some_and(|ps| ps.binary_search(&want).is_ok())
            })
        })
    }

    /// Terms starting with `prefix`.
    pub fn terms_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> {
        self.postings.keys().filter(move |t| t.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_lowercased_and_split_on_non_alphanumerics() {
        assert_eq!(
            terms("Wi-Fi, free PARKING! (24h) café"),
            ["wi", "fi", "free", "parking", "24h", "café"]
        );
        let t = tokens("Ab cd");
        assert_eq!((t[1].start, t[1].end), (3, 5));
    }

    #[test]
    fn phrases_do_not_span_collection_values() {
        let f = AnalyzedField::from_values(["blue sky", "ocean view"]);
        assert!(f.has_phrase(&["blue".into(), "sky".into()]));
        assert!(!f.has_phrase(&["sky".into(), "ocean".into()]));
        assert_eq!(f.len, 4);
    }
}
