//! What a request may consume at most, and whether its prompt surely fits in the context
//! window without running the tokenizer.

use serde_json::Value;

use crate::count::{byte_len, chat_body, object, prompt_input, required};
use crate::error::CountError;
use crate::models::ModelLimits;

/// The kind of request a body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `chat/completions`: `messages`.
    ChatCompletions,
    /// Legacy `completions`: `prompt`.
    Completions,
    /// `embeddings`: `input`; produces no tokens.
    Embeddings,
}

/// The output ceiling the caller set for one choice: `max_completion_tokens`, else
/// `max_tokens`. `None` when neither is a non-negative integer, and always for embeddings.
pub fn requested_output_tokens(operation: Operation, body: &Value) -> Option<u64> {
    if operation == Operation::Embeddings {
        return None;
    }
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|field| body.get(*field).and_then(Value::as_u64))
}

/// The most tokens a request can consume: `prompt_tokens` plus, for each of
/// max(`n`, `best_of`, 1) choices, the requested output ceiling
/// ([`requested_output_tokens`]) or the model's `max_output` when none is set. Embeddings
/// consume their prompt only. Saturates instead of overflowing.
pub fn admission_estimate(
    operation: Operation,
    prompt_tokens: u64,
    body: &Value,
    limits: ModelLimits,
) -> u64 {
    if operation == Operation::Embeddings {
        return prompt_tokens;
    }
    let output = requested_output_tokens(operation, body).unwrap_or(u64::from(limits.max_output));
    let choices = ["n", "best_of"]
        .iter()
        .filter_map(|field| body.get(*field).and_then(Value::as_u64))
        .fold(1, u64::max);
    prompt_tokens.saturating_add(output.saturating_mul(choices))
}

/// An upper bound of the prompt tokens of `body`, computed without tokenizing: the same
/// walk as the exact count, with each text measured by its UTF-8 byte length (a token is
/// at least one byte). Fails on the same malformed bodies as the exact count.
pub fn prompt_upper_bound(operation: Operation, body: &Value) -> Result<u64, CountError> {
    match operation {
        Operation::ChatCompletions => Ok(chat_body(body, &byte_len)?.total),
        Operation::Completions => {
            prompt_input("prompt", required(object(body)?, "prompt")?, &byte_len)
        }
        Operation::Embeddings => {
            prompt_input("input", required(object(body)?, "input")?, &byte_len)
        }
    }
}

/// Whether a prompt of at most `prompt_upper_bound` tokens ([`prompt_upper_bound`]) plus
/// `reserve_output` surely fits in the model's context window. `true` is a guarantee: the
/// exact count fits too, and the tokenizer need not run. `false` only means "count to
/// know". Pass the requested output ([`requested_output_tokens`], else 0) to check what the
/// service checks, or 0 to check the prompt alone.
pub fn fits_without_counting(
    prompt_upper_bound: u64,
    reserve_output: u64,
    limits: ModelLimits,
) -> bool {
    prompt_upper_bound.saturating_add(reserve_output) <= u64::from(limits.context_window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GPT_4O: ModelLimits = ModelLimits::new(128_000, 16_384);

    #[test]
    fn the_estimate_reserves_the_requested_output_for_every_choice() {
        let chat = Operation::ChatCompletions;
        let cases = [
            (json!({}), 100 + 16_384),
            (json!({"max_tokens": 50}), 150),
            (json!({"max_completion_tokens": 40, "max_tokens": 50}), 140),
            (
                json!({"max_completion_tokens": null, "max_tokens": 50}),
                150,
            ),
            (json!({"max_tokens": 50, "n": 3}), 250),
            (json!({"max_tokens": 50, "n": 0}), 150),
            (json!({"max_tokens": 50, "n": 2, "best_of": 4}), 300),
            (json!({"max_tokens": "50"}), 100 + 16_384),
            (json!({"n": 2}), 100 + 2 * 16_384),
        ];
        for (body, expected) in cases {
            assert_eq!(
                admission_estimate(chat, 100, &body, GPT_4O),
                expected,
                "{body}"
            );
        }
        assert_eq!(
            admission_estimate(
                Operation::Completions,
                10,
                &json!({"max_tokens": 5, "best_of": 3}),
                GPT_4O
            ),
            25
        );
    }

    #[test]
    fn embeddings_are_estimated_at_their_prompt_only() {
        let body = json!({"input": "hello", "max_tokens": 50, "n": 4});
        let limits = ModelLimits::new(8_191, 0);
        assert_eq!(
            admission_estimate(Operation::Embeddings, 7, &body, limits),
            7
        );
        assert_eq!(requested_output_tokens(Operation::Embeddings, &body), None);
    }

    #[test]
    fn the_estimate_saturates_instead_of_overflowing() {
        let body = json!({"max_tokens": u64::MAX, "n": 2});
        assert_eq!(
            admission_estimate(Operation::ChatCompletions, 1, &body, GPT_4O),
            u64::MAX
        );
    }

    #[test]
    fn fitting_without_counting_compares_bound_and_reserve_with_the_window() {
        let small = ModelLimits::new(100, 50);
        assert!(fits_without_counting(60, 40, small));
        assert!(!fits_without_counting(61, 40, small));
        assert!(!fits_without_counting(u64::MAX, 1, small));
    }
}
