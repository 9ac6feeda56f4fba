use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::handler::JobContext;

type KeyFn = dyn for<'a> Fn(&'a JobContext) -> Cow<'a, str> + Send + Sync;

/// Which key a keyed layer (circuit breaker, rate limit, bulkhead) files a job under: jobs
/// with the same key share one breaker, one limit, one bulkhead.
///
/// The default is the job's kind. Keys borrowed from the job (kind, tenant, a fixed key) cost
/// no allocation per call; [`kind_and_tenant`](KeyBy::kind_and_tenant) and custom keys that
/// build a `String` do.
///
/// ```
/// use std::borrow::Cow;
/// use jobforge::safety::KeyBy;
///
/// let by_kind = KeyBy::kind();
/// let by_tenant = KeyBy::tenant();
/// let one_for_all = KeyBy::fixed("payments-api");
/// // Any function of the job; borrow from it to avoid allocating.
/// let by_first_tag = KeyBy::custom(|ctx| match ctx.record().tags.first() {
///     Some(tag) => Cow::Borrowed(tag.as_str()),
///     None => Cow::Borrowed("untagged"),
/// });
/// # drop((by_kind, by_tenant, one_for_all, by_first_tag));
/// ```
#[derive(Clone)]
pub struct KeyBy(By);

#[derive(Clone)]
enum By {
    Kind,
    Tenant(String),
    KindAndTenant,
    Fixed(String),
    Custom(Arc<KeyFn>),
}

impl KeyBy {
    /// The key jobs without a tenant share under [`KeyBy::tenant`] and
    /// [`KeyBy::kind_and_tenant`].
    pub const NO_TENANT: &'static str = "(no tenant)";

    /// One key per job kind (the default).
    #[must_use]
    pub fn kind() -> Self {
        Self(By::Kind)
    }

    /// One key per tenant; jobs without a tenant share [`KeyBy::NO_TENANT`].
    #[must_use]
    pub fn tenant() -> Self {
        Self(By::Tenant(Self::NO_TENANT.to_owned()))
    }

    /// One key per kind and tenant, `kind/tenant` (builds a `String` per call).
    #[must_use]
    pub fn kind_and_tenant() -> Self {
        Self(By::KindAndTenant)
    }

    /// The same key for every job.
    #[must_use]
    pub fn fixed(key: impl Into<String>) -> Self {
        Self(By::Fixed(key.into()))
    }

    /// Any function of the job. Return `Cow::Borrowed` of something the job holds to keep the
    /// call free of allocation.
    #[must_use]
    pub fn custom<F>(f: F) -> Self
    where
        F: for<'a> Fn(&'a JobContext) -> Cow<'a, str> + Send + Sync + 'static,
    {
        Self(By::Custom(Arc::new(f)))
    }

    /// The key for `ctx`.
    #[must_use]
    pub fn key<'a>(&'a self, ctx: &'a JobContext) -> Cow<'a, str> {
        match &self.0 {
            By::Kind => Cow::Borrowed(ctx.kind()),
            By::Tenant(none) => Cow::Borrowed(ctx.record().tenant.as_deref().unwrap_or(none)),
            By::KindAndTenant => Cow::Owned(format!(
                "{}/{}",
                ctx.kind(),
                ctx.record().tenant.as_deref().unwrap_or(Self::NO_TENANT)
            )),
            By::Fixed(key) => Cow::Borrowed(key),
            By::Custom(f) => f(ctx),
        }
    }

    /// The key as a `&String` where the job (or this value) holds one, for maps keyed by
    /// `String` that can only be searched with a `&String` (governor's keyed limiter).
    #[allow(clippy::owned_cow)] // governor's keyed store is searched with `&String`
    pub(crate) fn key_string<'a>(&'a self, ctx: &'a JobContext) -> Cow<'a, String> {
        match &self.0 {
            By::Kind => Cow::Borrowed(&ctx.record().kind),
            By::Tenant(none) => Cow::Borrowed(ctx.record().tenant.as_ref().unwrap_or(none)),
            By::Fixed(key) => Cow::Borrowed(key),
            By::KindAndTenant | By::Custom(_) => Cow::Owned(self.key(ctx).into_owned()),
        }
    }
}

impl Default for KeyBy {
    fn default() -> Self {
        Self::kind()
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            By::Kind => f.write_str("KeyBy::kind"),
            By::Tenant(_) => f.write_str("KeyBy::tenant"),
            By::KindAndTenant => f.write_str("KeyBy::kind_and_tenant"),
            By::Fixed(key) => write!(f, "KeyBy::fixed({key:?})"),
            By::Custom(_) => f.write_str("KeyBy::custom(..)"),
        }
    }
}
