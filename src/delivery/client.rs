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

/// IPv4 networks deliveries may not reach, as (network, prefix length): every block of the IANA
/// IPv4 Special-Purpose Address Registry that is not globally reachable, plus multicast and the
/// deprecated 6to4 relay anycast. The registry's globally reachable exceptions inside 192.0.0.0/24
/// (PCP and TURN anycast, 192.0.0.9 and .10) are refused too: no webhook lives there.
const REFUSED_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", unspecified
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // carrier-grade NAT
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
    ([192, 0, 2, 0], 24),    // documentation
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated, RFC 7526)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation
    ([203, 0, 113, 0], 24),  // documentation
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, broadcast
];

/// Global unicast, 2000::/3: the only IPv6 space IANA hands out for public use. Everything
/// outside it (loopback, unspecified, ::/96 and ::ffff:0:0/96 IPv4 forms, 100::/64 discard,
/// 5f00::/16 SRv6, fc00::/7 unique local, fe80::/10 link-local, ff00::/8 multicast, and what is
/// still unassigned) is refused, except NAT64's well-known prefix below.
const GLOBAL_UNICAST_V6: (u128, u32) = (0x2000 << 112, 3);

/// IPv6 networks inside 2000::/3 deliveries may not reach, as (network, prefix length): the
/// blocks of the IANA IPv6 Special-Purpose Address Registry that are not globally reachable.
const REFUSED_V6: &[(u128, u32)] = &[
    // IETF protocol assignments: Teredo 2001::/32 (its client address is obfuscated, so it
    // cannot be judged), benchmarking, ORCHID, and a few anycast services no webhook lives on.
    (0x2001 << 112, 23),
    (0x2001_0db8 << 96, 32), // documentation
    (0x3fff << 112, 20),     // documentation (RFC 9637)
];

/// NAT64 well-known prefix 64:ff9b::/96: the last 32 bits are the IPv4 destination.
const NAT64: (u128, u32) = (0x0064_ff9b << 96, 96);
/// 6to4, 2002::/16: bits 16 to 48 are the IPv4 address of the site's relay.
const SIX_TO_FOUR: (u128, u32) = (0x2002 << 112, 16);
/// IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96 (SIIT) and the deprecated
/// IPv4-compatible ::/96: addresses no public name should resolve to; refused outright (a
/// socket would reach the embedded IPv4 address), unless that address is allow-listed.
const IPV4_FORMS: &[(u128, u32)] = &[(0xffff << 32, 96), (0xffff << 48, 96), (0, 96)];

impl SsrfPolicy {
    /// A policy allowing public addresses and the `allow` networks.
    pub fn new(allow: Vec<IpNet>) -> SsrfPolicy {
        SsrfPolicy { allow }
    }

    /// Whether deliveries may connect to `ip`. An IPv6 address embedding an IPv4 one is
    /// allowed when either is allow-listed; otherwise NAT64 and 6to4 addresses are judged by the
    /// IPv4 address they lead to, and the other IPv4 forms are refused.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6),
            IpAddr::V4(_) => None,
        };
        let allow_listed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if allow_listed(ip) || embedded.is_some_and(|(v4, _)| allow_listed(IpAddr::V4(v4))) {
            return true;
        }
        match (ip, embedded) {
            (IpAddr::V4(v4), _) => is_public_v4(v4),
            (IpAddr::V6(_), Some((v4, Embedding::Routed))) => is_public_v4(v4),
            (IpAddr::V6(_), Some((_, Embedding::Local))) => false,
            (IpAddr::V6(v6), None) => is_public_v6(v6),
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

fn in_v6(addr: u128, (net, prefix): (u128, u32)) -> bool {
    in_net(addr, net, prefix, 128)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let addr = u32::from(ip) as u128;
    !REFUSED_V4
        .iter()
        .any(|&(net, prefix)| in_net(addr, u32::from_be_bytes(net) as u128, prefix, 32))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let addr = u128::from(ip);
    in_v6(addr, GLOBAL_UNICAST_V6) && !REFUSED_V6.iter().any(|&net| in_v6(addr, net))
}

/// How an IPv6 address carries an IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// A translator or relay on the path forwards to the IPv4 address (NAT64, 6to4).
    Routed,
    /// The host's own stack reaches the IPv4 address (mapped, translated, compatible).
    Local,
}

