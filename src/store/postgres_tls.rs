//! TLS to PostgreSQL: the `sslmode` and `sslrootcert` of a store URL, with rustls.
//!
//! The modes mean what they mean to libpq, as far as tokio-postgres allows:
//!
//! | `sslmode`          | TLS                           | certificate checked                  |
//! |--------------------|-------------------------------|--------------------------------------|
//! | `disable`          | never                         | -                                    |
//! | `prefer` (default) | if the server offers it       | no                                   |
//! | `require`          | always                        | no; with `sslrootcert`, as verify-ca |
//! | `verify-ca`        | always                        | chain to a trusted root              |
//! | `verify-full`      | always                        | chain, and the host name             |
//!
//! Trusted roots are the PEM certificates of `sslrootcert=<file>`, or Mozilla's (webpki-roots)
//! without it or with `sslrootcert=system`. Differences from libpq: libpq's default root file
//! `~/.postgresql/root.crt` is not read (name the file); `prefer` does not retry in plain text
//! after a failed TLS handshake (tokio-postgres falls back only when the server declines TLS);
//! client certificates (`sslcert`, `sslkey`) and CRLs (`sslcrl`) are not supported and are
//! refused rather than ignored. `verify-ca`, `verify-full` and `sslrootcert` need the URL form
//! (`postgres://...`); a key=value string may use `disable`, `prefer` and `require`.
//!
//! Channel binding (SCRAM-SHA-256-PLUS) comes with tokio-postgres-rustls: with TLS, a password
//! exchange is bound to the server's certificate, so an unverified TLS peer cannot relay it.

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, unverified.
    Prefer,
    /// TLS, unverified (verified as [`SslMode::VerifyCa`] when a root file is named).
    Require,
    /// TLS with the certificate chained to a trusted root.
    VerifyCa,
    /// [`SslMode::VerifyCa`] and the certificate names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` (plain first, TLS if the server insists) has no tokio-postgres counterpart.
            other => {
                return Err(Error::Database(format!(
                    "invalid PostgreSQL URL: sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    fn driver(self) -> DriverMode {
        match self {
            SslMode::Disable => DriverMode::Disable,
            SslMode::Prefer => DriverMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
        }
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// Mozilla's, from webpki-roots.
    System,
    /// The PEM certificates of this file.
    File(String),
}

/// A store URL's connection settings and the TLS connector its `sslmode` asks for.
#[derive(Clone)]
pub struct Connection {
    /// What tokio-postgres connects with (its `ssl_mode` is set from [`Connection::mode`]).
    pub config: Config,
    /// The TLS connector for every connection of the store.
    pub tls: MakeRustlsConnect,
    /// The mode asked for.
    pub mode: SslMode,
}

/// Parses a store URL (or key=value string) into connection settings and a TLS connector. No
/// error quotes the URL, which may hold a password.
pub fn connection(url: &str) -> Result<Connection> {
    let (rest, mode, roots) = take_tls_params(url)?;
    let mut config = Config::from_str(&rest)
        .map_err(|e| Error::Database(format!("invalid PostgreSQL URL: {e}")))?;
    let mode = match mode {
        Some(mode) => mode,
        None => match config.get_ssl_mode() {
            DriverMode::Disable => SslMode::Disable,
            DriverMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        },
    };
    // libpq: "if a root CA file exists, the behavior of sslmode=require will be the same as
    // that of verify-ca".
    let mode = match (mode, &roots) {
        (SslMode::Require, Some(Roots::File(_))) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    config.ssl_mode(mode.driver());
    let tls = MakeRustlsConnect::new(client_config(mode, roots.as_ref())?);
    Ok(Connection { config, tls, mode })
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (tokio-postgres knows neither
/// `verify-*` nor `sslrootcert`), and refuses the TLS options that are not supported. A
/// key=value string is returned as is.
fn take_tls_params(url: &str) -> Result<(String, Option<SslMode>, Option<Roots>)> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None, None));
    };
    let mut kept = Vec::new();
    let (mut mode, mut roots) = (None, None);
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Keys are decoded as tokio-postgres decodes them, so `ssl%6Dode` is `sslmode` here too.
        let decode = |text| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map_err(|_| {
                    Error::Database("invalid PostgreSQL URL: a parameter is not UTF-8".into())
                })
        };
        let (key, value) = (decode(key)?, decode(value)?);
        match key.as_ref() {
            "sslmode" => mode = Some(SslMode::parse(&value)?),
            "sslrootcert" if value == "system" => roots = Some(Roots::System),
            "sslrootcert" => roots = Some(Roots::File(value.into_owned())),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(Error::Database(format!(
                    "invalid PostgreSQL URL: {key} is not supported (server certificates only)"
                )))
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, roots))
}

