//! [`SecurityArgs`]: the security flags of `jobforge-server`, as a clap `Args` struct the binary
//! flattens into its own command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::api_key::{ApiKeyEntry, ApiKeyStore};
use super::client_ip::TrustedProxies;
use super::config::SecurityConfig;
use super::jwt::{JwtConfig, JwtKey};
use super::rate_limit::{RateLimits, RateQuota};
use super::tls::TlsPaths;
use crate::{Error, ErrorKind, Result};

/// The JWT algorithm to pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithmArg {
    /// HMAC-SHA256 with a shared secret (`--jwt-hs256-secret-file`).
    #[value(name = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 (`--jwt-public-key-file`, an RSA public key).
    #[value(name = "RS256")]
    Rs256,
    /// Ed25519 (`--jwt-public-key-file`, an Ed25519 public key).
    #[value(name = "EdDSA")]
    EdDsa,
}

/// The security flags of `jobforge-server`. Every flag also reads an environment variable
/// (shown in `--help`); list flags take commas in the environment.
///
/// ```
/// use clap::Parser;
/// use jobforge::http::security::SecurityArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     security: SecurityArgs,
/// }
///
/// let hash = "ab".repeat(32);
/// let cli = Cli::try_parse_from([
///     "jobforge-server",
///     "--api-key-hash", &format!("ci:{hash}:jobs:read,jobs:write"),
///     "--cors-origin", "https://app.example.com",
///     "--trusted-proxy", "10.0.0.0/8",
///     "--rate-limit-write", "10/s:20",
/// ]).map_err(|e| jobforge::Error::invalid_input("args", e.to_string()))?;
/// let config = cli.security.into_config()?;
/// config.check_bind("0.0.0.0:8080".parse().unwrap())?;
/// let security = config.build()?;
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// An API key, as `<id>:<sha256>:<scope>[,<scope>...][:<tenant>]` (from `jobforge-server
    /// keys generate`). Repeatable.
    #[arg(
        long = "api-key-hash",
        value_name = "ID:SHA256:SCOPES[:TENANT]",
        env = "JOBFORGE_API_KEY_HASHES",
        value_delimiter = ';'
    )]
    pub api_key_hashes: Vec<String>,

    /// A JSON file holding an array of `{"id", "sha256", "scopes", "tenant"?, "revoked"?}`.
    #[arg(long, value_name = "PATH", env = "JOBFORGE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Accept bearer JWTs signed with this algorithm (and no other).
    #[arg(long, value_enum, env = "JOBFORGE_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<JwtAlgorithmArg>,

    /// File holding the HS256 secret (at least 32 bytes; a trailing newline is dropped).
    #[arg(long, value_name = "PATH", env = "JOBFORGE_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// PEM public key verifying RS256 or EdDSA tokens.
    #[arg(long, value_name = "PATH", env = "JOBFORGE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// The required `iss` of tokens.
    #[arg(long, env = "JOBFORGE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The required `aud` of tokens.
    #[arg(long, env = "JOBFORGE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        env = "JOBFORGE_JWT_LEEWAY_SECS"
    )]
    pub jwt_leeway_secs: u64,

    /// The claim holding the token's scopes (a space-separated string or an array).
    #[arg(long, default_value = "scope", env = "JOBFORGE_JWT_SCOPE_CLAIM")]
    pub jwt_scope_claim: String,

    /// The claim binding a token to a tenant, if any.
    #[arg(long, env = "JOBFORGE_JWT_TENANT_CLAIM")]
    pub jwt_tenant_claim: Option<String>,

    /// A path served without credentials, with what lies below it (`/docs` covers
    /// `/docs/index.css`). Repeatable; replaces the default.
    #[arg(
        long = "public-path",
        value_name = "PATH",
        default_value = "/health",
        env = "JOBFORGE_PUBLIC_PATHS",
        value_delimiter = ','
    )]
    pub public_paths: Vec<String>,

    /// A proxy (address or CIDR) whose `X-Forwarded-For` is believed. Repeatable.
    #[arg(
        long = "trusted-proxy",
        value_name = "IP|CIDR",
        env = "JOBFORGE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// A browser origin allowed by CORS, like `https://app.example.com`. Repeatable; none by
    /// default.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "JOBFORGE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// PEM certificate chain: serve HTTPS (with `--tls-key`).
    #[arg(
        long,
        value_name = "PATH",
        env = "JOBFORGE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        value_name = "PATH",
        env = "JOBFORGE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Per client address (IPv6: per /64): `<n>/s|min|h[:burst]`.
    #[arg(
        long,
        value_name = "RATE",
        default_value = "50/s:100",
        env = "JOBFORGE_RATE_LIMIT_IP"
    )]
    pub rate_limit_ip: RateQuota,

    /// Per credential, read routes.
    #[arg(
        long,
        value_name = "RATE",
        default_value = "100/s:200",
        env = "JOBFORGE_RATE_LIMIT_READ"
    )]
    pub rate_limit_read: RateQuota,

    /// Per credential, write routes.
    #[arg(
        long,
        value_name = "RATE",
        default_value = "20/s:40",
        env = "JOBFORGE_RATE_LIMIT_WRITE"
    )]
    pub rate_limit_write: RateQuota,

    /// Per credential, admin routes.
    #[arg(
        long,
        value_name = "RATE",
        default_value = "5/s:10",
        env = "JOBFORGE_RATE_LIMIT_ADMIN"
    )]
    pub rate_limit_admin: RateQuota,

    /// The most clients each rate limiter tracks at once (bounds its memory).
    #[arg(
        long,
        default_value_t = 100_000,
        env = "JOBFORGE_RATE_LIMIT_MAX_CLIENTS"
    )]
    pub rate_limit_max_clients: usize,

    /// Turn rate limiting off (only behind a gateway that limits instead).
    #[arg(long, env = "JOBFORGE_NO_RATE_LIMIT")]
    pub no_rate_limit: bool,

    /// Serve without authentication even on a non-loopback address (a gateway in front
    /// must authenticate).
    #[arg(long, env = "JOBFORGE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Configuration,
            format!("cannot read the {what} {}: {e}", path.display()),
        )
    })
}

