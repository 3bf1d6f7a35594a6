//! TLS on the listeners, with certificates the test generates: requests over TLS, the
//! certificate reloaded for new connections while an open one keeps working, a broken file at
//! reload ignored, mTLS on the public listener, and a bad certificate at start (exit 64).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::TlsConnector;

use crate::common::*;

/// A test CA that signs server and client certificates.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost and 127.0.0.1: (cert PEM, key PEM, cert DER).
    fn server(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A client certificate: (cert PEM, key PEM).
    fn client(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path` through a temporary file and a rename, as a deployment tool would.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS client trusting `ca`, with a client certificate when given.
fn connector(ca: &Ca, client: Option<(String, String)>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use pki_types::pem::PemObject as _;
    for cert in pki_types::CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Connects over TLS; the stream and the DER of the certificate the server presented.
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<(TlsStream<TcpStream>, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await?;
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((stream, presented))
}

/// `GET path` on an open connection (keep-alive); the status line, or the error.
async fn get(
    stream: &mut TlsStream<TcpStream>,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<String> {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(head.lines().next().unwrap_or("").to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("no answer within 10s"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {text:?}"),
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// The certificate files and a config using them.
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn write_files(dir: &Path, ca: &Ca, server: &(String, String, Vec<u8>)) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    };
    std::fs::write(&files.cert, &server.0).unwrap();
    std::fs::write(&files.key, &server.1).unwrap();
    std::fs::write(&files.ca, &ca.cert_pem).unwrap();
    files
}

/// A gateway in this process with TLS on both listeners; (public, admin, stop).
struct TlsGateway {
    public: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), hookyard::Error>>,
}

impl TlsGateway {
    async fn start(config: hookyard::config::Config, ready: &TlsConnector) -> TlsGateway {
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hookyard::run(
            config,
            hookyard::Listeners {
                public,
                admin: Some(admin),
            },
            async {
                let _ = rx.await;
            },
        ));
        eventually(
            Duration::from_secs(10),
            "the gateway serves TLS",
            || async {
                let (mut s, _) = connect(ready, admin_addr).await.ok()?;
                let status = get(&mut s, "/admin/v1/openapi.json", None).await.ok()?;
                status.starts_with("HTTP/1.1 200").then_some(())
            },
        )
        .await;
        TlsGateway {
            public: public_addr,
            admin: admin_addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn tls_config(dir: &Path, files: &TlsFiles, client_ca: bool) -> hookyard::config::Config {
    let mut config = test_config(dir);
    config.server.tls_cert = files.cert.display().to_string();
    config.server.tls_key = files.key.display().to_string();
    if client_ca {
        config.server.tls_client_ca = files.ca.display().to_string();
    }
    config.server.tls_reload_interval_ms = 100;
    config
}

/// Requests over TLS; the files replaced: new connections see the new certificate, an open one
/// keeps working; a broken file is ignored and the current certificate kept.
#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_and_reloads_the_certificate() {
    let dir = temp_dir();
    let ca = Ca::new("hookyard test CA");
    let first = ca.server("first");
    let files = write_files(dir.path(), &ca, &first);
    let client = connector(&ca, None);
    let gw = TlsGateway::start(tls_config(dir.path(), &files, false), &client).await;

    let (mut open, presented) = connect(&client, gw.public).await.unwrap();
    assert_eq!(presented, first.2);
    let status = get(&mut open, "/healthz", None).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Plain HTTP on a TLS listener gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", gw.public))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // Replaced: the key first, then the certificate (in between they do not match, which the
    // reload must survive).
    let second = ca.server("second");
    replace_file(&files.key, &second.1);
    replace_file(&files.cert, &second.0);
    eventually(
        Duration::from_secs(10),
        "a new connection sees the new certificate",
        || async {
            let (_, presented) = connect(&client, gw.public).await.ok()?;
            (presented == second.2).then_some(())
        },
    )
    .await;
    // The admin listener shares the certificate.
    let (_, presented) = connect(&client, gw.admin).await.unwrap();
    assert_eq!(presented, second.2);
    // The connection opened before still works.
    let status = get(&mut open, "/healthz", None).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    // A broken certificate file: the current certificate stays, for at least ten checks.
    replace_file(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        let (mut s, presented) = connect(&client, gw.public).await.unwrap();
        assert_eq!(presented, second.2);
        let status = get(&mut s, "/healthz", None).await.unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    // Fixed again: picked up.
    let third = ca.server("third");
    replace_file(&files.key, &third.1);
    replace_file(&files.cert, &third.0);
    eventually(
        Duration::from_secs(10),
        "the repaired files are loaded",
        || async {
            let (_, presented) = connect(&client, gw.public).await.ok()?;
            (presented == third.2).then_some(())
        },
    )
    .await;
    drop(open);
    gw.stop().await;
}

/// Whether a request through `connector` fails: during the handshake, or at the first read
/// (with TLS 1.3 the server checks the client's certificate after the client has finished).
async fn refused(connector: &TlsConnector, addr: SocketAddr) -> bool {
    match connect(connector, addr).await {
        Err(_) => true,
        Ok((mut s, _)) => get(&mut s, "/healthz", None).await.is_err(),
    }
}

/// With `tls_client_ca`, the public listener wants a client certificate that CA signed; the
/// admin listener does not.
#[tokio::test(flavor = "multi_thread")]
async fn mtls_on_the_public_listener() {
    let dir = temp_dir();
    let ca = Ca::new("hookyard test CA");
    let server = ca.server("server");
    let files = write_files(dir.path(), &ca, &server);
    let anonymous = connector(&ca, None);
    let gw = TlsGateway::start(tls_config(dir.path(), &files, true), &anonymous).await;

    assert!(
        refused(&anonymous, gw.public).await,
        "served without a client certificate"
    );
    // A certificate from another CA: refused too.
    let stranger = Ca::new("another CA");
    let outsider = connector(&ca, Some(stranger.client("outsider")));
    assert!(
        refused(&outsider, gw.public).await,
        "served with a certificate of another CA"
    );
    // Signed by the CA: served.
    let member = connector(&ca, Some(ca.client("member")));
    let (mut s, _) = connect(&member, gw.public).await.unwrap();
    let status = get(&mut s, "/healthz", None).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // The admin listener asks for none.
    let (mut s, _) = connect(&anonymous, gw.admin).await.unwrap();
    let status = get(&mut s, "/admin/v1/webhooks", Some(ADMIN_TOKEN))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    gw.stop().await;
}

/// Inbound URLs shown to admins say https:// when TLS is on.
#[tokio::test(flavor = "multi_thread")]
async fn inbound_urls_say_https() {
    let dir = temp_dir();
    let ca = Ca::new("hookyard test CA");
    let files = write_files(dir.path(), &ca, &ca.server("server"));
    let config = tls_config(dir.path(), &files, false);
    assert!(
        config.public_url().starts_with("https://"),
        "{}",
        config.public_url()
    );
}

/// A certificate file that is not one stops the binary at start with exit code 64.
#[test]
fn a_bad_certificate_at_start_exits_64() {
    let dir = temp_dir();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n[store]\nurl = \"sqlite://data/h.db\"\n",
        closed_port(),
        closed_port(),
        cert.display(),
        key.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new(binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOOKYARD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running with a bad certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("tls_cert"), "{stderr}");
}
