//! Prompt tokens of a request body, by the rules below. The same rules are implemented
//! independently in Python (`tests/fixtures/tokens/generate.py`), whose counts the
//! conformance test checks.
//!
//! Chat (`messages`, OpenAI cookbook's recipe, extended to the fields it leaves out):
//! - 3 tokens to prime the reply, plus for each message 3 tokens and then, for each field:
//!   - `content`: a string is its tokens; `null` is 0; an array of parts is the sum of its
//!     parts: the `text` of `text`/`input_text`/`output_text` parts, the `refusal` of
//!     `refusal` parts, the canonical JSON (below) of any other kind of part (audio, files),
//!     and for an `image_url`/`input_image`/`image_file` part a fixed estimate, since the
//!     real price depends on the image's size, which is not in the body:
//!     [`IMAGE_TOKENS_LOW`] (85) when its `detail` (on the part, else in its `image_url`
//!     object) is `"low"`, else [`IMAGE_TOKENS_DEFAULT`] (765, a 1024x1024 image at high
//!     detail);
//!   - `name`: its tokens plus 1;
//!   - `tool_calls` (assistant): the tokens of the array's canonical JSON;
//!   - any other field (`role`, `tool_call_id`, `function_call`, ...): a string is its
//!     tokens, `null` is 0, anything else the tokens of its canonical JSON.
//! - Tool definitions: the tokens of the canonical JSON of the `tools` array, plus those of
//!   the `functions` array (legacy); an empty array counts 0. The service renders
//!   definitions into a hidden system message in an undocumented syntax, so this is an
//!   approximation; JSON is the more verbose of the two, so it should err high, which is
//!   the safe side for admission. `tool_choice` and `response_format` are not counted.
//!
//! Embeddings (`input`) and legacy completions (`prompt`): a string is its tokens; an array
//! of strings the sum of theirs; an array of token ids its length; an array of arrays of
//! token ids the sum of their lengths. No overhead.
//!
//! Canonical JSON: no whitespace, object keys sorted by code point, non-ASCII characters
//! written as themselves, only `"`, `\` and control characters escaped (`\n`, `\r`, `\t`,
//! `\b`, `\f`, else `\u00XX`), numbers as serde_json writes them. This is Python's
//! `json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)`, except for
//! floats of magnitude below 1e-4 or from 1e16 (exponent notation differs: `1e-5` against
//! Python's `1e-05`).
//!
//! Text is tokenized as ordinary text: `<|endoftext|>` in a message is just characters.

use serde_json::{Map, Value};

use crate::encoding::Encoding;
use crate::error::CountError;

/// Tokens added for every chat message (OpenAI cookbook).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens added for a message's `name` (OpenAI cookbook).
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens that prime the assistant's reply, once per request (OpenAI cookbook).
pub const REPLY_PRIMING: u64 = 3;
/// An image part with `detail: "low"`: OpenAI's fixed price for a low-detail image.
pub const IMAGE_TOKENS_LOW: u64 = 85;
/// Any other image part: the price of a 1024x1024 image at high detail (85 + 4 tiles of
/// 170). Larger images cost more; the body does not say the size.
pub const IMAGE_TOKENS_DEFAULT: u64 = 765;

/// The prompt tokens of a chat request, with the parts that make them up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCount {
    /// What the service reports as `prompt_tokens`: reply priming, every message and the
    /// tool definitions.
    pub total: u64,
    /// Each message's tokens (its overhead included), in order. Dropping message `i` lowers
    /// `total` by exactly `messages[i]`.
    pub messages: Vec<u64>,
    /// The tool and function definitions' tokens.
    pub tools: u64,
}

/// Prompt tokens of chat `messages` with `tools` and legacy `functions` definitions (the
/// body's fields of those names), tokenized with `encoding`.
pub fn count_chat_messages(
    encoding: Encoding,
    messages: &[Value],
    tools: Option<&Value>,
    functions: Option<&Value>,
) -> Result<ChatCount, CountError> {
    chat(messages, tools, functions, &|text: &str| {
        encoding.count(text)
    })
}

