//! Memory: namespaced entries handlers and hosts keep, a record of every execution, and
//! *reflection* — per-kind statistics and a recommendation the adaptive strategy acts on.

mod in_memory;
pub mod reflection;
mod types;
pub(crate) mod validate;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use in_memory::{InMemoryMemory, InMemoryMemoryConfig};
pub use reflection::{LatencySummary, percentile_cont, recommend, reflect_on};
pub use types::{
    Entry, EntryQuery, ErrorClassCount, ExecutionRecord, Memory, NewEntry, OutcomeClass,
    Recommendation, Reflection, StrategyChoice, Window,
};
pub use validate::{MAX_KEY_BYTES, MAX_NAMESPACE_BYTES, MAX_SEARCH_LIMIT};