impl SecurityArgs {
    /// The configuration these flags describe; reads the key files and checks what can be
    /// checked without building (the JWT flags fit together, the proxies parse).
    pub fn into_config(self) -> Result<SecurityConfig> {
        let mut api_keys = self
            .api_key_hashes
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<ApiKeyEntry>())
            .collect::<Result<Vec<_>>>()?;
        if let Some(path) = &self.api_keys_file {
            // Parsed through the store so the file's errors name it; then kept as entries.
            let text = read_file(path, "API keys file")?;
            let entries: Vec<ApiKeyEntry> = serde_json::from_slice(&text).map_err(|e| {
                Error::new(
                    ErrorKind::Configuration,
                    format!(
                        "the API keys file {} is not a JSON array of {{id, sha256, scopes, \
                         tenant?, revoked?}}: {e}",
                        path.display()
                    ),
                )
            })?;
            api_keys.extend(entries);
        }
        // Duplicate ids and bad hashes fail here, before the server starts.
        ApiKeyStore::new(api_keys.clone())?;

        let jwt = self.jwt_config()?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| TrustedProxies::parse_entry(s))
            .collect::<Result<Vec<_>>>()
            .map(TrustedProxies::new)?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsPaths { cert, key }),
            (None, None) => None,
            _ => {
                return Err(Error::invalid_input(
                    "tls",
                    "--tls-cert and --tls-key go together",
                ));
            }
        };
        let rate_limits = (!self.no_rate_limit).then_some(RateLimits {
            per_ip: self.rate_limit_ip,
            read: self.rate_limit_read,
            write: self.rate_limit_write,
            admin: self.rate_limit_admin,
            max_tracked_keys: self.rate_limit_max_clients,
        });
        Ok(SecurityConfig {
            api_keys,
            jwt,
            public_paths: self.public_paths,
            rate_limits,
            trusted_proxies,
            cors_origins: self.cors_origins,
            tls,
            insecure_no_auth: self.insecure_no_auth,
        })
    }

    fn jwt_config(&self) -> Result<Option<JwtConfig>> {
        let Some(algorithm) = self.jwt_algorithm else {
            if self.jwt_hs256_secret_file.is_some() || self.jwt_public_key_file.is_some() {
                return Err(Error::invalid_input(
                    "jwt algorithm",
                    "a JWT key is given without --jwt-algorithm: pin HS256, RS256 or EdDSA",
                ));
            }
            return Ok(None);
        };
        let key = match (
            algorithm,
            &self.jwt_hs256_secret_file,
            &self.jwt_public_key_file,
        ) {
            (JwtAlgorithmArg::Hs256, Some(path), None) => {
                let mut secret = read_file(path, "JWT HS256 secret file")?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                JwtKey::Hs256Secret(secret)
            }
            (JwtAlgorithmArg::Rs256, None, Some(path)) => {
                JwtKey::Rs256PublicPem(read_file(path, "JWT public key file")?)
            }
            (JwtAlgorithmArg::EdDsa, None, Some(path)) => {
                JwtKey::EdDsaPublicPem(read_file(path, "JWT public key file")?)
            }
            (JwtAlgorithmArg::Hs256, _, _) => {
                return Err(Error::invalid_input(
                    "jwt key",
                    "HS256 takes --jwt-hs256-secret-file and no --jwt-public-key-file",
                ));
            }
            _ => {
                return Err(Error::invalid_input(
                    "jwt key",
                    "RS256 and EdDSA take --jwt-public-key-file and no --jwt-hs256-secret-file",
                ));
            }
        };
        let issuer = self.jwt_issuer.clone().ok_or_else(|| {
            Error::invalid_input(
                "jwt issuer",
                "--jwt-issuer is required with --jwt-algorithm",
            )
        })?;
        let audience = self.jwt_audience.clone().ok_or_else(|| {
            Error::invalid_input(
                "jwt audience",
                "--jwt-audience is required with --jwt-algorithm",
            )
        })?;
        let mut config = JwtConfig::new(key, issuer, audience)
            .with_leeway(Duration::from_secs(self.jwt_leeway_secs))
            .with_scope_claim(self.jwt_scope_claim.clone());
        if let Some(claim) = &self.jwt_tenant_claim {
            config = config.with_tenant_claim(claim.clone());
        }
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        security: SecurityArgs,
    }

    fn parse(args: &[&str]) -> Result<SecurityConfig> {
        let mut all = vec!["jobforge-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map_err(|e| Error::invalid_input("args", e.to_string()))?
            .security
            .into_config()
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap();
        assert!(!config.auth_configured());
        assert_eq!(config.public_paths, ["/health"]);
        assert_eq!(config.rate_limits, Some(RateLimits::default()));
        assert!(config.tls.is_none() && config.cors_origins.is_empty());
    }

    #[test]
    fn jwt_flags_must_fit() {
        let public = fixture("jwt-rs256-public.pem");
        let ok = parse(&[
            "--jwt-algorithm",
            "RS256",
            "--jwt-public-key-file",
            &public,
            "--jwt-issuer",
            "i",
            "--jwt-audience",
            "a",
        ]);
        assert!(ok.is_ok_and(|c| c.build().is_ok()));
        assert!(parse(&["--jwt-public-key-file", &public]).is_err());
        assert!(parse(&["--jwt-algorithm", "RS256", "--jwt-public-key-file", &public]).is_err());
        assert!(
            parse(&[
                "--jwt-algorithm",
                "HS256",
                "--jwt-public-key-file",
                &public,
                "--jwt-issuer",
                "i",
                "--jwt-audience",
                "a"
            ])
            .is_err()
        );
        assert!(parse(&["--jwt-algorithm", "none"]).is_err());
    }

    #[test]
    fn lists_and_limits() {
        let hash = "cd".repeat(32);
        let config = parse(&[
            "--api-key-hash",
            &format!("a:{hash}:admin"),
            "--api-key-hash",
            &format!("b:{hash}:jobs:read:acme"),
            "--trusted-proxy",
            "10.0.0.0/8,::1",
            "--public-path",
            "/health",
            "--public-path",
            "/ready",
            "--no-rate-limit",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(config.api_keys.len(), 2);
        assert_eq!(config.api_keys[1].tenant.as_deref(), Some("acme"));
        assert!(config.trusted_proxies.contains("::1".parse().unwrap()));
        assert_eq!(config.public_paths, ["/health", "/ready"]);
        assert!(config.rate_limits.is_none());
        assert!(config.tls.is_some());
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--trusted-proxy", "nope"]).is_err());
        assert!(parse(&["--rate-limit-ip", "fast"]).is_err());
        let dup = format!("a:{hash}:admin");
        assert!(parse(&["--api-key-hash", &dup, "--api-key-hash", &dup]).is_err());
    }
}
