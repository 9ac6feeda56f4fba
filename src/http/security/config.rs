//! [`SecurityConfig`] (plain settings) and [`Security`] (built: the layers to apply).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;

use super::api_key::{ApiKeyEntry, ApiKeyStore};
use super::auth::{Guard, auth_guard, client_guard};
use super::client_ip::TrustedProxies;
use super::headers::{cors_layer, with_security_headers};
use super::jwt::{JwtConfig, JwtVerifier};
use super::rate_limit::{KeyedLimiter, RateLimits};
use super::tls::TlsPaths;
use crate::{Error, ErrorKind, Result};

/// Every security setting of the HTTP API.
///
/// The default has no credentials (so [`check_bind`](Self::check_bind) refuses a public
/// address), `/health` as the only public path, the default [`RateLimits`], no trusted proxy,
/// no CORS origin and no TLS.
///
/// ```
/// use jobforge::http::security::{ApiKey, ApiKeyEntry, SecurityConfig};
///
/// let key = ApiKey::generate()?;
/// let mut config = SecurityConfig::default();
/// assert!(config.check_bind("0.0.0.0:8080".parse().unwrap()).is_err());
/// assert!(config.check_bind("127.0.0.1:8080".parse().unwrap()).is_ok());
///
/// config.api_keys.push(ApiKeyEntry::new(key.id(), key.sha256_hex(), "jobs:read".parse()?, None)?);
/// assert!(config.check_bind("0.0.0.0:8080".parse().unwrap()).is_ok());
/// let security = config.build()?;
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// API keys, as hashes.
    pub api_keys: Vec<ApiKeyEntry>,
    /// JWT verification, if bearer JWTs are accepted.
    pub jwt: Option<JwtConfig>,
    /// Paths served without credentials, each with what lies below it (`/docs` covers
    /// `/docs/index.css`). Default `["/health"]`; add `/ready` and `/metrics` for probes and
    /// scrapers, `/docs` and `/openapi.json` to browse the API's documentation.
    pub public_paths: Vec<String>,
    /// Rate limits; `None` turns them off (only behind a gateway that limits instead).
    pub rate_limits: Option<RateLimits>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Browser origins allowed by CORS; empty: none.
    pub cors_origins: Vec<String>,
    /// Serve TLS from these files.
    pub tls: Option<TlsPaths>,
    /// Serve without authentication even on a non-loopback address.
    pub insecure_no_auth: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            jwt: None,
            public_paths: vec!["/health".to_owned()],
            rate_limits: Some(RateLimits::default()),
            trusted_proxies: TrustedProxies::none(),
            cors_origins: Vec::new(),
            tls: None,
            insecure_no_auth: false,
        }
    }
}

impl SecurityConfig {
    /// Whether any credential is configured (API keys or JWT).
    #[must_use]
    pub fn auth_configured(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some()
    }

    /// Refuse to serve on `addr` without authentication unless it is a loopback address or
    /// [`insecure_no_auth`](Self::insecure_no_auth) is set. The server calls it before binding.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<()> {
        if self.auth_configured() || self.insecure_no_auth || is_loopback(addr.ip()) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Configuration,
            format!(
                "refusing to serve on {addr} without authentication: anyone who can reach it \
                 could submit and read jobs. Configure API keys (--api-key-hash or \
                 --api-keys-file; `jobforge-server keys generate` makes one) or JWT \
                 (--jwt-algorithm ...), bind to 127.0.0.1, or pass --insecure-no-auth if a \
                 gateway in front authenticates"
            ),
        ))
    }

    /// Check everything and build the layers.
    pub fn build(self) -> Result<Security> {
        let auth_enabled = self.auth_configured();
        if self.insecure_no_auth && auth_enabled {
            return Err(Error::new(
                ErrorKind::Configuration,
                "--insecure-no-auth contradicts the configured credentials: drop one of them",
            ));
        }
        for path in &self.public_paths {
            // A public path covers what lies below it, so `/` would open everything.
            let trimmed = path.trim_end_matches('/');
            if !path.starts_with('/')
                || trimmed.is_empty()
                || trimmed == "/v1"
                || trimmed.starts_with("/v1/")
            {
                return Err(Error::invalid_input(
                    "public path",
                    format!("{path:?} must start with '/', not be '/' itself, and lie outside /v1"),
                ));
            }
        }
        let api_keys = if self.api_keys.is_empty() {
            None
        } else {
            Some(Arc::new(ApiKeyStore::new(self.api_keys)?))
        };
        let jwt = self.jwt.map(JwtVerifier::new).transpose()?;
        let (per_ip, per_principal) = match &self.rate_limits {
            None => (None, None),
            Some(limits) => {
                limits.validate()?;
                let max = limits.max_tracked_keys;
                (
                    Some(KeyedLimiter::new(limits.per_ip, max)?),
                    Some([
                        KeyedLimiter::new(limits.read, max)?,
                        KeyedLimiter::new(limits.write, max)?,
                        KeyedLimiter::new(limits.admin, max)?,
                    ]),
                )
            }
        };
        // Checked now so a bad origin fails at start, not at the first request.
        cors_layer(&self.cors_origins)?;
        let guard = Guard {
            api_keys: api_keys.clone(),
            jwt,
            auth_enabled,
            public_paths: self.public_paths,
            trusted_proxies: self.trusted_proxies,
            per_ip,
            per_principal,
            tls: self.tls.is_some(),
        };
        Ok(Security {
            guard: Arc::new(guard),
            api_keys,
            cors_origins: Arc::new(self.cors_origins),
            tls: self.tls,
        })
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    super::client_ip::canonical(ip).is_loopback()
}

