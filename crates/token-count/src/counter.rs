//! The counter the gateway and the emulator hold: model maps plus the counting entry points.

use std::sync::Arc;

use serde_json::Value;

use crate::admission::Operation;
use crate::count::{
    chat_body, object, prompt_input, required, ChatCount, CountBudget, Counted, Meter,
};
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

    /// Prompt tokens of a body of any [`Operation`], counted within `budget`: the work is
    /// bounded whatever the body holds. Exact whenever every text has at most
    /// `budget.max_text_tokens` tokens; past the byte cap, [`CountError::TooLarge`].
    pub fn count_prompt_within(
        &self,
        operation: Operation,
        model: &str,
        body: &Value,
        budget: CountBudget,
    ) -> Result<Counted, CountError> {
        let meter = Meter::new(self.encoding(model), budget);
        let measure = |text: &str| meter.measure(text);
        let tokens = match operation {
            Operation::ChatCompletions => chat_body(body, &measure)?.total,
            Operation::Completions => {
                prompt_input("prompt", required(object(body)?, "prompt")?, &measure)?
            }
            Operation::Embeddings => {
                prompt_input("input", required(object(body)?, "input")?, &measure)?
            }
        };
        let exact = meter.finish()?;
        Ok(Counted { tokens, exact })
    }

    /// [`Counter::truncate_to_fit`] within `budget` (a message past the budget is as good as
    /// past the window: dropped if it may be, else the prompt cannot fit).
    pub fn truncate_to_fit_within(
        &self,
        model: &str,
        body: &mut Value,
        context_window: u64,
        reserve_output: u64,
        budget: CountBudget,
    ) -> Result<Truncation, CountError> {
        let meter = Meter::new(self.encoding(model), budget);
        let truncation = truncate(body, context_window, reserve_output, &|text: &str| {
            meter.measure(text)
        });
        meter.finish()?;
        truncation
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
        let encoding = self.encoding(model);
        truncate(body, context_window, reserve_output, &|text: &str| {
            encoding.count(text)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(text: &str) -> Value {
        json!({"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": text}]})
    }

    #[test]
    fn a_count_within_its_budget_is_exact() {
        let counter = Counter::default();
        let body = chat("Hello there, how are you today?");
        let exact = counter
            .count_prompt(Operation::ChatCompletions, "gpt-4o", &body)
            .unwrap();
        let budget = CountBudget {
            max_text_tokens: 1000,
            max_bytes: 1000,
        };
        let within = counter
            .count_prompt_within(Operation::ChatCompletions, "gpt-4o", &body, budget)
            .unwrap();
        assert_eq!(
            within,
            Counted {
                tokens: exact,
                exact: true
            }
        );
    }

    #[test]
    fn a_text_past_the_budget_stops_counting_and_says_so() {
        let counter = Counter::default();
        let body = chat(&"abcdefgh".repeat(50_000));
        let budget = CountBudget {
            max_text_tokens: 100,
            max_bytes: 1 << 20,
        };
        let within = counter
            .count_prompt_within(Operation::ChatCompletions, "gpt-4o", &body, budget)
            .unwrap();
        assert!(!within.exact);
        assert!(
            within.tokens > 100,
            "a lower bound past the budget: {within:?}"
        );
        let exact = counter
            .count_prompt(Operation::ChatCompletions, "gpt-4o", &body)
            .unwrap();
        assert!(within.tokens <= exact);
    }

    #[test]
    fn more_text_than_the_byte_cap_is_an_error() {
        let counter = Counter::default();
        let budget = CountBudget {
            max_text_tokens: 1_000_000,
            max_bytes: 10_000,
        };
        let body = json!({"input": ["x".repeat(6_000), "y".repeat(6_000)]});
        assert_eq!(
            counter.count_prompt_within(
                Operation::Embeddings,
                "text-embedding-3-small",
                &body,
                budget
            ),
            Err(CountError::TooLarge { max_bytes: 10_000 })
        );
    }

    #[test]
    fn truncation_within_a_budget_drops_a_message_past_it() {
        let counter = Counter::default();
        let mut body = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "word ".repeat(20_000)},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and now?"}]});
        let budget = CountBudget {
            max_text_tokens: 1_000,
            max_bytes: 1 << 20,
        };
        let truncation = counter
            .truncate_to_fit_within("gpt-4o", &mut body, 1_000, 10, budget)
            .unwrap();
        assert_eq!(truncation.dropped, vec![1]);
        let exact = counter
            .count_prompt(Operation::ChatCompletions, "gpt-4o", &body)
            .unwrap();
        assert_eq!(truncation.prompt_tokens, exact);
    }
}
