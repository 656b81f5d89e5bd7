//! What can go wrong: a body that cannot be counted, a prompt that cannot be made to fit, a
//! model map that does not parse.

/// Why a request body could not be counted or truncated. Every variant is the caller's fault
/// (an Azure-style 400); the message names the offending field like the service does
/// (`messages[3].content must be a string or an array of parts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    /// The body is not a JSON object.
    #[error("the request body must be a JSON object")]
    BodyNotAnObject,
    /// A required field is absent (or null).
    #[error("'{path}' is a required property")]
    MissingField {
        /// The field, e.g. `messages` or `messages[2].role`.
        path: String,
    },
    /// A field has the wrong JSON type.
    #[error("{path} must be {expected}")]
    InvalidType {
        /// The field, e.g. `messages[3].content`.
        path: String,
        /// What it must be, e.g. `a string or an array of parts`.
        expected: &'static str,
    },
    /// Even with every droppable message dropped, the prompt and the reserved output do not
    /// fit in the context window.
    #[error(
        "This model's maximum context length is {context_window} tokens. However, even with \
         every message that may be dropped removed, the messages need {min_prompt_tokens} tokens \
         and {reserve_output} are reserved for the completion."
    )]
    CannotFit {
        /// Prompt tokens left once everything droppable is dropped.
        min_prompt_tokens: u64,
        /// Tokens the caller reserved for the output.
        reserve_output: u64,
        /// The model's context window.
        context_window: u64,
    },
    /// The body has more text to tokenize than one count may take.
    #[error(
        "the request has more text than this gateway counts in one request (more than {max_bytes} \
         bytes to tokenize)"
    )]
    TooLarge {
        /// The most text one count tokenizes.
        max_bytes: u64,
    },
}

impl CountError {
    pub(crate) fn invalid(path: impl Into<String>, expected: &'static str) -> Self {
        CountError::InvalidType {
            path: path.into(),
            expected,
        }
    }

    pub(crate) fn missing(path: impl Into<String>) -> Self {
        CountError::MissingField { path: path.into() }
    }

    /// The request parameter at fault, for the `param` of an Azure error body.
    pub fn param(&self) -> Option<&str> {
        match self {
            CountError::MissingField { path } | CountError::InvalidType { path, .. } => Some(path),
            CountError::CannotFit { .. } => Some("messages"),
            CountError::BodyNotAnObject | CountError::TooLarge { .. } => None,
        }
    }
}

/// Why an encoding or limits map (`"gpt-4o*=o200k_base,my-model=32000/4096"`) did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapParseError {
    /// An entry without `=`.
    #[error("`{entry}`: expected `model=value` (a model name, or a prefix ending in `*`)")]
    MissingEquals {
        /// The entry as written.
        entry: String,
    },
    /// An entry with nothing before `=`.
    #[error("`{entry}`: the model pattern is empty")]
    EmptyPattern {
        /// The entry as written.
        entry: String,
    },
    /// A `*` anywhere but at the end of the pattern.
    #[error("`{entry}`: only a single trailing `*` is supported (`gpt-4o*`)")]
    MisplacedWildcard {
        /// The entry as written.
        entry: String,
    },
    /// The same pattern twice.
    #[error("`{pattern}` is given more than once")]
    DuplicatePattern {
        /// The repeated pattern.
        pattern: String,
    },
    /// An encoding name other than `o200k_base` or `cl100k_base`.
    #[error("unknown encoding `{name}` (expected `o200k_base` or `cl100k_base`)")]
    UnknownEncoding {
        /// The name as written.
        name: String,
    },
    /// Limits that are not `context_window/max_output` in whole tokens.
    #[error("`{entry}`: expected `model=context_window/max_output`, e.g. `my-model=32000/4096`")]
    InvalidLimits {
        /// The entry as written.
        entry: String,
    },
    /// A zero context window, or an output ceiling above the context window.
    #[error("`{entry}`: the context window must be positive and at least the maximum output")]
    InconsistentLimits {
        /// The entry as written.
        entry: String,
    },
}
