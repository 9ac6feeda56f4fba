//! The job model: identifiers, the state machine, new jobs and their validation, records and
//! their history.

mod id;
mod model;
mod state;

pub use id::{JobId, WorkerId};
pub use model::{
    DEFAULT_QUEUE, JobEvent, JobRecord, Limits, NewJob, Payload, Priority, RetryPolicy,
};
pub use state::JobState;