/// The IPv4 address inside an IPv6 one, and how it is carried. `::` and `::1` are IPv6's own.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    let addr = u128::from(ip);
    if in_v6(addr, NAT64) {
        return Some((Ipv4Addr::from(addr as u32), Embedding::Routed));
    }
    if in_v6(addr, SIX_TO_FOUR) {
        return Some((Ipv4Addr::from((addr >> 80) as u32), Embedding::Routed));
    }
    if addr > 1 && IPV4_FORMS.iter().any(|&net| in_v6(addr, net)) {
        return Some((Ipv4Addr::from(addr as u32), Embedding::Local));
    }
    None
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

    /// One case per IANA special-purpose block that is not globally reachable (first and last
    /// address where it matters), and per IPv6 form of an IPv4 address.
    #[test]
    fn refuses_every_special_purpose_range() {
        let policy = SsrfPolicy::new(vec![]);
        for (range, addrs) in [
            (
                "192.0.0.0/24 IETF protocol assignments",
                &["192.0.0.0", "192.0.0.9", "192.0.0.255"][..],
            ),
            (
                "192.88.99.0/24 6to4 relay anycast",
                &["192.88.99.1", "192.88.99.255"],
            ),
            (
                "64:ff9b:1::/48 local-use NAT64",
                &[
                    "64:ff9b:1::",
                    "64:ff9b:1::8.8.8.8",
                    "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
                ],
            ),
            (
                "2002::/16 6to4 of a loopback",
                &["2002:7f00:1::", "2002:7f00:1:ffff::1"],
            ),
            (
                "2002::/16 6to4 of private and metadata",
                &["2002:a00:1::1", "2002:c0a8:101::", "2002:a9fe:a9fe::"],
            ),
            ("2002::/16 6to4 of 0.0.0.0", &["2002::1"]),
            (
                "2001::/32 Teredo, even of a public address",
                &[
                    "2001::",
                    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                    "2001:0:ffff:ffff:ffff:ffff:ffff:ffff",
                ],
            ),
            (
                "2001::/23 IETF protocol assignments",
                &[
                    "2001:1::1",
                    "2001:2::1",
                    "2001:3::1",
                    "2001:10::1",
                    "2001:20::1",
                    "2001:1ff:ffff::1",
                ],
            ),
            (
                "::ffff:0:0/96 IPv4-mapped, even public",
                &["::ffff:0:0", "::ffff:8.8.8.8", "::ffff:255.255.255.255"],
            ),
            (
                "::ffff:0:0:0/96 IPv4-translated",
                &[
                    "::ffff:0:0:0",
                    "::ffff:0:127.0.0.1",
                    "::ffff:0:8.8.8.8",
                    "::ffff:0:ffff:ffff",
                ],
            ),
            ("::/96 IPv4-compatible", &["::2", "::8.8.8.8"]),
            (
                "100::/64 discard-only",
                &["100::", "100::ffff:ffff:ffff:ffff"],
            ),
            ("100:0:0:1::/64 dummy prefix", &["100:0:0:1::1"]),
            ("3fff::/20 documentation", &["3fff::1", "3fff:fff:ffff::1"]),
            ("5f00::/16 SRv6 SIDs", &["5f00::1"]),
            (
                "outside 2000::/3",
                &["1::1", "4000::1", "e000::1", "::2:0:0:1"],
            ),
        ] {
            for addr in addrs {
                assert!(
                    !policy.is_allowed(ip(addr)),
                    "{range}: {addr} must be refused"
                );
            }
        }
    }

    #[test]
    fn judges_routed_ipv4_forms_by_their_ipv4_address() {
        let policy = SsrfPolicy::new(vec![]);
        // NAT64 and 6to4 of a public address reach that address through a public relay.
        for allowed in [
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2002:5db8:d822::",
            "2001:200::1",
            "2001:4860:4860::8888",
        ] {
            assert!(policy.is_allowed(ip(allowed)), "{allowed} must be allowed");
        }
        // An allow-listed IPv4 address may be reached through any of its IPv6 forms.
        let local = SsrfPolicy::new(vec![net("127.0.0.1/32")]);
        for allowed in [
            "::ffff:127.0.0.1",
            "::ffff:0:127.0.0.1",
            "2002:7f00:1::",
            "64:ff9b::127.0.0.1",
        ] {
            assert!(local.is_allowed(ip(allowed)), "{allowed} must be allowed");
        }
        assert!(!local.is_allowed(ip("2002:7f00:2::")));
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
            "http://[2002:7f00:2::]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[::ffff:0:7f00:2]/",
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
