use async_trait::async_trait;

use super::{Outcome, Strategy};
use crate::handler::{Handler, JobContext};

/// Run the handler once per delivery; retries go back through the queue with backoff. The
/// default strategy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Direct {
    /// The name it is registered under.
    pub const NAME: &'static str = "direct";
}

#[async_trait]
impl Strategy for Direct {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome {
        Outcome::from_result(handler.handle(ctx).await)
    }
}
