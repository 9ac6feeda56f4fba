//! [`Payload`]: a job's JSON, validated once and shared.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::{Error, ErrorKind, Result};

/// A job's JSON payload (or result), kept as validated JSON text behind an `Arc`, so cloning is
/// cheap and backends store it without re-encoding.
///
/// ```
/// use jobforge::Payload;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Email { to: String }
///
/// let payload = Payload::from_value(&serde_json::json!({"to": "ada@example.com"}))?;
/// let email: Email = payload.decode()?;
/// assert_eq!(email.to, "ada@example.com");
/// assert_eq!(payload.len(), 24); // {"to":"ada@example.com"}
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The JSON `null` payload.
    #[must_use]
    pub fn null() -> Self {
        static NULL: std::sync::OnceLock<Payload> = std::sync::OnceLock::new();
        NULL.get_or_init(|| Payload(Arc::from(RawValue::NULL.to_owned())))
            .clone()
    }

    /// Serialize any value into a payload.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let raw = serde_json::value::to_raw_value(value)?;
        Ok(Self(Arc::from(raw)))
    }

    /// Take JSON text, checking that it is one valid JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<Self> {
        let raw = RawValue::from_string(text.into())
            .map_err(|e| Error::invalid_input("payload", format!("not valid JSON: {e}")))?;
        Ok(Self(Arc::from(raw)))
    }

    /// Decode into a typed value. A payload that does not fit `T` is an
    /// [`ErrorKind::Serialization`] error naming what did not fit.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.0.get()).map_err(|e| {
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "payload does not decode into {}: {e}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// Decode into an untyped JSON value.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        self.decode()
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Size of the JSON text in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the JSON text is empty (never true for a valid payload).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// Whether the payload is JSON `null`.
    #[must_use]
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }
}

impl Default for Payload {
    fn default() -> Self {
        Self::null()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 128;
        let text = self.as_str();
        if text.len() <= MAX {
            write!(f, "Payload({text})")
        } else {
            let mut end = MAX;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            write!(f, "Payload({}… {} bytes)", &text[..end], text.len())
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Self(Arc::from(raw)))
    }
}
