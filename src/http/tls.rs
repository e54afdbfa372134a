//! Native TLS on `--listen`: the certificate and key (`--tls-cert`,
//! `--tls-key`, PEM), the rustls configuration made from them, and its
//! reload on SIGHUP.
//!
//! - rustls with the ring provider, TLS 1.2 and 1.3 only (rustls has no
//!   older versions), ALPN `http/1.1`. docs/DECISIONS.md says why rustls
//!   and ring, and where TLS may terminate.
//! - The accept loop takes the configuration in force for each new
//!   connection ([`Tls::current`]); a reload swaps it, so connections
//!   already open keep the certificate they were made with and new ones get
//!   the new one.
//! - A reload that cannot read, parse or match the new files keeps the old
//!   configuration and says why; so does a start, which then does not
//!   listen at all.
//! - The handshake itself is run by the connection, under the header read
//!   deadline (`socket::Stream::handshake`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// ALPN: the one protocol this server speaks.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a certificate and key could not be made a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `--tls-cert` holds no PEM certificate, or cannot be read.
    #[error("--tls-cert {path}: {reason}")]
    Cert {
        /// The file, as configured.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// `--tls-key` holds no PEM private key, or cannot be read.
    #[error("--tls-key {path}: {reason}")]
    Key {
        /// The file, as configured.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the pair (the key does not match the certificate, or
    /// is of a kind the provider cannot sign with).
    #[error("--tls-cert and --tls-key do not make a certificate rustls can serve: {0}")]
    Rejected(#[from] rustls::Error),
}

/// The files and the configuration now made from them.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// Taken by the accept loop once per connection; replaced by a reload.
    /// Not on a request's path, and the loop is its only frequent reader.
    config: Mutex<Arc<ServerConfig>>,
}

impl Tls {
    /// The certificate `--tls-cert` and `--tls-key` name, if they are set
    /// (the config checked that both or neither are). Loaded before the
    /// WAL is opened, so that a bad file stops the start at once.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Tls>>, TlsError> {
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Arc::new(Tls::load(cert, key)?))),
            _ => Ok(None),
        }
    }

    /// Reads and checks `cert` and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let config = config_from(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: Mutex::new(config),
        })
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.lock().clone()
    }

    /// Reads the files again and, if they make a configuration, serves new
    /// connections with it; if not, keeps the one in force. Logs either way.
    pub fn reload(&self) {
        match config_from(&self.cert, &self.key) {
            Ok(config) => {
                *self.config.lock() = config;
                log::info!(
                    "reloaded the TLS certificate {} and key {}; new connections use them",
                    self.cert.display(),
                    self.key.display()
                );
            }
            Err(e) => log::warn!("kept the TLS certificate in use: {e}"),
        }
    }
}

fn config_from(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}
