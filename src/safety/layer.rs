use crate::handler::Handler;

/// Wraps a value in another that implements the same trait: the shape of tower's `Layer`.
///
/// A layer is cheap configuration (`Clone`); [`layer`](Layer::layer) builds the wrapper. The
/// safety layers of this module implement `Layer<H>` for every [`Handler`] `H`, and the
/// timeout and breaker layers also for every queue and state backend.
///
/// A layer of your own, which logs each attempt:
///
/// ```
/// use async_trait::async_trait;
/// use jobforge::safety::{HandlerExt, Layer, TimeoutLayer};
/// use jobforge::{handler_fn, Handler, JobContext, JobError, KindConfig};
/// use serde_json::Value;
///
/// #[derive(Clone)]
/// struct LogLayer;
///
/// struct Log<H>(H);
///
/// impl<H: Handler> Layer<H> for LogLayer {
///     type Service = Log<H>;
///     fn layer(&self, inner: H) -> Log<H> {
///         Log(inner)
///     }
/// }
///
/// #[async_trait]
/// impl<H: Handler> Handler for Log<H> {
///     async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
///         println!("running {} attempt {}", ctx.id(), ctx.attempt());
///         self.0.handle(ctx).await
///     }
/// }
///
/// let handler = handler_fn(|_ctx: JobContext| async { Ok(Value::Null) })
///     .layer(TimeoutLayer::new(std::time::Duration::from_secs(5)))
///     .layer(LogLayer);
/// let config = KindConfig::new(handler);
/// # drop(config);
/// ```
pub trait Layer<S> {
    /// The wrapper this layer builds around an `S` (named after tower's).
    type Service;

    /// Wrap `inner`.
    fn layer(&self, inner: S) -> Self::Service;
}

impl<S, L: Layer<S> + ?Sized> Layer<S> for &L {
    type Service = L::Service;

    fn layer(&self, inner: S) -> Self::Service {
        (**self).layer(inner)
    }
}

/// `handler.layer(..)` on every [`Handler`]: wrap it in a layer, innermost first.
///
/// `h.layer(A).layer(B)` runs `B` first, then `A`, then `h`.
pub trait HandlerExt: Handler + Sized {
    /// Wrap this handler in `layer`.
    fn layer<L>(self, layer: L) -> L::Service
    where
        L: Layer<Self>,
        L::Service: Handler,
    {
        layer.layer(self)
    }
}

impl<H: Handler> HandlerExt for H {}
