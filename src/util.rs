//! Small crate-private helpers shared by the in-memory backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Microseconds since the Unix epoch.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The time `us` microseconds after the Unix epoch (saturating at the latest representable).
pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `now + d`, in microseconds, saturating.
pub(crate) fn micros_after(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One shared copy of each kind and queue name, so a million jobs of one kind hold one string.
#[derive(Default)]
pub(crate) struct Names(HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Names {
    pub(crate) fn intern(&mut self, name: &str) -> Arc<str> {
        match self.0.get(name) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(name);
                self.0.insert(Arc::clone(&shared));
                shared
            }
        }
    }
}
