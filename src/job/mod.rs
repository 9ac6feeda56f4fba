//! The job model: identifiers, the state machine, new jobs and their validation, records and
//! their history.

mod finish;
mod id;
mod model;
mod state;

pub use finish::{Finish, FinishEffect};
pub use id::{JobId, WorkerId};
pub use model::{
    DEFAULT_QUEUE, JobEvent, JobRecord, Limits, MAX_DELAY, NewJob, Payload, Priority, RetryPolicy,
};
pub(crate) use model::{after, clamp_delay};
pub use state::JobState;
