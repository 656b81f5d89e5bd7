//! The one error of this crate: a filter that is not in the grammar.

/// Why a filter (or a piece of one built in code) was rejected.
///
/// `position` is a 0-based offset in `char`s (not bytes) into the input, pointing at the
/// token where the problem was found; for values built in code it is 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid expression: {message} at position {position}")]
pub struct ParseError {
    /// 0-based character offset of the offending token.
    pub position: usize,
    /// What is wrong, in words meant for the caller who wrote the filter.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}
