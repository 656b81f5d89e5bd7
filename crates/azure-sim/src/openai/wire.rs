//! Typed shapes of the JSON the emulator writes on its hot path (serialising these is much
//! cheaper than building `serde_json::Value` trees). Fields are declared in alphabetical
//! order, the order Azure's wire uses.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Severity {
    pub filtered: bool,
    pub severity: &'static str,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Detected {
    pub detected: bool,
    pub filtered: bool,
}

const SAFE_SEVERITY: Severity = Severity {
    filtered: false,
    severity: "safe",
};

/// Azure's per-choice content filter annotation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ContentFilterResults {
    pub hate: Severity,
    pub self_harm: Severity,
    pub sexual: Severity,
    pub violence: Severity,
}

/// Nothing filtered.
pub const SAFE: ContentFilterResults = ContentFilterResults {
    hate: SAFE_SEVERITY,
    self_harm: SAFE_SEVERITY,
    sexual: SAFE_SEVERITY,
    violence: SAFE_SEVERITY,
};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptFilter {
    pub hate: Severity,
    pub jailbreak: Detected,
    pub self_harm: Severity,
    pub sexual: Severity,
    pub violence: Severity,
}

/// Azure's per-prompt content filter annotation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptFilterResult {
    pub content_filter_results: PromptFilter,
    pub prompt_index: usize,
}

/// Annotations for `prompts` prompts, nothing filtered.
pub fn prompt_filter_results(prompts: usize) -> Vec<PromptFilterResult> {
    (0..prompts)
        .map(|prompt_index| PromptFilterResult {
            content_filter_results: PromptFilter {
                hate: SAFE_SEVERITY,
                jailbreak: Detected {
                    detected: false,
                    filtered: false,
                },
                self_harm: SAFE_SEVERITY,
                sexual: SAFE_SEVERITY,
                violence: SAFE_SEVERITY,
            },
            prompt_index,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CompletionTokensDetails {
    pub accepted_prediction_tokens: u64,
    pub audio_tokens: u64,
    pub reasoning_tokens: u64,
    pub rejected_prediction_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptTokensDetails {
    pub audio_tokens: u64,
    pub cached_tokens: u64,
}

/// Token usage of a chat completion or completion.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub completion_tokens: u64,
    pub completion_tokens_details: CompletionTokensDetails,
    pub prompt_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            completion_tokens: completion,
            completion_tokens_details: CompletionTokensDetails {
                accepted_prediction_tokens: 0,
                audio_tokens: 0,
                reasoning_tokens: 0,
                rejected_prediction_tokens: 0,
            },
            prompt_tokens: prompt,
            prompt_tokens_details: PromptTokensDetails {
                audio_tokens: 0,
                cached_tokens: 0,
            },
            total_tokens: prompt + completion,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub annotations: [(); 0],
    pub content: String,
    pub refusal: Option<()>,
    pub role: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub content_filter_results: ContentFilterResults,
    pub finish_reason: &'static str,
    pub index: usize,
    pub logprobs: Option<()>,
    pub message: AssistantMessage,
}

/// A non-streaming chat completion.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub choices: Vec<ChatChoice>,
    pub created: i64,
    pub id: &'a str,
    pub model: &'a str,
    pub object: &'static str,
    pub prompt_filter_results: Vec<PromptFilterResult>,
    pub system_fingerprint: &'a str,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct TextChoice {
    pub content_filter_results: ContentFilterResults,
    pub finish_reason: &'static str,
    pub index: usize,
    pub logprobs: Option<()>,
    pub text: String,
}

/// A non-streaming (legacy) completion.
#[derive(Debug, Serialize)]
pub struct TextCompletion<'a> {
    pub choices: Vec<TextChoice>,
    pub created: i64,
    pub id: &'a str,
    pub model: &'a str,
    pub object: &'static str,
    pub prompt_filter_results: Vec<PromptFilterResult>,
    pub system_fingerprint: &'a str,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct Embedding {
    pub embedding: EmbeddingData,
    pub index: usize,
    pub object: &'static str,
}

/// A vector as floats, or as base64 of little-endian f32 (`encoding_format: base64`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// An embeddings response.
#[derive(Debug, Serialize)]
pub struct EmbeddingList<'a> {
    pub data: Vec<Embedding>,
    pub model: &'a str,
    pub object: &'static str,
    pub usage: EmbeddingUsage,
}

/// Serialises to a JSON response (`application/json`).
pub fn json_response<T: Serialize>(value: &T) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    (
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// The `usage` member of a streaming chunk: absent (no `include_usage`), `null`, or the
/// usage itself (last chunk).
#[derive(Debug, Clone, Copy)]
pub enum ChunkUsage {
    Absent,
    Null,
    Present(Usage),
}

impl ChunkUsage {
    pub fn is_absent(&self) -> bool {
        matches!(self, ChunkUsage::Absent)
    }
}

impl Serialize for ChunkUsage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ChunkUsage::Present(usage) => usage.serialize(serializer),
            ChunkUsage::Absent | ChunkUsage::Null => serializer.serialize_none(),
        }
    }
}

/// A chunk's per-choice filter annotation: `{}` on role and finish chunks.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum ChunkFilter {
    Empty {},
    Safe(ContentFilterResults),
}

/// A chat chunk's delta.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Delta<'a> {
    Role {
        content: &'static str,
        refusal: Option<()>,
        role: &'static str,
    },
    Content {
        content: &'a str,
    },
    Empty {},
}

#[derive(Debug, Serialize)]
pub struct ChatChunkChoice<'a> {
    pub content_filter_results: ChunkFilter,
    pub delta: Delta<'a>,
    pub finish_reason: Option<&'static str>,
    pub index: usize,
    pub logprobs: Option<()>,
}

#[derive(Debug, Serialize)]
pub struct TextChunkChoice<'a> {
    pub content_filter_results: ChunkFilter,
    pub finish_reason: Option<&'static str>,
    pub index: usize,
    pub logprobs: Option<()>,
    pub text: &'a str,
}

/// One streaming chunk (chat or completions), `C` being its choice type.
#[derive(Debug, Serialize)]
pub struct Chunk<'a, C: Serialize> {
    pub choices: Vec<C>,
    pub created: i64,
    pub id: &'a str,
    pub model: &'a str,
    pub object: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_filter_results: Option<Vec<PromptFilterResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "ChunkUsage::is_absent")]
    pub usage: ChunkUsage,
}
