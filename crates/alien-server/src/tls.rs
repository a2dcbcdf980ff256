//! HTTPS on the manager's own listener (`[server] tls-cert` / `tls-key`, PEM files), for those who
//! run it without a TLS-terminating proxy. rustls with the ring provider (what reqwest already
//! links); HTTP/2 and HTTP/1.1 offered by ALPN. The files are read at start (a bad file stops the
//! start, naming the key) and again on SIGHUP: a renewed certificate is served to new connections
//! without a restart, and a bad one is logged and the previous one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the TLS files cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// The configuration key of the file at fault (`server.tls-cert`, `server.tls-key`).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Reads a certificate chain and its key into a rustls server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_error = |message: String| TlsError { key: "server.tls-cert", message };
    let key_error = |message: String| TlsError { key: "server.tls-key", message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(format!("{} is not PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(cert_error(format!("{} holds no CERTIFICATE block", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| key_error(format!("cannot read a private key from {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| key_error(format!("does not match {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks `[server]`'s TLS files when set (what `serve` does before anything is created).
pub fn check(server: &alien_config::ServerConfig) -> Result<(), TlsError> {
    match (&server.tls_cert, &server.tls_key) {
        (Some(cert), Some(key)) => load(cert, key).map(drop),
        _ => Ok(()),
    }
}

/// The TLS configuration being served, reloadable.
pub(crate) struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Reloading {
    /// Loads `[server]`'s files; `None` without TLS.
    pub(crate) fn from_config(
        server: &alien_config::ServerConfig,
    ) -> Result<Option<Arc<Reloading>>, TlsError> {
        let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) else {
            return Ok(None);
        };
        let current = RwLock::new(load(cert, key)?);
        Ok(Some(Arc::new(Reloading { cert: cert.clone(), key: key.clone(), current })))
    }

    /// An acceptor with the configuration now served.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(config.clone())
    }

    /// Reads the files again; on failure the previous configuration stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Reloads on every SIGHUP until aborted.
    pub(crate) fn reload_on_sighup(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP: TLS files are not reloaded");
                    return;
                };
                while hangups.recv().await.is_some() {
                    match self.reload() {
                        Ok(()) => {
                            tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded")
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "TLS reload failed; serving the previous certificate")
                        }
                    }
                }
            }
        })
    }
}