/// Tokens of an embeddings `input`.
pub fn count_embeddings_input(encoding: Encoding, input: &Value) -> Result<u64, CountError> {
    prompt_input("input", input, &|text: &str| encoding.count(text))
}

/// Tokens of a legacy completions `prompt` (same shapes as an embeddings input).
pub fn count_prompt_input(encoding: Encoding, prompt: &Value) -> Result<u64, CountError> {
    prompt_input("prompt", prompt, &|text: &str| encoding.count(text))
}

/// Bounds on the work of one count, so that no body can make it long: every text is
/// counted only until it has more than `max_text_tokens` tokens (a text past the context
/// window need not be counted further: the request is refused, or the message dropped, either
/// way), and no more than `max_bytes` of text are tokenized in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBudget {
    pub max_text_tokens: u64,
    pub max_bytes: u64,
}

/// A count made within a [`CountBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The prompt's tokens; when not `exact`, a lower bound already past `max_text_tokens`.
    pub tokens: u64,
    /// Every text was counted to its end.
    pub exact: bool,
}

/// The measure of a bounded count: each text counted within the budget, stopping at the
/// byte cap. A text past `max_text_tokens` measures `max_text_tokens + 1`.
pub(crate) struct Meter {
    encoding: Encoding,
    budget: CountBudget,
    bytes: std::cell::Cell<u64>,
    capped: std::cell::Cell<bool>,
    too_large: std::cell::Cell<bool>,
}

impl Meter {
    pub(crate) fn new(encoding: Encoding, budget: CountBudget) -> Self {
        Self {
            encoding,
            budget,
            bytes: std::cell::Cell::new(0),
            capped: std::cell::Cell::new(false),
            too_large: std::cell::Cell::new(false),
        }
    }

    pub(crate) fn measure(&self, text: &str) -> u64 {
        if self.too_large.get() {
            return 0;
        }
        let bytes = self.bytes.get().saturating_add(text.len() as u64);
        self.bytes.set(bytes);
        if bytes > self.budget.max_bytes {
            self.too_large.set(true);
            return 0;
        }
        match self
            .encoding
            .count_within(text, self.budget.max_text_tokens)
        {
            Some(tokens) => tokens,
            None => {
                self.capped.set(true);
                self.budget.max_text_tokens.saturating_add(1)
            }
        }
    }

    /// Whether every text was counted to its end; an error past the byte cap.
    pub(crate) fn finish(&self) -> Result<bool, CountError> {
        if self.too_large.get() {
            return Err(CountError::TooLarge {
                max_bytes: self.budget.max_bytes,
            });
        }
        Ok(!self.capped.get())
    }
}

/// The byte length of `text`: never less than its token count in any encoding, since
/// every token stands for at least one byte. Counting with this measure gives an upper
/// bound of the real count at the cost of a walk over the body.
pub(crate) fn byte_len(text: &str) -> u64 {
    text.len() as u64
}

/// The body's object, or an error.
pub(crate) fn object(body: &Value) -> Result<&Map<String, Value>, CountError> {
    body.as_object().ok_or(CountError::BodyNotAnObject)
}

/// The body's `messages` array.
pub(crate) fn messages_of(body: &Map<String, Value>) -> Result<&Vec<Value>, CountError> {
    match body.get("messages") {
        None | Some(Value::Null) => Err(CountError::missing("messages")),
        Some(Value::Array(messages)) => Ok(messages),
        Some(_) => Err(CountError::invalid("messages", "an array of messages")),
    }
}

/// A required field of the body.
pub(crate) fn required<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a Value, CountError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(CountError::missing(field)),
        Some(value) => Ok(value),
    }
}

/// A chat body counted with `measure`.
pub(crate) fn chat_body(
    body: &Value,
    measure: &impl Fn(&str) -> u64,
) -> Result<ChatCount, CountError> {
    let body = object(body)?;
    chat(
        messages_of(body)?,
        body.get("tools"),
        body.get("functions"),
        measure,
    )
}

