//! `--tls`: a self-signed certificate for 127.0.0.1 and localhost, made once at start. Every
//! gateway the harness starts serves it on both listeners (`server.tls_cert` / `tls_key`), and
//! every client of the harness that talks to a gateway (ingest, admin API, `/readyz`,
//! `/metrics`) trusts it as its only root. The receiver stays plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::TlsConnector;

/// The certificate, its key and a client that trusts only it.
#[derive(Clone)]
pub struct Tls {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// A TLS client whose only trusted root is the certificate.
    pub connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Makes the self-signed certificate (subject alternative names 127.0.0.1 and localhost)
    /// and the client that trusts it.
    pub fn self_signed() -> anyhow::Result<Tls> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .context("generating the self-signed certificate")?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pki_types::CertificateDer::from(
                certified.cert.der().to_vec(),
            ))
            .context("trusting the self-signed certificate")?;
        // ring, as the gateway's listeners use (rustls 0.23.48 deprecates it for lacking
        // post-quantum key exchange, which the gateway would not offer anyway).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            connector: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// The TLS handshake on `stream` to `addr`, checking the certificate against `addr`'s IP.
pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    stream: TcpStream,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let name = pki_types::ServerName::IpAddress(addr.ip().into());
    connector
        .connect(name, stream)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_and_key_are_pem() {
        let tls = Tls::self_signed().unwrap();
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
