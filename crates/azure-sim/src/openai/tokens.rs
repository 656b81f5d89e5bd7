//! Token counting with OpenAI's real tokenizers (tiktoken-rs): `o200k_base` for the gpt-4o,
//! gpt-4.1, gpt-4.5, gpt-5 and o-series families, `cl100k_base` for older chat models and
//! the embedding models. Chat prompts add OpenAI's documented message overhead (3 tokens per
//! message, 1 per `name`, 3 to prime the reply).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use super::textgen::fnv1a;

/// The tokenizer a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    /// The encoding of a model name (as deployed on Azure, e.g. `gpt-35-turbo`).
    pub fn for_model(model: &str) -> Self {
        let m = model.to_ascii_lowercase();
        let o200k = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "chatgpt-4o",
            "gpt-oss",
            "o1",
            "o3",
            "o4",
        ];
        if o200k.iter().any(|p| m.starts_with(p)) {
            Encoding::O200kBase
        } else {
            Encoding::Cl100kBase
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Number of tokens in `text` (special-token text counts as ordinary text). Counts of
    /// texts seen recently are remembered: system prompts and benchmark bodies repeat.
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

/// Loads both tokenizers (they take a moment to build), so the first request is not slow.
pub fn warm_up() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        std::thread::spawn(|| {
            let _ = Encoding::O200kBase.count("warm");
            let _ = Encoding::Cl100kBase.count("warm");
        });
    });
}

/// Per-message overhead in OpenAI's counting recipe.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;
/// What an image part costs (OpenAI's fixed price for a low-detail image).
const IMAGE_TOKENS: u64 = 85;

/// Prompt tokens of a chat request: its messages, plus its tool and function definitions.
pub fn count_chat_prompt(encoding: Encoding, messages: &[Value], tools: Option<&Value>) -> u64 {
    let mut total = REPLY_PRIMING;
    for message in messages {
        total += TOKENS_PER_MESSAGE;
        let Some(fields) = message.as_object() else {
            continue;
        };
        for (key, value) in fields {
            total += count_value(encoding, value);
            if key == "name" {
                total += TOKENS_PER_NAME;
            }
        }
    }
    if let Some(tools) = tools {
        total += encoding.count(&tools.to_string());
    }
    total
}

/// Tokens of one message field: strings directly, content parts by kind, anything else as
/// its JSON text.
fn count_value(encoding: Encoding, value: &Value) -> u64 {
    match value {
        Value::String(s) => encoding.count(s),
        Value::Null => 0,
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part
                    .get("text")
                    .and_then(Value::as_str)
                    .map_or(0, |t| encoding.count(t)),
                Some("image_url") | Some("input_image") => IMAGE_TOKENS,
                _ => encoding.count(&part.to_string()),
            })
            .sum(),
        other => encoding.count(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_names_map_to_their_tokenizer() {
        let cases = [
            ("gpt-4o", Encoding::O200kBase),
            ("gpt-4o-mini", Encoding::O200kBase),
            ("gpt-4.1-nano", Encoding::O200kBase),
            ("o3-mini", Encoding::O200kBase),
            ("gpt-35-turbo", Encoding::Cl100kBase),
            ("gpt-4", Encoding::Cl100kBase),
            ("text-embedding-3-small", Encoding::Cl100kBase),
        ];
        for (model, expected) in cases {
            assert_eq!(Encoding::for_model(model), expected, "{model}");
        }
    }

    #[test]
    fn chat_prompts_follow_the_cookbook_recipe() {
        // OpenAI's cookbook example: these two messages are 3+1 (system) ... computed
        // independently: each message 3 + role + content, +1 for name, +3 priming.
        let enc = Encoding::O200kBase;
        let messages = vec![
            json!({"role": "system", "content": "You are a helpful assistant."}),
            json!({"role": "user", "name": "bob", "content": "Hello!"}),
        ];
        let expected = 3
            + (3 + enc.count("system") + enc.count("You are a helpful assistant."))
            + (3 + enc.count("user") + enc.count("bob") + 1 + enc.count("Hello!"));
        assert_eq!(count_chat_prompt(enc, &messages, None), expected);
        // The well-known count for "Hello!" as the only user message on gpt-4o is 9.
        let hello = vec![json!({"role": "user", "content": "Hello!"})];
        assert_eq!(count_chat_prompt(enc, &hello, None), 9);
    }
}
