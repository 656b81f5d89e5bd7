//! Token counting shared by the gateway and the Azure emulator, so both count a request the
//! same way.
//!
//! - [`Encoding`]: OpenAI's tokenizers (`o200k_base`, `cl100k_base`; exactly tiktoken's
//!   tokens, in linear time), loaded lazily once per process; [`EncodingMap`] says which one a model uses.
//! - [`ModelLimits`] / [`LimitsMap`]: context window and output ceiling per model family.
//! - [`Counter`]: prompt tokens of chat, embeddings and legacy completions bodies
//!   ([`Counter::count_chat`] and friends), and [`Counter::truncate_to_fit`].
//! - [`admission_estimate`]: what a request may consume at most (prompt + every possible
//!   output token), for quotas and routing.
//! - [`prompt_upper_bound`] and [`fits_without_counting`]: a bound computed without
//!   tokenizing, so the hot path runs the tokenizer only when the bound is not enough.
//!
//! The chat counting rules are in [`count`]'s documentation; `tests/fixtures/tokens/` at the
//! workspace root holds a conformance fixture computed independently with Python tiktoken.

mod admission;
pub mod count;
mod counter;
mod encoding;
mod error;
mod models;
mod truncate;

pub use admission::{
    admission_estimate, fits_without_counting, prompt_upper_bound, requested_output_tokens,
    Operation,
};
pub use count::{
    count_chat_messages, count_embeddings_input, count_prompt_input, ChatCount, CountBudget,
    Counted, IMAGE_TOKENS_DEFAULT, IMAGE_TOKENS_LOW, REPLY_PRIMING, TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
};
pub use counter::Counter;
pub use encoding::{warm_up, warm_up_all, Encoding};
pub use error::{CountError, MapParseError};
pub use models::{EncodingMap, LimitsMap, ModelLimits, FALLBACK_ENCODING, FALLBACK_LIMITS};
pub use truncate::Truncation;
