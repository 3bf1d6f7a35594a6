//! The outgoing HTTP client, with SSRF protection.
//!
//! Webhook URLs are written by admins of other systems and token URLs come from the same
//! configs, so a delivery must not become a way into the gateway's own network (cloud metadata at
//! 169.254.169.254, databases on 10/8, the admin API on loopback). Every address is judged by
//! [`SsrfPolicy`]: host names in the client's DNS resolver, where the connection's addresses come
//! from (so DNS rebinding cannot slip past a check made earlier), and IP literals, which reqwest
//! never resolves, in [`check_url`]. A name with any refused address fails entirely: filtering
//! the bad answers out would let a mixed answer through.
//!
//! Redirects are not followed (a redirect could point anywhere) and proxies are ignored (a proxy
//! would resolve the name itself).

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL or a client was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Only http and https are sent.
    #[error("unsupported url scheme {0:?} (http or https only)")]
    Scheme(String),
    /// The URL has no host.
    #[error("url has no host")]
    NoHost,
    /// The host's address is refused by the [`SsrfPolicy`].
    #[error(transparent)]
    Refused(#[from] SsrfRefused),
    /// reqwest could not build the client.
    #[error("cannot build the http client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A host resolved to, or is, an address the [`SsrfPolicy`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {ip} of host {host} is not allowed (SSRF protection)")]
pub struct SsrfRefused {
    /// The refused address.
    pub ip: IpAddr,
    /// The host name (or literal) it belongs to.
    pub host: String,
}

/// Which addresses deliveries may connect to: public ones, plus the allow-listed networks.
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    allow: Vec<IpNet>,
}

/// Non-public IPv4 networks, as (network, prefix length).
const REFUSED_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", unspecified
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // carrier-grade NAT
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation
    ([203, 0, 113, 0], 24),  // documentation
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, broadcast
];

/// Non-public IPv6 networks, as (network, prefix length).
const REFUSED_V6: &[(u128, u32)] = &[
    (0, 128),                // unspecified
    (1, 128),                // loopback
    (0xfe80 << 112, 10),     // link-local
    (0xfc00 << 112, 7),      // unique local
    (0xff00 << 112, 8),      // multicast
    (0x2001_0db8 << 96, 32), // documentation
    (0xfec0 << 112, 10),     // site-local (deprecated)
];

/// NAT64 well-known prefix 64:ff9b::/96: the last 32 bits are the IPv4 destination.
const NAT64: u128 = 0x0064_ff9b << 96;

impl SsrfPolicy {
    /// A policy allowing public addresses and the `allow` networks.
    pub fn new(allow: Vec<IpNet>) -> SsrfPolicy {
        SsrfPolicy { allow }
    }

    /// Whether deliveries may connect to `ip`. IPv6 addresses embedding an IPv4 one
    /// (mapped, compatible, NAT64) are judged by the embedded address.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allow_listed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if allow_listed(ip) || embedded.is_some_and(allow_listed) {
            return true;
        }
        match (ip, embedded) {
            (_, Some(IpAddr::V4(v4))) | (IpAddr::V4(v4), _) => is_public_v4(v4),
            (IpAddr::V6(v6), _) => is_public_v6(v6),
        }
    }

    /// Checks every address of `host`.
    fn check(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), SsrfRefused> {
        match addrs.iter().find(|a| !self.is_allowed(a.ip())) {
            Some(bad) => Err(SsrfRefused {
                ip: bad.ip(),
                host: host.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

fn in_net(addr: u128, net: u128, prefix: u32, bits: u32) -> bool {
    let shift = bits - prefix;
    shift >= bits || (addr >> shift) == (net >> shift)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let addr = u32::from(ip) as u128;
    !REFUSED_V4
        .iter()
        .any(|&(net, prefix)| in_net(addr, u32::from_be_bytes(net) as u128, prefix, 32))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let addr = u128::from(ip);
    !REFUSED_V6
        .iter()
        .any(|&(net, prefix)| in_net(addr, net, prefix, 128))
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) or
/// NAT64 (64:ff9b::a.b.c.d) address. `::` and `::1` are IPv6's own.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let addr = u128::from(ip);
    let high = addr >> 32;
    let low = Ipv4Addr::from(addr as u32);
    if high == 0xffff || high == NAT64 >> 32 || (high == 0 && addr > 1) {
        Some(low)
    } else {
        None
    }
}

/// Checks what can be checked before sending: the scheme, the host, and an IP-literal host
/// (reqwest connects to those without asking the resolver).
pub fn check_url(url: &reqwest::Url, policy: &SsrfPolicy) -> Result<(), ClientError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Scheme(url.scheme().to_owned()));
    }
    let host = url.host_str().ok_or(ClientError::NoHost)?;
    // url has already normalised IPv4 spellings (0x7f000001, 2130706433) to dotted quads.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    policy.check(host, &[SocketAddr::new(ip, 0)])?;
    Ok(())
}

/// The resolver of [`build`]: the system's, through tokio, with every answer judged.
#[derive(Debug, Clone)]
struct SsrfResolver {
    policy: Arc<SsrfPolicy>,
}

impl Resolve for SsrfResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            policy.check(host, &addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the delivery client: SSRF-checking resolver, no redirects, no proxies, and a pool
/// sized for many concurrent deliveries to one host. It has no overall timeout: callers set one
/// per request. Check URLs with [`check_url`] before sending.
pub fn build(policy: Arc<SsrfPolicy>, user_agent: &str) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(SsrfResolver { policy }))
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        .build()
        .map_err(ClientError::Build)
}

