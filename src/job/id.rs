use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

/// A job's identifier: a UUID v7, so identifiers sort by creation time (which is what keyset
/// pagination walks).
///
/// ```
/// use jobforge::JobId;
///
/// let a = JobId::new();
/// let b = JobId::new();
/// assert!(a < b);
/// let parsed: JobId = a.to_string().parse()?;
/// assert_eq!(parsed, a);
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

// Ordered as one big-endian 128-bit number: the same order as the UUID's bytes, compared in
// one instruction instead of a byte-slice comparison (ids are B-tree keys).
impl Ord for JobId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_u128().cmp(&other.0.as_u128())
    }
}

impl PartialOrd for JobId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl JobId {
    /// A fresh, time-ordered identifier.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wrap an existing UUID (for example one read back from a database).
    #[must_use]
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    #[test]
    fn order_matches_uuid_byte_order() {
        let mut ids: Vec<JobId> = (0..500).map(|_| JobId::new()).collect();
        ids.push(JobId::from_uuid(Uuid::from_u128(u128::MAX)));
        ids.push(JobId::from_uuid(Uuid::nil()));
        fastrand::shuffle(&mut ids);
        let mut by_ord = ids.clone();
        by_ord.sort();
        let mut by_bytes = ids;
        by_bytes.sort_by(|a, b| a.as_uuid().as_bytes().cmp(b.as_uuid().as_bytes()));
        assert_eq!(by_ord, by_bytes);
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| Error::invalid_input("id", format!("`{s}` is not a UUID: {e}")))
    }
}

/// The identity of one worker pool, recorded as the owner of the leases it holds and in job
/// history. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// A worker id from a name the host chooses (for example `host-1/pool-a`).
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    /// A unique worker id made of `prefix` and a fresh UUID.
    pub fn unique(prefix: &str) -> Self {
        Self::new(format!("{prefix}-{}", Uuid::now_v7().simple()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({})", &self.0)
    }
}
