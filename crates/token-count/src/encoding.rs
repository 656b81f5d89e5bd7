//! OpenAI's tokenizers (tiktoken-rs) and a small cache of recent counts.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

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

    /// The BPE, built on first use (building one takes a moment; see [`warm_up`]).
    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
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
            return self.bpe().encode_ordinary(text).len() as u64;
        }
        let key = fnv1a(text.as_bytes()) ^ ((text.len() as u64) << 1) ^ (self as u64);
        let shard = &cache()[(key % CACHE_SHARDS as u64) as usize];
        if let Some(count) = shard.lock().get(&key) {
            return u64::from(*count);
        }
        let count = self.bpe().encode_ordinary(text).len() as u64;
        let mut map = shard.lock();
        if map.len() >= CACHE_ENTRIES_PER_SHARD {
            map.clear();
        }
        map.insert(key, u32::try_from(count).unwrap_or(u32::MAX));
        count
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

/// Builds both tokenizers on a background thread (once per process), so the first request
/// does not pay for it.
pub fn warm_up() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        std::thread::spawn(|| {
            let _ = Encoding::O200kBase.bpe();
            let _ = Encoding::Cl100kBase.bpe();
        });
    });
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
        assert_eq!(
            Encoding::Cl100kBase.bpe().encode_ordinary(text).len() as u64,
            first
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
