//! [`Limits`]: what a submitted job may be.

/// Limits checked when a job is submitted. Jobs that break them are rejected with an
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error naming the field.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest accepted kind name, in bytes. Default 128.
    pub max_kind_len: usize,
    /// Longest accepted queue name, in bytes. Default 128.
    pub max_queue_len: usize,
    /// Largest accepted payload, in bytes of JSON. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Most tags on one job. Default 32.
    pub max_tags: usize,
    /// Longest tag, tenant or idempotency key, in bytes. Default 256.
    pub max_label_len: usize,
    /// Most attempts a job may ask for. Default 1,000.
    pub max_attempts: u32,
    /// Deepest nesting of arrays and objects accepted in a payload. Default 64, at most 100:
    /// every store and the HTTP API read payloads back with a JSON parser that stops at 128
    /// levels, and the stores wrap a payload in a level or two of their own.
    pub max_payload_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_kind_len: 128,
            max_queue_len: 128,
            max_payload_bytes: 1024 * 1024,
            max_tags: 32,
            max_label_len: 256,
            max_attempts: 1_000,
            max_payload_depth: 64,
        }
    }
}

impl Limits {
    /// Set the largest accepted payload.
    #[must_use]
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Set the deepest accepted nesting of a payload (at most 100; more is taken as 100).
    #[must_use]
    pub fn with_max_payload_depth(mut self, depth: usize) -> Self {
        self.max_payload_depth = depth.min(Self::DEPTH_CEILING);
        self
    }

    /// The nesting no payload may exceed whatever the limits say (see `max_payload_depth`).
    pub(crate) const DEPTH_CEILING: usize = 100;
}

/// How deeply `json` (valid JSON text) nests arrays and objects, counted without recursion
/// and stopping once past `limit`.
pub(crate) fn nesting_depth(json: &str, limit: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > limit {
                        return deepest;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
