//! Safety layers: composable wrappers in the shape of tower's `Layer` around a
//! [`Handler`](crate::Handler) (and, for timeouts, around a [`QueueManager`](crate::QueueManager)
//! or [`StateManager`](crate::StateManager)).

mod clock;
mod key;
#[allow(dead_code)] // used by the keyed layers that follow
mod keyed_map;
mod layer;
mod timeout;

pub use clock::{Clock, ManualClock, SystemClock};
pub use key::KeyBy;
pub use layer::{HandlerExt, Layer};
pub use timeout::{Timeout, TimeoutLayer};