/// The rustls client config of `mode`.
fn client_config(mode: SslMode, roots: Option<&Roots>) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| Error::Database(format!("PostgreSQL TLS setup: {e}"));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        // Disable never connects with TLS (the driver does not ask), but the pool wants a
        // connector all the same.
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Verifier {
            check: Check::Nothing,
            provider,
        }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let store = Arc::new(root_store(roots.unwrap_or(&Roots::System))?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                .build()
                .map_err(|e| Error::Database(format!("PostgreSQL TLS setup: {e}")))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Verifier {
                    check: Check::ChainOnly(webpki),
                    provider,
                })
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

fn root_store(roots: &Roots) -> Result<RootCertStore> {
    match roots {
        Roots::System => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Roots::File(path) => {
            let unreadable =
                |e: &dyn std::fmt::Display| Error::Database(format!("sslrootcert {path}: {e}"));
            let mut store = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                store.add(cert).map_err(|e| unreadable(&e))?;
            }
            if store.is_empty() {
                return Err(unreadable(&"no certificate in the file"));
            }
            Ok(store)
        }
    }
}

/// What a [`Verifier`] checks of the server's certificate.
#[derive(Debug)]
enum Check {
    /// Nothing (`prefer`, `require`), as libpq does in these modes.
    Nothing,
    /// The chain, not the host name (`verify-ca`). webpki checks the chain before the name, so a
    /// name mismatch means the chain was good.
    ChainOnly(Arc<WebPkiServerVerifier>),
}