/// Chat prompt tokens, each text measured with `measure` (the tokenizer, or [`byte_len`]).
pub(crate) fn chat(
    messages: &[Value],
    tools: Option<&Value>,
    functions: Option<&Value>,
    measure: &impl Fn(&str) -> u64,
) -> Result<ChatCount, CountError> {
    let per_message = messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m, measure))
        .collect::<Result<Vec<u64>, CountError>>()?;
    let tools =
        definitions("tools", tools, measure)? + definitions("functions", functions, measure)?;
    Ok(ChatCount {
        total: REPLY_PRIMING + per_message.iter().sum::<u64>() + tools,
        messages: per_message,
        tools,
    })
}

/// The role of message `i` (a string is required).
pub(crate) fn role(i: usize, message: &Value) -> Result<&str, CountError> {
    let Some(fields) = message.as_object() else {
        return Err(CountError::invalid(format!("messages[{i}]"), "an object"));
    };
    match fields.get("role") {
        None | Some(Value::Null) => Err(CountError::missing(format!("messages[{i}].role"))),
        Some(Value::String(role)) => Ok(role),
        Some(_) => Err(CountError::invalid(
            format!("messages[{i}].role"),
            "a string",
        )),
    }
}

fn message(i: usize, message: &Value, measure: &impl Fn(&str) -> u64) -> Result<u64, CountError> {
    role(i, message)?;
    let mut total = TOKENS_PER_MESSAGE;
    for (key, value) in message.as_object().into_iter().flatten() {
        total += match (key.as_str(), value) {
            ("content", content) => content_tokens(i, content, measure)?,
            ("name", Value::String(name)) => measure(name) + TOKENS_PER_NAME,
            ("name", Value::Null) => 0,
            ("name", _) => {
                return Err(CountError::invalid(
                    format!("messages[{i}].name"),
                    "a string",
                ))
            }
            ("tool_calls", Value::Null) => 0,
            ("tool_calls", Value::Array(calls)) => {
                if let Some(j) = calls.iter().position(|c| !c.is_object()) {
                    return Err(CountError::invalid(
                        format!("messages[{i}].tool_calls[{j}]"),
                        "an object",
                    ));
                }
                measure(&canonical_json(value))
            }
            ("tool_calls", _) => {
                return Err(CountError::invalid(
                    format!("messages[{i}].tool_calls"),
                    "an array of tool calls",
                ))
            }
            (_, other) => field_tokens(other, measure),
        };
    }
    Ok(total)
}

fn content_tokens(
    i: usize,
    content: &Value,
    measure: &impl Fn(&str) -> u64,
) -> Result<u64, CountError> {
    match content {
        Value::Null => Ok(0),
        Value::String(text) => Ok(measure(text)),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| part_tokens(i, j, part, measure))
            .sum(),
        _ => Err(CountError::invalid(
            format!("messages[{i}].content"),
            "a string or an array of parts",
        )),
    }
}

fn part_tokens(
    i: usize,
    j: usize,
    part: &Value,
    measure: &impl Fn(&str) -> u64,
) -> Result<u64, CountError> {
    let path = || format!("messages[{i}].content[{j}]");
    let Some(fields) = part.as_object() else {
        return Err(CountError::invalid(path(), "an object"));
    };
    let text_field = |field: &str| match fields.get(field) {
        Some(Value::String(text)) => Ok(measure(text)),
        None | Some(Value::Null) => Err(CountError::missing(format!("{}.{field}", path()))),
        Some(_) => Err(CountError::invalid(
            format!("{}.{field}", path()),
            "a string",
        )),
    };
    match fields.get("type") {
        Some(Value::String(kind)) => match kind.as_str() {
            "text" | "input_text" | "output_text" => text_field("text"),
            "refusal" => text_field("refusal"),
            "image_url" | "input_image" | "image_file" => Ok(image_tokens(fields)),
            _ => Ok(measure(&canonical_json(part))),
        },
        None | Some(Value::Null) => Err(CountError::missing(format!("{}.type", path()))),
        Some(_) => Err(CountError::invalid(format!("{}.type", path()), "a string")),
    }
}

