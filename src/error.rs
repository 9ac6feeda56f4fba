//! The crate's one error type.
//!
//! Every fallible jobforge operation returns [`Result<T>`](crate::Result), whose error is an
//! [`Error`] carrying an [`ErrorKind`] (what went wrong, stable to match on), a message meant
//! for a person (what was wrong and what to do), and, for backend failures, the underlying
//! error as its [`source`](std::error::Error::source).
//!
//! Errors that a job's *handler* returns are a different thing: see
//! [`JobError`](crate::JobError).

use std::fmt;

/// What kind of failure an [`Error`] is. Match on this, never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Input was rejected (a job, a filter, a configuration value); the message names the field.
    InvalidInput,
    /// The thing asked for does not exist.
    NotFound,
    /// A compare-and-set lost: another actor changed the record first. Re-read and decide again.
    Conflict,
    /// A backend (queue, state or memory store) failed or could not be reached. Usually transient.
    Backend,
    /// A configured limit was reached (capacity, size). Retrying later may succeed.
    LimitExceeded,
    /// The operation did not finish in time.
    Timeout,
    /// The orchestrator or worker pool is shutting down and no longer accepts this operation.
    ShuttingDown,
    /// A value could not be serialized or deserialized.
    Serialization,
    /// The configuration is inconsistent (for example a strategy name that is not registered).
    Configuration,
}

impl ErrorKind {
    /// A short, stable, lowercase name for the kind (used in logs and HTTP problem types).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Backend => "backend",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Serialization => "serialization",
            ErrorKind::Configuration => "configuration",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every jobforge operation.
///
/// ```
/// use jobforge::{Error, ErrorKind};
///
/// let err = Error::invalid_input("kind", "must not be empty");
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert_eq!(err.field(), Some("kind"));
/// assert!(!err.is_retryable());
/// assert!(err.to_string().contains("kind"));
/// ```
#[derive(thiserror::Error)]
#[error("{kind}: {message}{}", SourceSuffix(.source.as_deref()))]
pub struct Error {
    kind: ErrorKind,
    message: String,
    field: Option<&'static str>,
    #[source]
    source: Option<BoxError>,
}

/// Displays ` (source)` after the message when there is one.
struct SourceSuffix<'a>(Option<&'a (dyn std::error::Error + Send + Sync + 'static)>);

impl fmt::Display for SourceSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(source) => write!(f, " ({source})"),
            None => Ok(()),
        }
    }
}

impl Error {
    /// A new error of `kind` with a message for a person.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            source: None,
        }
    }

    /// Invalid input in `field`; the message says what was wrong with it.
    pub fn invalid_input(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: format!("invalid `{field}`: {}", message.into()),
            field: Some(field),
            source: None,
        }
    }

    /// A backend failure, keeping the backend's own error as the source.
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::new(ErrorKind::Backend, message).with_source(source)
    }

    /// Attach the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The same error about `field` instead (a field of a nested value, named by its path).
    #[must_use]
    pub(crate) fn in_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// The same error about one item of a batch: the message starts with which.
    #[must_use]
    pub(crate) fn about(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind prefix.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For [`ErrorKind::InvalidInput`], the name of the offending field.
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// Whether trying the same operation again later may succeed (backend trouble, timeouts,
    /// lost compare-and-set races, full buffers), as opposed to errors that will repeat.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Backend
                | ErrorKind::Timeout
                | ErrorKind::Conflict
                | ErrorKind::LimitExceeded
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(field) = self.field {
            d.field("field", &field);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::new(ErrorKind::Serialization, "JSON (de)serialization failed").with_source(err)
    }
}

/// `Result` with jobforge's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_kinds() {
        assert!(Error::new(ErrorKind::Backend, "down").is_retryable());
        assert!(Error::new(ErrorKind::Conflict, "lost").is_retryable());
        assert!(!Error::new(ErrorKind::InvalidInput, "bad").is_retryable());
        assert!(!Error::new(ErrorKind::NotFound, "gone").is_retryable());
    }

    #[test]
    fn source_is_kept_and_displayed() {
        let io = std::io::Error::other("connection refused");
        let err = Error::backend("queue unreachable", io);
        assert!(std::error::Error::source(&err).is_some());
        assert!(err.to_string().contains("connection refused"));
        assert!(format!("{err:?}").contains("Backend"));
    }
}
