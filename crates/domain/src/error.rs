//! The error of a value that does not parse or breaks a rule.

/// A value that does not parse or breaks a rule; the message names the value and the rule
/// (`user name "1a" must not start with a digit`). The application answers it as invalid
/// input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid(message.into())
    }
}