/// The fixed estimate of an image part: `detail` is on the part (Responses API) or inside
/// its `image_url` object (Chat Completions); a `null` one counts as absent.
fn image_tokens(part: &Map<String, Value>) -> u64 {
    let detail = [
        part.get("detail"),
        part.get("image_url").and_then(|url| url.get("detail")),
    ]
    .into_iter()
    .flatten()
    .find(|detail| !detail.is_null())
    .and_then(Value::as_str);
    if detail == Some("low") {
        IMAGE_TOKENS_LOW
    } else {
        IMAGE_TOKENS_DEFAULT
    }
}

fn field_tokens(value: &Value, measure: &impl Fn(&str) -> u64) -> u64 {
    match value {
        Value::Null => 0,
        Value::String(text) => measure(text),
        other => measure(&canonical_json(other)),
    }
}

/// Tokens of a `tools` or `functions` array.
fn definitions(
    field: &'static str,
    value: Option<&Value>,
    measure: &impl Fn(&str) -> u64,
) -> Result<u64, CountError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Array(items)) if items.is_empty() => Ok(0),
        Some(array @ Value::Array(_)) => Ok(measure(&canonical_json(array))),
        Some(_) => Err(CountError::invalid(
            field,
            match field {
                "tools" => "an array of tools",
                _ => "an array of functions",
            },
        )),
    }
}

/// Tokens of an embeddings `input` or a completions `prompt` (`field` names it in errors).
pub(crate) fn prompt_input(
    field: &'static str,
    value: &Value,
    measure: &impl Fn(&str) -> u64,
) -> Result<u64, CountError> {
    let token_ids = |items: &Vec<Value>| items.iter().all(Value::is_u64);
    match value {
        Value::String(text) => Ok(measure(text)),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok(items.iter().filter_map(Value::as_str).map(measure).sum())
        }
        Value::Array(items) if token_ids(items) => Ok(items.len() as u64),
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .enumerate()
            .map(|(j, item)| match item {
                Value::Array(ids) if token_ids(ids) => Ok(ids.len() as u64),
                _ => Err(CountError::invalid(
                    format!("{field}[{j}]"),
                    "an array of token ids",
                )),
            })
            .sum(),
        _ => Err(CountError::invalid(
            field,
            "a string, an array of strings, an array of token ids or an array of arrays of \
             token ids",
        )),
    }
}

