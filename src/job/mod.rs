//! The job model: identifiers, the state machine, new jobs and their validation, records and
//! their history.

mod finish;
mod id;
mod limits;
mod model;
mod payload;
mod state;

pub use finish::{Finish, FinishEffect};
pub use id::{JobId, WorkerId};
pub use limits::Limits;
pub(crate) use limits::nesting_depth;
pub use model::{
    DEFAULT_QUEUE, JobEvent, JobRecord, MAX_DELAY, NewJob, Priority, Progress, RetryPolicy,
};
pub(crate) use model::{after, check_queue_name, clamp_delay};
pub use payload::Payload;
pub use state::JobState;
