//! Deterministic text: the same input always yields the same words. A request's content is
//! hashed (FNV-1a, stable across builds) into the seed of a small generator that picks words
//! from a vocabulary in which every word is exactly one token in both `o200k_base` and
//! `cl100k_base`, with or without a leading space; so the number of tokens generated is known
//! without running the tokenizer, and `max_tokens` cuts exactly.

/// Words that are one token each in both encodings (checked by a unit test).
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "out", "up", "into", "time",
    "about", "only", "new", "some", "could", "these", "two", "may", "first", "then", "do", "any",
    "like", "my", "now", "over", "such", "our", "man", "me", "even", "most", "made", "after",
    "also", "did", "many", "before", "must", "through", "back", "years", "where", "much", "your",
    "way", "well", "down", "should", "because", "each", "just", "those", "people", "how", "too",
    "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work",
    "long", "get", "here", "between", "both", "life", "being", "under", "never", "day", "same",
    "another", "know", "while", "last", "might", "us", "great", "old", "year", "off", "come",
    "since", "against", "go", "came", "right", "used", "take", "three", "water", "light", "model",
    "data", "cloud", "search", "answer",
];

/// FNV-1a over bytes: a stable 64-bit hash (unlike `DefaultHasher`, fixed across versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a over a JSON value's structure (keys in map order, which serde_json keeps sorted),
/// without serialising it.
pub fn hash_json(value: &serde_json::Value) -> u64 {
    fn feed(hash: &mut u64, bytes: &[u8]) {
        for b in bytes {
            *hash ^= u64::from(*b);
            *hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn walk(hash: &mut u64, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Null => feed(hash, b"n"),
            Value::Bool(b) => feed(hash, if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                feed(hash, b"#");
                feed(hash, n.to_string().as_bytes());
            }
            Value::String(s) => {
                feed(hash, b"\"");
                feed(hash, s.as_bytes());
                feed(hash, b"\"");
            }
            Value::Array(items) => {
                feed(hash, b"[");
                for item in items {
                    walk(hash, item);
                    feed(hash, b",");
                }
                feed(hash, b"]");
            }
            Value::Object(map) => {
                feed(hash, b"{");
                for (key, item) in map {
                    feed(hash, key.as_bytes());
                    feed(hash, b":");
                    walk(hash, item);
                    feed(hash, b",");
                }
                feed(hash, b"}");
            }
        }
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    walk(&mut hash, value);
    hash
}

/// [`hash_json`] of a slice, as if it were a JSON array.
pub fn hash_json_items(items: &[serde_json::Value]) -> u64 {
    items.iter().fold(0xcbf2_9ce4_8422_2325, |acc: u64, item| {
        (acc ^ hash_json(item)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: tiny, good enough for picking words.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Generated text as its tokens (each piece is one token).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub pieces: Vec<&'static str>,
    /// True when cut by the token limit (`finish_reason: length`).
    pub truncated: bool,
}

impl Generated {
    pub fn tokens(&self) -> u64 {
        self.pieces.len() as u64
    }

    pub fn text(&self) -> String {
        self.pieces.concat()
    }
}

/// Shortest and longest natural answers, in tokens (including the final period).
pub const MIN_NATURAL_TOKENS: u64 = 8;
pub const MAX_NATURAL_TOKENS: u64 = 40;

/// Generates the answer for `seed`: its natural length is chosen by the seed; `limit` cuts it.
pub fn generate(seed: u64, limit: Option<u64>) -> Generated {
    let mut rng = Rng::new(seed);
    let natural = rng.range(MIN_NATURAL_TOKENS, MAX_NATURAL_TOKENS);
    let (count, truncated) = match limit {
        Some(limit) if limit < natural => (limit, true),
        _ => (natural, false),
    };
    // A natural answer is `natural - 1` words and a period.
    let words = if truncated { count } else { count - 1 };
    let mut pieces = Vec::with_capacity(count as usize);
    for i in 0..words {
        let index = (rng.next_u64() % WORDS.len() as u64) as usize;
        pieces.push(if i == 0 {
            WORDS[index]
        } else {
            spaced()[index]
        });
    }
    if !truncated {
        pieces.push(".");
    }
    Generated { pieces, truncated }
}

/// The vocabulary with a leading space, index for index.
fn spaced() -> &'static [&'static str] {
    static SPACED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    SPACED.get_or_init(|| {
        WORDS
            .iter()
            .map(|w| &*Box::leak(format!(" {w}").into_boxed_str()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_count::Encoding;

    #[test]
    fn every_vocabulary_word_is_one_token_in_both_encodings() {
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            for word in WORDS {
                assert_eq!(enc.count(word), 1, "{word:?} in {enc:?}");
                assert_eq!(enc.count(&format!(" {word}")), 1, "' {word}' in {enc:?}");
            }
        }
    }

    #[test]
    fn generated_text_has_exactly_the_counted_tokens() {
        for seed in 0..200 {
            let g = generate(seed, None);
            for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
                assert_eq!(
                    enc.count(&g.text()),
                    g.tokens(),
                    "seed {seed}: {}",
                    g.text()
                );
            }
            assert!((MIN_NATURAL_TOKENS..=MAX_NATURAL_TOKENS).contains(&g.tokens()));
        }
    }

    #[test]
    fn a_limit_cuts_the_answer_exactly() {
        let g = generate(7, Some(3));
        assert_eq!(g.tokens(), 3);
        assert!(g.truncated);
        assert_eq!(generate(7, Some(3)), g);
    }
}