/// `value` as canonical JSON (see the module docs), independent of serde_json's
/// `preserve_order` feature.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let mut sorted: Vec<(&String, &Value)> = fields.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (k, (key, item)) in sorted.into_iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_matches_pythons_compact_sorted_dump() {
        // Expected strings are Python's json.dumps(v, ensure_ascii=False,
        // separators=(",", ":"), sort_keys=True).
        let value = json!({
            "b": [1, 2.5, -3, 1.0, true, null],
            "a": {"z": "é\"\\\n\t\u{1}", "y": 100.0},
            "é": "日本",
        });
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"y":100.0,"z":"é\"\\\n\t\u0001"},"b":[1,2.5,-3,1.0,true,null],"é":"日本"}"#
        );
    }

    #[test]
    fn chat_prompts_follow_the_cookbook_recipe() {
        let enc = Encoding::O200kBase;
        let messages = vec![
            json!({"role": "system", "content": "You are a helpful assistant."}),
            json!({"role": "user", "name": "bob", "content": "Hello!"}),
        ];
        let expected = 3
            + (3 + enc.count("system") + enc.count("You are a helpful assistant."))
            + (3 + enc.count("user") + enc.count("bob") + 1 + enc.count("Hello!"));
        let count = count_chat_messages(enc, &messages, None, None).unwrap();
        assert_eq!(count.total, expected);
        assert_eq!(count.messages.len(), 2);
        assert_eq!(count.tools, 0);
        // The well-known count for "Hello!" as the only user message on gpt-4o is 9.
        let hello = vec![json!({"role": "user", "content": "Hello!"})];
        assert_eq!(
            count_chat_messages(enc, &hello, None, None).unwrap().total,
            9
        );
    }

    #[test]
    fn content_parts_count_their_text_and_a_fixed_price_per_image() {
        let enc = Encoding::Cl100kBase;
        let parts = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
        ]})];
        let expected = 3 + 3 + enc.count("user") + enc.count("What is in this image?") + 85 + 765;
        assert_eq!(
            count_chat_messages(enc, &parts, None, None).unwrap().total,
            expected
        );
    }

    #[test]
    fn tool_calls_and_definitions_count_their_canonical_json() {
        let enc = Encoding::O200kBase;
        let calls = json!([{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let messages = vec![
            json!({"role": "user", "content": "Weather in Paris?"}),
            json!({"role": "assistant", "content": null, "tool_calls": calls}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}),
        ];
        let count = count_chat_messages(enc, &messages, Some(&tools), None).unwrap();
        assert_eq!(count.tools, enc.count(&canonical_json(&tools)));
        assert_eq!(
            count.messages[1],
            3 + enc.count("assistant") + enc.count(&canonical_json(&calls))
        );
        assert_eq!(
            count.messages[2],
            3 + enc.count("tool") + enc.count("call_1") + enc.count("18C")
        );
        assert_eq!(
            count.total,
            3 + count.messages.iter().sum::<u64>() + count.tools
        );
        let empty = count_chat_messages(enc, &messages, Some(&json!([])), None).unwrap();
        assert_eq!(empty.tools, 0);
    }

    #[test]
    fn malformed_messages_are_refused_with_the_field_named() {
        let enc = Encoding::O200kBase;
        let user = json!({"role": "user", "content": "hi"});
        let cases = [
            (
                json!({"role": "user", "content": 5}),
                "messages[1].content must be a string or an array of parts",
            ),
            (json!("hello"), "messages[1] must be an object"),
            (
                json!({"content": "hi"}),
                "'messages[1].role' is a required property",
            ),
            (
                json!({"role": 1, "content": "hi"}),
                "messages[1].role must be a string",
            ),
            (
                json!({"role": "user", "name": 7, "content": "hi"}),
                "messages[1].name must be a string",
            ),
            (
                json!({"role": "user", "content": ["hi"]}),
                "messages[1].content[0] must be an object",
            ),
            (
                json!({"role": "user", "content": [{"text": "hi"}]}),
                "'messages[1].content[0].type' is a required property",
            ),
            (
                json!({"role": "user", "content": [{"type": "text", "text": 3}]}),
                "messages[1].content[0].text must be a string",
            ),
            (
                json!({"role": "assistant", "tool_calls": {}}),
                "messages[1].tool_calls must be an array of tool calls",
            ),
            (
                json!({"role": "assistant", "tool_calls": [1]}),
                "messages[1].tool_calls[0] must be an object",
            ),
        ];
        for (bad, message) in cases {
            let err = count_chat_messages(enc, &[user.clone(), bad], None, None).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        let err = count_chat_messages(enc, &[user], Some(&json!({})), None).unwrap_err();
        assert_eq!(err.to_string(), "tools must be an array of tools");
        assert_eq!(err.param(), Some("tools"));
    }

    #[test]
    fn embeddings_inputs_of_every_shape_are_counted() {
        let enc = Encoding::Cl100kBase;
        let hello = enc.count("hello world");
        let cases = [
            (json!("hello world"), hello),
            (json!(["hello world", "hello world"]), 2 * hello),
            (json!([1, 2, 3]), 3),
            (json!([[1, 2], [3], []]), 3),
            (json!([]), 0),
        ];
        for (input, expected) in cases {
            assert_eq!(
                count_embeddings_input(enc, &input).unwrap(),
                expected,
                "{input}"
            );
        }
        for bad in [json!(3), json!(["a", 1]), json!([-1]), json!({"a": 1})] {
            let err = count_embeddings_input(enc, &bad).unwrap_err();
            assert!(
                err.to_string().starts_with("input must be a string"),
                "{bad}: {err}"
            );
        }
        let err = count_prompt_input(enc, &json!([[1], ["x"]])).unwrap_err();
        assert_eq!(err.to_string(), "prompt[1] must be an array of token ids");
    }
}