/// The verifier of the modes webpki's own does not serve. The handshake's signatures are always
/// checked (the peer holds the key of the certificate it showed), which is what SCRAM channel
/// binding builds on.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::ChainOnly(webpki) = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> Result<SslMode> {
        connection(url).map(|c| c.mode)
    }

    #[test]
    fn modes_follow_libpq() {
        let base = "postgres://u:secret-pw@db.example/app";
        assert_eq!(mode(base).unwrap(), SslMode::Prefer);
        for (given, want) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let c = connection(&format!("{base}?sslmode={given}&application_name=x")).unwrap();
            assert_eq!(c.mode, want, "{given}");
            assert_eq!(c.config.get_ssl_mode(), want.driver(), "{given}");
            assert_eq!(c.config.get_application_name(), Some("x"));
        }
        assert_eq!(
            mode("host=db.example user=u sslmode=require").unwrap(),
            SslMode::Require
        );
        assert_eq!(
            mode("host=db.example user=u sslmode=disable").unwrap(),
            SslMode::Disable
        );
        assert_eq!(
            mode(&format!("{base}?sslmode=verify-full&sslrootcert=system")).unwrap(),
            SslMode::VerifyFull
        );
    }

    #[test]
    fn bad_tls_options_are_refused_without_quoting_the_url() {
        for (query, says) in [
            ("sslmode=allow", "sslmode \"allow\""),
            ("sslmode=verify", "sslmode \"verify\""),
            ("sslmode=require&sslcert=/c.pem", "sslcert is not supported"),
            ("sslkey=/k.pem", "sslkey is not supported"),
            ("ssl%6Bey=/k.pem", "sslkey is not supported"),
            ("ssl%6Dode=verify", "sslmode \"verify\""),
            (
                "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem",
            ),
        ] {
            let err = connection(&format!("postgres://u:secret-pw@db/app?{query}"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(says), "{query}: {err}");
            assert!(!err.contains("secret-pw"), "{err}");
        }
    }

    #[test]
    fn require_with_a_root_file_verifies_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        let url = format!(
            "postgres://u@db/app?sslmode=require&sslrootcert={}",
            file.display()
        );
        assert_eq!(mode(&url).unwrap(), SslMode::VerifyCa);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = connection(&format!(
            "postgres://u@db/app?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .err()
        .unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    /// A TLS-terminating PostgreSQL proxy, as a managed database's TLS front would be.
    mod through_a_proxy {
        use std::net::SocketAddr;
        use std::str::FromStr;
        use std::sync::Arc;

        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};
        use tokio_postgres::Config;

        use crate::store::postgres::test_support::TestSchema;
        use crate::store::postgres::PostgresStore;
        use crate::store::Store;

        /// The code of PostgreSQL's SSLRequest message (after its length, 8).
        const SSL_REQUEST: u32 = 80_877_103;

        /// A CA's PEM, and a server certificate for `localhost` it signed, with its key.
        fn certificates(
            ca_name: &str,
        ) -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, ca_name);
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
            let key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let ca_pem = ca.as_ref().pem();
            let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            (ca_pem, vec![leaf.der().clone()], key)
        }

        /// Answers SSLRequest with `S`, terminates TLS, and pipes the clear stream to `upstream`.
        async fn proxy(
            upstream: SocketAddr,
            chain: Vec<CertificateDer<'static>>,
            key: PrivateKeyDer<'static>,
        ) -> u16 {
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let mut request = [0u8; 8];
                        client.read_exact(&mut request).await.ok()?;
                        let length = u32::from_be_bytes(request[..4].try_into().ok()?);
                        let code = u32::from_be_bytes(request[4..].try_into().ok()?);
                        if (length, code) != (8, SSL_REQUEST) {
                            return None;
                        }
                        client.write_all(b"S").await.ok()?;
                        let mut tls = acceptor.accept(client).await.ok()?;
                        let mut server = TcpStream::connect(upstream).await.ok()?;
                        tokio::io::copy_bidirectional(&mut tls, &mut server)
                            .await
                            .ok()
                    });
                }
            });
            port
        }

        /// The test schema's URL with `host:port` in place of the server's.
        fn through(schema: &TestSchema, host: &str, port: u16, params: &str) -> String {
            let config = Config::from_str(&schema.url).unwrap();
            let user = config.get_user().unwrap_or("postgres");
            let password = config
                .get_password()
                .map(|p| {
                    let p: String = form_urlencoded::byte_serialize(p).collect();
                    format!(":{p}")
                })
                .unwrap_or_default();
            let db = config.get_dbname().unwrap_or("postgres");
            format!(
                "postgres://{user}{password}@{host}:{port}/{db}?options=-c%20search_path%3D{}&{params}",
                schema.name
            )
        }

        fn upstream(schema: &TestSchema) -> SocketAddr {
            let config = Config::from_str(&schema.url).unwrap();
            let host = match &config.get_hosts()[0] {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[allow(unreachable_patterns)]
                _ => "127.0.0.1".to_owned(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .unwrap()
                .next()
                .unwrap()
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn verify_full_works_and_refuses_a_wrong_ca_or_host() {
            let Some(schema) = TestSchema::create().await else {
                return;
            };
            let dir = tempfile::tempdir().unwrap();
            let (ca_pem, chain, key) = certificates("hookyard test CA");
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, ca_pem).unwrap();
            let (other_ca, _, _) = certificates("another CA");
            let other_file = dir.path().join("other.pem");
            std::fs::write(&other_file, other_ca).unwrap();
            let port = proxy(upstream(&schema), chain, key).await;
            let ca = ca_file.display();

            // Verified all the way: a store works through it.
            let url = through(
                &schema,
                "localhost",
                port,
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            );
            let store = PostgresStore::open(&url)
                .await
                .expect("verify-full through the proxy");
            let hook = crate::store::conformance::webhook("over-tls");
            store.insert_webhook(&hook).await.unwrap();
            let read = store.webhook("over-tls").await.unwrap().expect("read back");
            assert_eq!(read.spec, hook.spec);
            drop(store);

            // A certificate from another CA, or for another host name, is refused.
            for (host, params, why) in [
                (
                    "localhost",
                    format!("sslmode=verify-full&sslrootcert={}", other_file.display()),
                    "UnknownIssuer",
                ),
                (
                    "localhost",
                    format!("sslmode=verify-ca&sslrootcert={}", other_file.display()),
                    "UnknownIssuer",
                ),
                (
                    "127.0.0.1",
                    format!("sslmode=verify-full&sslrootcert={ca}"),
                    "not valid for name",
                ),
                (
                    "localhost",
                    "sslmode=verify-full".to_owned(),
                    "UnknownIssuer",
                ),
            ] {
                let url = through(&schema, host, port, &params);
                let err = PostgresStore::open(&url)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{host} {params}: accepted"));
                assert!(err.to_string().contains(why), "{host} {params}: {err}");
            }

            // verify-ca checks the chain, not the name; require checks nothing.
            for (host, params) in [
                ("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}")),
                ("127.0.0.1", "sslmode=require".to_owned()),
                ("localhost", "sslmode=prefer".to_owned()),
            ] {
                let url = through(&schema, host, port, &params);
                let store = PostgresStore::open(&url)
                    .await
                    .unwrap_or_else(|e| panic!("{host} {params}: {e}"));
                assert!(
                    store.webhook("over-tls").await.unwrap().is_some(),
                    "{params}"
                );
            }
        }
    }
}