/// The SSRF refusal behind an error, if any: walks the `source()` chain, so it finds the
/// resolver's refusal inside a `reqwest::Error` (refusals are not worth retrying).
pub fn ssrf_refusal<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a SsrfRefused> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<SsrfRefused>() {
            return Some(refused);
        }
        if let Some(ClientError::Refused(refused)) = e.downcast_ref::<ClientError>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_non_public_addresses() {
        let policy = SsrfPolicy::new(vec![]);
        for refused in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "2001:db8::1",
            // Embedded IPv4: mapped, compatible, NAT64.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.1.2.3",
            "64:ff9b::127.0.0.1",
            "64:ff9b::192.168.0.1",
        ] {
            assert!(!policy.is_allowed(ip(refused)), "{refused} must be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let policy = SsrfPolicy::new(vec![]);
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(policy.is_allowed(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allow_list_overrides() {
        let policy = SsrfPolicy::new(vec![net("127.0.0.1/32"), net("10.1.0.0/16")]);
        assert!(policy.is_allowed(ip("127.0.0.1")));
        assert!(!policy.is_allowed(ip("127.0.0.2")));
        assert!(policy.is_allowed(ip("::ffff:127.0.0.1")));
        assert!(!policy.is_allowed(ip("::1")));
        assert!(policy.is_allowed(ip("10.1.2.3")));
        assert!(!policy.is_allowed(ip("10.2.0.1")));
        let v6 = SsrfPolicy::new(vec![net("::1/128"), net("fd00::/8")]);
        assert!(v6.is_allowed(ip("::1")));
        assert!(v6.is_allowed(ip("fd00::5")));
        assert!(!v6.is_allowed(ip("fc00::5")));
        assert!(!v6.is_allowed(ip("127.0.0.1")));
    }

    #[test]
    fn checks_urls() {
        let policy = SsrfPolicy::new(vec![net("127.0.0.1/32")]);
        let check = |u: &str| check_url(&reqwest::Url::parse(u).unwrap(), &policy);
        check("https://example.com/hook").unwrap();
        check("http://127.0.0.1:8080/").unwrap();
        check("http://93.184.216.34/").unwrap();
        assert!(matches!(check("ftp://example.com/"), Err(ClientError::Scheme(s)) if s == "ftp"));
        assert!(matches!(
            check("file:///etc/passwd"),
            Err(ClientError::Scheme(_))
        ));
        assert!(matches!(
            check("unix:/run/x.sock"),
            Err(ClientError::Scheme(_))
        ));
        for refused in [
            "http://127.0.0.2/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:80/",
            "http://[::ffff:10.0.0.1]/",
            "http://0x7f000002/",
            "http://2130706434/",
        ] {
            let err = check(refused).unwrap_err();
            assert!(ssrf_refusal(&err).is_some(), "{refused}: {err}");
        }
        let err = check("http://10.0.0.1/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.0.0.1 of host 10.0.0.1 is not allowed (SSRF protection)"
        );
    }

    /// A server answering every connection with an empty 200.
    async fn ok_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn client_refuses_and_allows() {
        let port = ok_server().await;
        let strict = Arc::new(SsrfPolicy::new(vec![]));
        let client = build(strict.clone(), "hookyard-test").unwrap();

        // A name: refused by the resolver.
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let refused = ssrf_refusal(&err).expect("refused by the resolver");
        assert_eq!(refused.host, "localhost");
        assert!(!refused.ip.is_unspecified());

        // An IP literal: refused by check_url.
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let err = check_url(&url, &strict).unwrap_err();
        assert!(ssrf_refusal(&err).is_some());

        // Allow-listed: goes through.
        let allowed = Arc::new(SsrfPolicy::new(vec![net("127.0.0.1/32")]));
        check_url(&url, &allowed).unwrap();
        let client = build(allowed, "hookyard-test").unwrap();
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    #[test]
    fn one_refused_address_refuses_the_host() {
        let policy = SsrfPolicy::new(vec![]);
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        policy.check("example.com", &[public]).unwrap();
        let refused = policy
            .check("rebind.example", &[public, private])
            .unwrap_err();
        assert_eq!(refused.ip, private.ip());
        assert_eq!(refused.host, "rebind.example");
    }

    #[tokio::test]
    async fn resolver_refuses_mixed_answers() {
        // localhost resolves to loopback only; allowing 127.0.0.1 leaves ::1 (where resolved)
        // refused, and one refused address fails the whole name.
        let resolver = SsrfResolver {
            policy: Arc::new(SsrfPolicy::new(vec![net("127.0.0.1/32")])),
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", 0))
            .await
            .unwrap()
            .collect();
        let result = resolver.resolve("localhost".parse().unwrap()).await;
        if addrs.iter().any(|a| a.ip() != ip("127.0.0.1")) {
            let err = result.err().expect("mixed answer refused");
            assert!(ssrf_refusal(err.as_ref()).is_some());
        } else {
            assert!(result.is_ok());
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
                    )
                    .await;
            }
        });
        let client = build(
            Arc::new(SsrfPolicy::new(vec![net("127.0.0.1/32")])),
            "hookyard-test",
        )
        .unwrap();
        let response = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
    }
}
