//! Who is calling: the [`Principal`] the authentication middleware puts in the request's
//! extensions, and the [`AuthError`] a refusal is answered with.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::problem;
use super::scope::{Scope, Scopes};

/// An authenticated caller: an API key or a JWT subject, its scopes, and the tenant it is
/// bound to, if any.
///
/// The authentication middleware inserts one into every request it lets through (when
/// authentication is off, [`Principal::unrestricted`]), so a handler takes it with
/// `Extension<Principal>` and never has to ask whether auth was configured.
///
/// # Tenancy: what handlers must do
///
/// A principal bound to a tenant sees only that tenant's jobs and memory. The router enforces
/// it, since only it knows the records:
///
/// - listing jobs: filter by [`Principal::tenant_filter`] (`Some(t)`: only tenant `t`);
/// - reading or cancelling one job: if `!principal.can_see_tenant(job.tenant.as_deref())`,
///   answer **404**, exactly as for a job that does not exist (a 403 would confirm the id);
/// - submitting: set the job's tenant to [`Principal::effective_tenant`] of the one in the
///   request (a tenant-bound caller cannot submit for another tenant);
/// - memory: the router keeps each tenant's namespaces apart (a tenant-bound caller's
///   namespace `n` is stored as `tenant:<length>:<tenant>:n` and shown back as `n`), so one
///   tenant can neither read nor overwrite another's entries.
///
/// ```
/// use jobforge::http::security::{Principal, Scope, Scopes};
///
/// let acme = Principal::new("key-1", Scopes::from_iter([Scope::JobsRead]), Some("acme".into()));
/// assert!(acme.require(Scope::JobsRead).is_ok());
/// assert!(acme.require(Scope::JobsWrite).is_err());
/// assert_eq!(acme.tenant_filter(), Some("acme"));
/// assert!(acme.can_see_tenant(Some("acme")));
/// assert!(!acme.can_see_tenant(Some("globex")));
/// assert!(!acme.can_see_tenant(None));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    id: String,
    scopes: Scopes,
    tenant: Option<String>,
}

impl Principal {
    /// A principal with this id (key id or JWT subject), scopes and tenant.
    pub fn new(id: impl Into<String>, scopes: Scopes, tenant: Option<String>) -> Self {
        Self {
            id: id.into(),
            scopes,
            tenant,
        }
    }

    /// The principal used when authentication is off (`--insecure-no-auth`, or a loopback
    /// bind without credentials configured): every scope, no tenant.
    #[must_use]
    pub fn unrestricted() -> Self {
        Self::new("anonymous", Scopes::all(), None)
    }

    /// The API key id or the JWT `sub`. Safe to log: never a secret.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The scopes granted.
    #[must_use]
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// The tenant the principal is bound to; `None` for a principal that sees every tenant.
    #[must_use]
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// `Ok` if the principal holds `scope` (or `admin`), else the `403` to answer.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope(scope))
        }
    }

    /// The tenant a listing must be restricted to: `Some(t)` for a tenant-bound principal,
    /// `None` when it may see every tenant.
    #[must_use]
    pub fn tenant_filter(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whether a record of tenant `record_tenant` is visible. A tenant-bound principal sees only
    /// its own tenant's records, not untenanted ones.
    #[must_use]
    pub fn can_see_tenant(&self, record_tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(mine) => record_tenant == Some(mine.as_str()),
        }
    }

    /// The tenant a job submitted with `requested` belongs to: the principal's own tenant (a
    /// request naming the same one, or none, is fine), or `requested` for a principal with no
    /// tenant. A tenant-bound principal naming another tenant is refused (`TenantMismatch`, a
    /// `403`; `jobforge::http::router` itself answers such a job body with a `422` naming the
    /// `tenant` field).
    pub fn effective_tenant(&self, requested: Option<&str>) -> Result<Option<String>, AuthError> {
        match (&self.tenant, requested) {
            (None, requested) => Ok(requested.map(str::to_owned)),
            (Some(mine), None) => Ok(Some(mine.clone())),
            (Some(mine), Some(asked)) if asked == mine => Ok(Some(mine.clone())),
            (Some(_), Some(_)) => Err(AuthError::TenantMismatch),
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &self.id)
            .field("scopes", &self.scopes.to_string())
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Why a request was refused by authentication or authorisation.
///
/// Answers say only what a client may know: a missing or bad credential is a `401` whose body
/// never echoes the credential nor says which check failed (a revoked key, a bad signature and
/// an expired token all read the same); a missing scope is a `403` naming the scope needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was sent.
    MissingCredentials,
    /// A credential was sent but is not valid (unknown, revoked, expired, bad signature...).
    InvalidCredentials,
    /// The credential is valid but lacks this scope.
    InsufficientScope(Scope),
    /// A tenant-bound credential named another tenant.
    TenantMismatch,
}

/// The `realm` of every `WWW-Authenticate` challenge.
pub const REALM: &str = "jobforge";

impl AuthError {
    /// The HTTP status this refusal is answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingCredentials | AuthError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::InsufficientScope(_) | AuthError::TenantMismatch => StatusCode::FORBIDDEN,
        }
    }

    fn challenge(&self) -> Option<String> {
        match self {
            AuthError::MissingCredentials => Some(format!("Bearer realm=\"{REALM}\"")),
            AuthError::InvalidCredentials => {
                Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""))
            }
            AuthError::InsufficientScope(scope) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            AuthError::TenantMismatch => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingCredentials => f.write_str(
                "no credentials: send `Authorization: Bearer <API key or JWT>` or `X-API-Key: <key>`",
            ),
            AuthError::InvalidCredentials => f.write_str(
                "the credentials are not valid for this server; use a current key or token",
            ),
            AuthError::InsufficientScope(scope) => {
                write!(f, "the credentials lack the scope this route needs: {scope}")
            }
            AuthError::TenantMismatch => {
                f.write_str("the credentials are bound to another tenant than the one requested")
            }
        }
    }
}

impl std::error::Error for AuthError {}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (slug, title) = match self.status() {
            StatusCode::UNAUTHORIZED => ("unauthorized", "Unauthorized"),
            _ => ("forbidden", "Forbidden"),
        };
        let mut response = problem(self.status(), slug, title, &self.to_string());
        if let Some(value) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(tenant: &str) -> Principal {
        Principal::new(
            "k",
            Scopes::from_iter([Scope::JobsRead]),
            Some(tenant.into()),
        )
    }

    #[test]
    fn tenancy_rules() {
        let acme = bound("acme");
        assert_eq!(acme.effective_tenant(None), Ok(Some("acme".into())));
        assert_eq!(acme.effective_tenant(Some("acme")), Ok(Some("acme".into())));
        assert_eq!(
            acme.effective_tenant(Some("x")),
            Err(AuthError::TenantMismatch)
        );
        let free = Principal::unrestricted();
        assert_eq!(free.effective_tenant(Some("x")), Ok(Some("x".into())));
        assert_eq!(free.effective_tenant(None), Ok(None));
        assert!(free.can_see_tenant(None) && free.can_see_tenant(Some("x")));
    }

    #[test]
    fn refusals_have_statuses_and_challenges() {
        let r = AuthError::MissingCredentials.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer realm=\"jobforge\""[..])
        );
        let r = AuthError::InsufficientScope(Scope::Admin).into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("insufficient_scope") && v.contains("admin"))
        );
        assert_eq!(
            AuthError::TenantMismatch.into_response().status(),
            StatusCode::FORBIDDEN
        );
    }
}
