//! The counter the gateway and the emulator hold: model maps plus the counting entry points.

use std::sync::Arc;

use serde_json::Value;

use crate::admission::Operation;
use crate::count::{chat_body, object, prompt_input, required, ChatCount};
use crate::encoding::Encoding;
use crate::error::CountError;
use crate::models::{EncodingMap, LimitsMap, ModelLimits};
use crate::truncate::{truncate, Truncation};

/// Counts prompt tokens of request bodies for a model name. Cloning is cheap (the maps are
/// shared); the tokenizers are process-wide singletons built on first use.
///
/// Every method that takes a body fails with a [`CountError`] on a body whose shape the
/// service would refuse (a `messages[3].content` that is a number, ...).
#[derive(Debug, Clone, Default)]
pub struct Counter {
    maps: Arc<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    encodings: EncodingMap,
    limits: LimitsMap,
}

impl Counter {
    /// A counter with configured maps ([`Counter::default`] uses the built-in tables).
    pub fn new(encodings: EncodingMap, limits: LimitsMap) -> Self {
        Self {
            maps: Arc::new(Maps { encodings, limits }),
        }
    }

    /// The encoding `model` uses.
    pub fn encoding(&self, model: &str) -> Encoding {
        self.maps.encodings.encoding(model)
    }

    /// The limits of `model`.
    pub fn limits(&self, model: &str) -> ModelLimits {
        self.maps.limits.limits(model)
    }

    /// Prompt tokens of a chat completions body (rules in [`crate::count`]).
    pub fn count_chat(&self, model: &str, body: &Value) -> Result<ChatCount, CountError> {
        let encoding = self.encoding(model);
        chat_body(body, &|text: &str| encoding.count(text))
    }

    /// Prompt tokens of an embeddings body: its `input` as a string, an array of strings,
    /// an array of token ids or an array of arrays of token ids.
    pub fn count_embeddings(&self, model: &str, body: &Value) -> Result<u64, CountError> {
        let encoding = self.encoding(model);
        prompt_input("input", required(object(body)?, "input")?, &|text: &str| {
            encoding.count(text)
        })
    }

    /// Prompt tokens of a legacy completions body: its `prompt`, of the same shapes as an
    /// embeddings input.
    pub fn count_completions(&self, model: &str, body: &Value) -> Result<u64, CountError> {
        let encoding = self.encoding(model);
        prompt_input(
            "prompt",
            required(object(body)?, "prompt")?,
            &|text: &str| encoding.count(text),
        )
    }

    /// Prompt tokens of a body of any [`Operation`].
    pub fn count_prompt(
        &self,
        operation: Operation,
        model: &str,
        body: &Value,
    ) -> Result<u64, CountError> {
        match operation {
            Operation::ChatCompletions => Ok(self.count_chat(model, body)?.total),
            Operation::Completions => self.count_completions(model, body),
            Operation::Embeddings => self.count_embeddings(model, body),
        }
    }

    /// Drops the oldest droppable messages of a chat body until its prompt plus
    /// `reserve_output` fits in `context_window`.
    ///
    /// Never dropped: `system` and `developer` messages, and the last `user` message. An
    /// assistant message that made tool (or function) calls is dropped together with the
    /// `tool` (or `function`) results that directly follow it, so no result is left without
    /// its call. On error the body is left as it was.
    pub fn truncate_to_fit(
        &self,
        model: &str,
        body: &mut Value,
        context_window: u64,
        reserve_output: u64,
    ) -> Result<Truncation, CountError> {
        truncate(self.encoding(model), body, context_window, reserve_output)
    }
}