/// The built security layers; cheap to clone.
///
/// # Wiring it into the router
///
/// ```
/// use axum::{Router, routing::get};
/// use jobforge::http::security::SecurityConfig;
///
/// let security = SecurityConfig::default().build()?;
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .route("/v1/jobs", get(|| async { "[]" }));
/// // 1. authentication, scopes and rate limits on every route (public paths pass);
/// // 2. CORS and the security headers outermost, so refusals carry them too.
/// let app = security.apply(app);
/// // Serve with peer addresses, which the per-client limit needs:
/// // axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
/// # Ok::<(), jobforge::Error>(())
/// ```
///
/// Handlers then take `Extension<Principal>` and filter by tenant as
/// [`Principal`](super::Principal) describes.
#[derive(Clone)]
pub struct Security {
    guard: Arc<Guard>,
    api_keys: Option<Arc<ApiKeyStore>>,
    cors_origins: Arc<Vec<String>>,
    tls: Option<TlsPaths>,
}

impl Security {
    /// Authentication, scope checks and rate limits around every route of `router`: the
    /// per-address limit first, then credentials, then the route's scope, then the
    /// per-principal limit. Public paths skip the credential part (not the address limit).
    /// Apply it to the whole router, after the routes (and their fallback) are added, so
    /// unknown paths are refused like known ones and reveal nothing. Applied to a router that
    /// is then `nest`ed, it still judges the full path the client sent (`OriginalUri`).
    pub fn protect<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router
            .layer(from_fn_with_state(self.guard.clone(), auth_guard))
            .layer(from_fn_with_state(self.guard.clone(), client_guard))
    }

    /// CORS (if origins are configured) and the security headers (HSTS when TLS is
    /// configured), on every response. Apply it last, outermost.
    pub fn harden<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        let router = match cors_layer(&self.cors_origins) {
            Ok(Some(cors)) => router.layer(cors),
            // Checked at build; an error here cannot happen, and no CORS is the safe side.
            Ok(None) | Err(_) => router,
        };
        with_security_headers(router, self.tls.is_some())
    }

    /// [`protect`](Self::protect) then [`harden`](Self::harden).
    pub fn apply<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        self.harden(self.protect(router))
    }

    /// The configured API keys, to revoke one at run time.
    #[must_use]
    pub fn api_keys(&self) -> Option<&ApiKeyStore> {
        self.api_keys.as_deref()
    }

    /// Whether requests are authenticated (false: every request acts as
    /// [`Principal::unrestricted`](super::Principal::unrestricted)).
    #[must_use]
    pub fn auth_enabled(&self) -> bool {
        self.guard.auth_enabled
    }

    /// The TLS files, if TLS is configured.
    #[must_use]
    pub fn tls(&self) -> Option<&TlsPaths> {
        self.tls.as_ref()
    }

    /// How many client addresses the per-address limiter tracks now.
    #[must_use]
    pub fn tracked_clients(&self) -> usize {
        self.guard.per_ip.as_ref().map_or(0, KeyedLimiter::len)
    }
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("auth_enabled", &self.guard.auth_enabled)
            .field("api_keys", &self.api_keys)
            .field("jwt", &self.guard.jwt)
            .field("public_paths", &self.guard.public_paths)
            .field("cors_origins", &self.cors_origins)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_cover_what_lies_below_and_never_the_api() {
        for bad in ["/", "//", "/v1", "/v1/jobs", "health"] {
            let config = SecurityConfig {
                public_paths: vec![bad.to_owned()],
                ..SecurityConfig::default()
            };
            assert!(config.build().is_err(), "{bad:?} must be refused");
        }
        let config = SecurityConfig {
            public_paths: vec!["/health".into(), "/docs/".into()],
            ..SecurityConfig::default()
        };
        let security = config.build().unwrap();
        let guard = &security.guard;
        for open in ["/health", "/docs", "/docs/", "/docs/index.css"] {
            assert!(guard.is_public(open), "{open}");
        }
        for closed in ["/healthz", "/docsx", "/v1/jobs", "/", "/metrics"] {
            assert!(!guard.is_public(closed), "{closed}");
        }
    }

    #[test]
    fn bind_rules() {
        let open = SecurityConfig::default();
        for addr in ["127.0.0.1:1", "[::1]:1", "127.8.0.1:1"] {
            assert!(open.check_bind(addr.parse().unwrap()).is_ok(), "{addr}");
        }
        for addr in ["0.0.0.0:1", "[::]:1", "10.0.0.1:1"] {
            let err = open.check_bind(addr.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains("--insecure-no-auth"), "{err}");
        }
        let insecure = SecurityConfig {
            insecure_no_auth: true,
            ..SecurityConfig::default()
        };
        assert!(insecure.check_bind("0.0.0.0:1".parse().unwrap()).is_ok());
    }

    #[test]
    fn build_checks() {
        let bad_path = SecurityConfig {
            public_paths: vec!["/v1/jobs".into()],
            ..SecurityConfig::default()
        };
        assert!(bad_path.build().is_err());
        let bad_origin = SecurityConfig {
            cors_origins: vec!["*".into()],
            ..SecurityConfig::default()
        };
        assert!(bad_origin.build().is_err());
        let contradiction = SecurityConfig {
            insecure_no_auth: true,
            api_keys: vec![
                ApiKeyEntry::new("a", "0".repeat(64), "admin".parse().unwrap(), None).unwrap(),
            ],
            ..SecurityConfig::default()
        };
        assert!(contradiction.build().is_err());
        let security = SecurityConfig::default().build().unwrap();
        assert!(!security.auth_enabled());
        assert_eq!(security.tracked_clients(), 0);
    }
}
