//! Optional TLS: a rustls server configuration from PEM files (aws-lc-rs provider, TLS 1.2 and
//! 1.3), and serving a router over it with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, ErrorKind, Result};

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Configuration, message)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        config_error(format!(
            "cannot read the TLS {what} {}: {e}; check --tls-cert/--tls-key",
            path.display()
        ))
    })
}

/// A rustls server configuration from a PEM certificate chain and private key.
///
/// Errors say which file is wrong and how: unreadable, no PEM certificate or key in it, or a
/// key that does not belong to the certificate. ALPN offers HTTP/1.1.
pub fn load_server_config(paths: &TlsPaths) -> Result<ServerConfig> {
    let cert_pem = read(&paths.cert, "certificate")?;
    let key_pem = read(&paths.key, "private key")?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            config_error(format!(
                "the TLS certificate file {} is not valid PEM: {e}",
                paths.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "the TLS certificate file {} holds no `BEGIN CERTIFICATE` block",
            paths.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        config_error(format!(
            "the TLS key file {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            paths.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            config_error(format!(
                "the TLS key {} does not fit the certificate {}: {e}",
                paths.key.display(),
                paths.cert.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serve `router` over TLS on `listener` until `shutdown` completes, then stop accepting and
/// give open requests up to `grace` to finish.
///
/// The router is served with its peer addresses (`ConnectInfo<SocketAddr>`), which the
/// per-client rate limit needs. The listener must be non-blocking-capable; bind it with
/// `std::net::TcpListener::bind`.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(|e| config_error(format!("cannot make the TLS listener non-blocking: {e}")))?;
    let handle: Handle<SocketAddr> = Handle::new();
    let server =
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(config)))
            .map_err(|e| config_error(format!("cannot serve TLS on the listener: {e}")))?
            .handle(handle.clone());
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(grace));
    });
    server
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(|e| config_error(format!("the TLS server failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn loads_a_matching_pair() {
        let config = load_server_config(&TlsPaths {
            cert: fixture("tls-cert.pem"),
            key: fixture("tls-key.pem"),
        });
        assert!(config.is_ok(), "{:?}", config.err());
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |cert: &str, key: &str| {
            load_server_config(&TlsPaths {
                cert: fixture(cert),
                key: fixture(key),
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(err("missing.pem", "tls-key.pem").contains("cannot read the TLS certificate"));
        assert!(err("tls-cert.pem", "missing.pem").contains("cannot read the TLS private key"));
        assert!(err("tls-key.pem", "tls-key.pem").contains("no `BEGIN CERTIFICATE`"));
        assert!(err("tls-cert.pem", "tls-cert.pem").contains("no usable private key"));
        assert!(err("tls-cert.pem", "tls-other-key.pem").contains("does not fit"));
    }
}
