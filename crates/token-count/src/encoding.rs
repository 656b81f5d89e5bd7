//! OpenAI's tokenizers and a small cache of recent counts.
//!
//! The byte-pair encoding is GitHub's `bpe` (through `bpe-openai`): it gives exactly
//! tiktoken's tokens (the conformance fixture and the adversarial tests check it against
//! tiktoken) in time linear in the text, where tiktoken's merge loop is quadratic in a long
//! run of letters without spaces (400 kB of one letter: a minute of CPU).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use bpe_openai::Tokenizer;

use crate::error::MapParseError;

/// The tokenizer a model uses. Which model uses which is decided by an
/// [`EncodingMap`](crate::EncodingMap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// gpt-4o, gpt-4.1, gpt-5 and the o-series.
    O200kBase,
    /// gpt-4, gpt-35-turbo and the embedding models.
    Cl100kBase,
}

impl Encoding {
    /// The name tiktoken uses (`o200k_base`, `cl100k_base`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding of a model under the default [`EncodingMap`](crate::EncodingMap).
    pub fn for_model(model: &str) -> Self {
        crate::models::default_encoding(model)
    }

    /// The tokenizer, built on first use (see [`warm_up`]).
    fn tokenizer(self) -> &'static Tokenizer {
        let tokenizer = match self {
            Encoding::O200kBase => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        };
        self.built().store(true, Ordering::Release);
        tokenizer
    }

    fn built(self) -> &'static AtomicBool {
        static BUILT: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
        match self {
            Encoding::O200kBase => &BUILT[0],
            Encoding::Cl100kBase => &BUILT[1],
        }
    }

    /// Whether the tokenizer is built. Building it is a one-time cost (o200k: about 45 ms and
    /// 65 MB; cl100k: 20 ms and 29 MB), so a count that would build it belongs off the async
    /// workers.
    pub fn is_ready(self) -> bool {
        self.built().load(Ordering::Acquire)
    }

    /// Number of tokens in `text`. Text that looks like a special token (`<|endoftext|>`)
    /// counts as ordinary text, as it does when the service tokenizes a request. Counts of
    /// texts seen recently are remembered: system prompts and benchmark bodies repeat.
    ///
    /// Never more than `text.len()`: every token stands for at least one byte.
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if text.len() > CACHE_MAX_TEXT {
            return self.tokenizer().count(text) as u64;
        }
        let key = fnv1a(text.as_bytes()) ^ ((text.len() as u64) << 1) ^ (self as u64);
        let shard = &cache()[(key % CACHE_SHARDS as u64) as usize];
        if let Some(count) = shard.lock().get(&key) {
            return u64::from(*count);
        }
        let count = self.tokenizer().count(text) as u64;
        let mut map = shard.lock();
        if map.len() >= CACHE_ENTRIES_PER_SHARD {
            map.clear();
        }
        map.insert(key, u32::try_from(count).unwrap_or(u32::MAX));
        count
    }

    /// The number of tokens in `text` when it is at most `limit`; `None` as soon as it is
    /// known to be more (the work then stops there, so a huge text costs what `limit` tokens
    /// of it cost).
    pub fn count_within(self, text: &str, limit: u64) -> Option<u64> {
        if text.len() <= CACHE_MAX_TEXT || (text.len() as u64) <= limit {
            // Short (cached), or no longer in bytes than the limit in tokens.
            let count = self.count(text);
            return (count <= limit).then_some(count);
        }
        let tokenizer = self.tokenizer();
        let normalized = tokenizer.normalize(text);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        tokenizer
            .count_till_limit(&normalized, limit)
            .map(|count| count as u64)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = MapParseError;

    /// `o200k_base` or `cl100k_base`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "o200k_base" => Ok(Encoding::O200kBase),
            "cl100k_base" => Ok(Encoding::Cl100kBase),
            other => Err(MapParseError::UnknownEncoding {
                name: other.to_owned(),
            }),
        }
    }
}

/// Texts longer than this are not cached.
const CACHE_MAX_TEXT: usize = 16 * 1024;
const CACHE_SHARDS: usize = 16;
/// A full shard is simply emptied: the cache only has to catch repetition.
const CACHE_ENTRIES_PER_SHARD: usize = 4096;

type Shard = parking_lot::Mutex<HashMap<u64, u32>>;

/// Token counts by (hash of text, length, encoding). A 64-bit hash collision between two
/// recent texts of the same length would give a wrong count; that risk is accepted.
fn cache() -> &'static [Shard] {
    static CACHE: OnceLock<Vec<Shard>> = OnceLock::new();
    CACHE.get_or_init(|| (0..CACHE_SHARDS).map(|_| Shard::default()).collect())
}

