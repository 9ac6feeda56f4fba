//! JWT bearer tokens: the algorithm pinned by configuration, `exp`/`nbf`/`iss`/`aud` checked.
//!
//! One [`JwtKey`] decides the one accepted algorithm: an HS256 secret accepts only HS256, an
//! RSA public key only RS256, an Ed25519 public key only EdDSA. A token whose header names any
//! other algorithm (`none`, or HS256 signed with the RSA public key as its secret: the
//! classic algorithm-confusion attack) is refused before its signature is looked at.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::principal::{AuthError, Principal};
use super::scope::Scopes;
use crate::{Error, ErrorKind, Result};

/// Shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 requires.
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Longest token looked at; longer ones are refused without decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The key that verifies tokens, and with it the one algorithm accepted.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with this shared secret (at least 32 bytes).
    Hs256Secret(Vec<u8>),
    /// RS256 with this RSA public key (PEM, `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    Rs256PublicPem(Vec<u8>),
    /// EdDSA (Ed25519) with this public key (PEM, `BEGIN PUBLIC KEY`).
    EdDsaPublicPem(Vec<u8>),
}

impl JwtKey {
    /// The algorithm this key pins.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            JwtKey::Hs256Secret(_) => Algorithm::HS256,
            JwtKey::Rs256PublicPem(_) => Algorithm::RS256,
            JwtKey::EdDsaPublicPem(_) => Algorithm::EdDSA,
        }
    }

    fn decoding_key(&self) -> Result<DecodingKey> {
        let bad = |what: &str, e: jsonwebtoken::errors::Error| {
            Error::new(
                ErrorKind::Configuration,
                format!("the JWT {what} is not usable: {e}; give a PEM `PUBLIC KEY`"),
            )
        };
        match self {
            JwtKey::Hs256Secret(secret) => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(Error::invalid_input(
                        "jwt secret",
                        format!(
                            "an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes \
                             (it is {}); generate one with `openssl rand -base64 48`",
                            secret.len()
                        ),
                    ));
                }
                Ok(DecodingKey::from_secret(secret))
            }
            JwtKey::Rs256PublicPem(pem) => {
                DecodingKey::from_rsa_pem(pem).map_err(|e| bad("RSA public key", e))
            }
            JwtKey::EdDsaPublicPem(pem) => {
                DecodingKey::from_ed_pem(pem).map_err(|e| bad("Ed25519 public key", e))
            }
        }
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Hs256Secret(_) => f.write_str("Hs256Secret(<redacted>)"),
            JwtKey::Rs256PublicPem(_) => f.write_str("Rs256PublicPem(..)"),
            JwtKey::EdDsaPublicPem(_) => f.write_str("EdDsaPublicPem(..)"),
        }
    }
}

/// How bearer JWTs are verified.
///
/// `issuer` and `audience` are required: a token must carry exactly these `iss` and `aud`
/// (one of its `aud` values), an `exp` in the future and a `sub`, and an `nbf`, if present, in
/// the past, each give or take `leeway`.
///
/// ```
/// use jobforge::http::security::{JwtConfig, JwtKey, JwtVerifier};
///
/// let config = JwtConfig::new(JwtKey::Hs256Secret(vec![7; 32]), "https://issuer.example", "jobforge")
///     .with_tenant_claim("tenant");
/// let verifier = JwtVerifier::new(config)?;
/// assert!(verifier.verify("not.a.token").is_err());
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The verifying key, which pins the algorithm.
    pub key: JwtKey,
    /// The one accepted `iss`.
    pub issuer: String,
    /// The accepted `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
    /// The claim holding the scopes: a space-separated string or an array. Default `scope`.
    pub scope_claim: String,
    /// The claim holding the tenant, if tokens carry one. Default: none (tokens see every
    /// tenant).
    pub tenant_claim: Option<String>,
}

impl JwtConfig {
    /// A configuration with the default leeway (30 s) and scope claim (`scope`), no tenant
    /// claim.
    pub fn new(key: JwtKey, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            key,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            scope_claim: "scope".to_owned(),
            tenant_claim: None,
        }
    }

    /// Set the clock skew allowed on `exp` and `nbf`.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Read scopes from this claim instead of `scope`.
    #[must_use]
    pub fn with_scope_claim(mut self, claim: impl Into<String>) -> Self {
        self.scope_claim = claim.into();
        self
    }

    /// Bind each token to the tenant in this claim.
    #[must_use]
    pub fn with_tenant_claim(mut self, claim: impl Into<String>) -> Self {
        self.tenant_claim = Some(claim.into());
        self
    }
}

/// Verifies bearer JWTs against a [`JwtConfig`].
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    scope_claim: String,
    tenant_claim: Option<String>,
}

impl JwtVerifier {
    /// A verifier; fails on an unusable key, a short secret or an empty issuer or audience.
    pub fn new(config: JwtConfig) -> Result<Self> {
        if config.issuer.is_empty() {
            return Err(Error::invalid_input(
                "jwt issuer",
                "must name the issuer whose tokens are accepted (the `iss` claim)",
            ));
        }
        if config.audience.is_empty() {
            return Err(Error::invalid_input(
                "jwt audience",
                "must name the audience tokens are issued for (the `aud` claim)",
            ));
        }
        if config.scope_claim.is_empty() {
            return Err(Error::invalid_input("jwt scope claim", "must not be empty"));
        }
        let key = config.key.decoding_key()?;
        let mut validation = Validation::new(config.key.algorithm());
        validation.algorithms = vec![config.key.algorithm()];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = config.leeway.as_secs();
        Ok(Self {
            key,
            validation,
            scope_claim: config.scope_claim,
            tenant_claim: config.tenant_claim,
        })
    }

