//! TLS on the listeners: the certificate from PEM files, reloaded when they change, and client
//! certificate verification (mTLS) on the public listener.
//!
//! The certificate is chosen per handshake by [`ReloadingCert`] (a `ResolvesServerCert`), so a
//! reload swaps it for new connections while open ones keep the session they negotiated. A
//! reload reads both files, and swaps only when they changed and parse into a matching pair: a
//! half-written or broken file keeps the old certificate, with a warning, and is tried again
//! at the next check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::ServerConfig;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{what} {path}: {message}")]
    Pem {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the key, the pair or the CA.
    #[error("{what}: {source}")]
    Rustls {
        /// Which setting.
        what: &'static str,
        /// Why.
        source: rustls::Error,
    },
    /// The client CA could not make a verifier.
    #[error("server.tls_client_ca: {0}")]
    ClientCa(String),
}

/// The acceptors of both listeners and the certificate they share.
pub struct Tls {
    /// For the public listener (requires client certificates when `tls_client_ca` is set).
    pub public: TlsAcceptor,
    /// For the admin listener.
    pub admin: TlsAcceptor,
    /// The certificate, for [`ReloadingCert::watch`].
    pub cert: Arc<ReloadingCert>,
}

impl Tls {
    /// Loads the files `server` names; none when TLS is off.
    pub fn from_config(server: &ServerConfig) -> Result<Option<Tls>, TlsError> {
        if !server.tls() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(ReloadingCert::load(
            PathBuf::from(&server.tls_cert),
            PathBuf::from(&server.tls_key),
            provider.clone(),
        )?);
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|source| TlsError::Rustls {
                    what: "TLS versions",
                    source,
                })
        };
        let finish = |mut config: rustls::ServerConfig| {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        };
        let admin = builder()?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        let public = builder()?;
        let public = if server.tls_client_ca.is_empty() {
            public.with_no_client_auth()
        } else {
            let path = &server.tls_client_ca;
            let what = "server.tls_client_ca";
            let pem = read(what, Path::new(path))?;
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(what, path, &pem)? {
                roots
                    .add(ca)
                    .map_err(|source| TlsError::Rustls { what, source })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            public.with_client_cert_verifier(verifier)
        };
        Ok(Some(Tls {
            public: finish(public.with_cert_resolver(cert.clone())),
            admin: finish(admin),
            cert,
        }))
    }
}

/// The listeners' certificate, replaced when its files change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The certificate and a digest of the files it came from.
    current: RwLock<(Arc<CertifiedKey>, [u8; 32])>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, TlsError> {
        let (cert_pem, key_pem) = (
            read("server.tls_cert", &cert_path)?,
            read("server.tls_key", &key_path)?,
        );
        let key = certified_key(&cert_path, &cert_pem, &key_path, &key_pem, &provider)?;
        let digest = digest(&cert_pem, &key_pem);
        Ok(ReloadingCert {
            cert_path,
            key_path,
            provider,
            current: RwLock::new((Arc::new(key), digest)),
        })
    }

    /// Re-reads the files; swaps the certificate when they changed and are valid. Returns
    /// whether it swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read("server.tls_cert", &self.cert_path)?;
        let key_pem = read("server.tls_key", &self.key_path)?;
        let digest = digest(&cert_pem, &key_pem);
        if self.current_digest() == digest {
            return Ok(false);
        }
        let key = certified_key(
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
            &self.provider,
        )?;
        let fresh = (Arc::new(key), digest);
        match self.current.write() {
            Ok(mut current) => *current = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(true)
    }

    fn current_digest(&self) -> [u8; 32] {
        match self.current.read() {
            Ok(c) => c.1,
            Err(poisoned) => poisoned.into_inner().1,
        }
    }

    /// Checks the files every `every` until `stop`. A failed reload is logged once per change
    /// of the files' contents, not at every check.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => {}
            }
            let cert = self.clone();
            // File reads and key parsing are blocking work.
            let reloaded = tokio::task::spawn_blocking(move || cert.reload()).await;
            match reloaded {
                Ok(Ok(true)) => {
                    last_error = None;
                    info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                }
                Ok(Ok(false)) => last_error = None,
                Ok(Err(e)) => {
                    let message = e.to_string();
                    if last_error.as_deref() != Some(&message) {
                        warn!(error = %message, "TLS certificate not reloaded: keeping the current one");
                        last_error = Some(message);
                    }
                }
                Err(e) => warn!(error = %e, "TLS reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(c) => Some(c.0.clone()),
            Err(poisoned) => Some(poisoned.into_inner().0.clone()),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((cert_pem.len() as u64).to_le_bytes());
    hash.update(cert_pem);
    hash.update(key_pem);
    hash.finalize().into()
}

fn certificates(
    what: &'static str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            message: "no CERTIFICATE in the file".into(),
        });
    }
    Ok(certs)
}

fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(
        "server.tls_cert",
        &cert_path.display().to_string(),
        cert_pem,
    )?;
    // The parser's message never quotes the key material.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: "server.tls_key",
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
        what: "server.tls_cert and server.tls_key",
        source,
    })
}