/// 64-bit FNV-1a: a fast, stable hash for the count cache.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Builds these tokenizers on a background thread, so the first request that needs one does
/// not pay for it; one never used is never built (it is built on its first use).
pub fn warm_up(encodings: impl IntoIterator<Item = Encoding>) {
    let wanted: Vec<Encoding> = encodings.into_iter().filter(|e| !e.is_ready()).collect();
    if wanted.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for encoding in wanted {
            let _ = encoding.tokenizer();
        }
    });
}

/// [`warm_up`] of every encoding.
pub fn warm_up_all() {
    warm_up([Encoding::O200kBase, Encoding::Cl100kBase]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_texts_have_their_known_counts() {
        // Reference values from Python tiktoken.
        assert_eq!(
            Encoding::O200kBase.count("Hello, world! 你好 <|endoftext|>"),
            13
        );
        assert_eq!(
            Encoding::Cl100kBase.count("Hello, world! 你好 <|endoftext|>"),
            13
        );
        assert_eq!(Encoding::O200kBase.count(""), 0);
    }

    #[test]
    fn a_cached_count_equals_a_fresh_one() {
        let text = "The same system prompt, again and again.";
        let first = Encoding::Cl100kBase.count(text);
        assert_eq!(Encoding::Cl100kBase.count(text), first);
        assert_eq!(Encoding::Cl100kBase.tokenizer().count(text) as u64, first);
    }

    /// Inputs that make tiktoken's merge loop quadratic, and others of every kind.
    fn adversarial(n: usize) -> Vec<(&'static str, String)> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut pick = |alphabet: &[char]| -> String {
            (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        };
        let lower: Vec<char> = ('a'..='z').collect();
        let digits: Vec<char> = ('0'..='9').collect();
        let mixed: Vec<char> = "aZé漢字Ωж🙂ß, .\n\t-_'1".chars().collect();
        vec![
            ("one letter", "a".repeat(n)),
            ("one capital", "Q".repeat(n)),
            ("random letters", pick(&lower)),
            ("a long number", pick(&digits)),
            ("spaces", " ".repeat(n)),
            ("newlines and spaces", " \n".repeat(n / 2)),
            ("tabs", "\t".repeat(n)),
            ("mixed scripts", pick(&mixed)),
            ("one CJK character", "漢".repeat(n / 3)),
            ("emoji", "🙂".repeat(n / 4)),
            ("punctuation", "!?".repeat(n / 2)),
            ("contractions", "'s'll've".repeat(n / 8)),
            ("special-token look-alikes", "<|endoftext|>".repeat(n / 13)),
        ]
    }

    #[test]
    fn counts_equal_tiktokens_on_adversarial_inputs() {
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let reference = match encoding {
                Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
                Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            };
            for n in [1, 7, 100, 3000] {
                for (name, text) in adversarial(n) {
                    let expected = reference.encode_ordinary(&text).len() as u64;
                    assert_eq!(encoding.count(&text), expected, "{encoding} {name} x{n}");
                    assert_eq!(
                        encoding.count_within(&text, expected),
                        Some(expected),
                        "{encoding} {name} x{n}: a limit equal to the count"
                    );
                    if expected > 0 {
                        assert_eq!(
                            encoding.count_within(&text, expected - 1),
                            None,
                            "{encoding} {name} x{n}: one below"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_limited_count_of_a_huge_text_stops_at_its_limit() {
        // 2 MB of random letters, counted up to 1,000 tokens: the answer is None, and it
        // comes from the first few kilobytes (the test would take seconds otherwise).
        let huge = adversarial(2_000_000)
            .into_iter()
            .find(|(name, _)| *name == "random letters")
            .map(|(_, text)| text)
            .unwrap_or_default();
        assert_eq!(Encoding::O200kBase.count_within(&huge, 1_000), None);
        let short = &huge[..20_000];
        let exact = Encoding::O200kBase.count(short);
        assert_eq!(
            Encoding::O200kBase.count_within(short, exact + 5),
            Some(exact)
        );
    }

    #[test]
    fn encodings_parse_from_their_names_only() {
        assert_eq!("o200k_base".parse::<Encoding>(), Ok(Encoding::O200kBase));
        assert_eq!(
            " cl100k_base ".parse::<Encoding>(),
            Ok(Encoding::Cl100kBase)
        );
        assert!("p50k_base".parse::<Encoding>().is_err());
        assert_eq!(Encoding::O200kBase.to_string(), "o200k_base");
    }
}