    /// The principal a token stands for, or [`AuthError::InvalidCredentials`] whatever was
    /// wrong with it (why is logged at `debug`, never told to the client).
    pub fn verify(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidCredentials);
        }
        let data =
            jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).map_err(|e| {
                tracing::debug!(error = %e, "JWT refused");
                AuthError::InvalidCredentials
            })?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::InvalidCredentials)?;
        let scopes = match claims.get(&self.scope_claim) {
            Some(Value::String(text)) => Scopes::from_claim_lenient(text.split(' ')),
            Some(Value::Array(items)) => {
                Scopes::from_claim_lenient(items.iter().filter_map(Value::as_str))
            }
            _ => Scopes::empty(),
        };
        let tenant = match &self.tenant_claim {
            None => None,
            // With a tenant claim configured every token must name its tenant: a token without
            // one (or with one that is not a non-empty string) would otherwise see every tenant.
            Some(claim) => match claims.get(claim) {
                Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
                _ => return Err(AuthError::InvalidCredentials),
            },
        };
        Ok(Principal::new(subject, scopes, tenant))
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .field("leeway", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::http::security::Scope;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

    fn verifier() -> JwtVerifier {
        let config = JwtConfig::new(JwtKey::Hs256Secret(SECRET.to_vec()), "iss-a", "aud-a")
            .with_tenant_claim("tenant");
        JwtVerifier::new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn sign(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap_or_default()
    }

    fn good() -> Value {
        json!({"sub": "alice", "iss": "iss-a", "aud": "aud-a", "exp": now() + 600,
               "scope": "jobs:read other:scope", "tenant": "acme"})
    }

    #[test]
    fn accepts_a_good_token() {
        let p = verifier().verify(&sign(&good()));
        assert!(p.is_ok(), "{p:?}");
        let p = p.unwrap_or_else(|_| unreachable!());
        assert_eq!(p.id(), "alice");
        assert_eq!(p.tenant(), Some("acme"));
        assert!(p.require(Scope::JobsRead).is_ok());
        assert!(p.require(Scope::JobsWrite).is_err());
    }

    #[test]
    fn scopes_as_array_and_custom_claim() {
        let config = JwtConfig::new(JwtKey::Hs256Secret(SECRET.to_vec()), "iss-a", "aud-a")
            .with_scope_claim("scp");
        let v = JwtVerifier::new(config).unwrap_or_else(|e| panic!("{e}"));
        let mut claims = good();
        claims["scp"] = json!(["jobs:write", "admin"]);
        let p = v.verify(&sign(&claims)).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.require(Scope::MemoryWrite).is_ok());
        assert_eq!(p.tenant(), None, "no tenant claim configured");
    }

    #[test]
    fn refuses_bad_claims() {
        let v = verifier();
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: [(&str, Change); 11] = [
            ("expired", Box::new(|c| c["exp"] = json!(now() - 120))),
            ("not yet valid", Box::new(|c| c["nbf"] = json!(now() + 120))),
            ("wrong aud", Box::new(|c| c["aud"] = json!("other"))),
            ("wrong iss", Box::new(|c| c["iss"] = json!("other"))),
            (
                "no exp",
                Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("exp")))),
            ),
            (
                "no sub",
                Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("sub")))),
            ),
            (
                "no aud",
                Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("aud")))),
            ),
            ("empty sub", Box::new(|c| c["sub"] = json!(""))),
            (
                "tenant not a string",
                Box::new(|c| c["tenant"] = json!(["a", "b"])),
            ),
            // A configured tenant claim that is absent or null would see every tenant.
            (
                "no tenant",
                Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("tenant")))),
            ),
            ("null tenant", Box::new(|c| c["tenant"] = Value::Null)),
        ];
        for (name, change) in cases {
            let mut claims = good();
            change(&mut claims);
            assert_eq!(
                v.verify(&sign(&claims)),
                Err(AuthError::InvalidCredentials),
                "{name}"
            );
        }
    }

    #[test]
    fn leeway_tolerates_small_skew() {
        let mut claims = good();
        claims["exp"] = json!(now() - 5);
        assert!(verifier().verify(&sign(&claims)).is_ok());
    }

    #[test]
    fn refuses_alg_none_and_garbage() {
        use base64_like::b64;
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(good().to_string().as_bytes());
        let v = verifier();
        for token in [
            format!("{header}.{body}."),
            format!("{header}.{body}"),
            String::new(),
            "a.b.c".to_owned(),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(v.verify(&token), Err(AuthError::InvalidCredentials));
        }
    }

    #[test]
    fn refuses_short_secrets_and_bad_config() {
        let short = JwtVerifier::new(JwtConfig::new(JwtKey::Hs256Secret(vec![1; 8]), "i", "a"));
        assert!(
            short
                .err()
                .is_some_and(|e| e.to_string().contains("32 bytes"))
        );
        let no_iss = JwtVerifier::new(JwtConfig::new(JwtKey::Hs256Secret(vec![1; 32]), "", "a"));
        assert!(no_iss.is_err());
        let bad_pem = JwtVerifier::new(JwtConfig::new(
            JwtKey::Rs256PublicPem(b"not a pem".to_vec()),
            "i",
            "a",
        ));
        assert!(
            bad_pem
                .err()
                .is_some_and(|e| e.to_string().contains("RSA public key"))
        );
    }

    /// Base64url without padding, for hand-made tokens.
    mod base64_like {
        pub(super) fn b64(data: &[u8]) -> String {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [
                    chunk[0],
                    chunk.get(1).copied().unwrap_or(0),
                    chunk.get(2).copied().unwrap_or(0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                    out.push(char::from(A[idx]));
                }
            }
            out
        }
    }
}
