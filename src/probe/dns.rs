//! DNS for the probe: host addresses, SRV (RFC 6186 / RFC 8314) and MX records,
//! behind a small trait so discovery and the check chain can be tested without
//! a network ([`StaticResolver`]) and run for real with [`SystemResolver`].
//!
//! Every lookup of the system resolver is bounded by its timeout: the probe runs on
//! machines with broken or missing DNS, and a diagnosis tool must say so, not hang.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, ToSocketAddrs};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{ResolverBuilder, TokioResolver};

/// A boxed, sendable future, so [`Resolver`] stays object-safe without extra crates.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One SRV answer. `target` has no trailing dot; a target of `"."` is kept as is,
/// because it means "this service is not offered here" (RFC 2782, RFC 6186).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// One MX answer; `host` has no trailing dot (`"."` is a null MX, RFC 7505).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub host: String,
}

/// Why a lookup gave no answer; the three cases need different advice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no records of the asked type.
    #[error("{0}: no such name")]
    NotFound(String),
    /// The resolver answered with an error, or could not be asked at all.
    #[error("{name}: DNS lookup failed: {reason}")]
    Failed { name: String, reason: String },
    /// No answer within the timeout.
    #[error("{0}: DNS lookup timed out")]
    Timeout(String),
}

/// Where the probe gets addresses and service records from.
pub trait Resolver: Send + Sync {
    /// Addresses of `host`; an IP literal resolves to itself.
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// SRV records at `name` (e.g. `_imaps._tcp.example.org`); `NotFound` when there are none.
    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>>;
    /// MX records of `domain`; `NotFound` when there are none.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<MxRecord>, DnsError>>;
}

/// The machine's own resolver: the C library (so `/etc/hosts` and `localhost` work)
/// for addresses, hickory with `/etc/resolv.conf` for SRV and MX.
pub struct SystemResolver {
    timeout: Duration,
    /// `Err` holds why SRV/MX cannot be asked (no usable resolv.conf); addresses still work.
    dns: Result<TokioResolver, String>,
}

impl SystemResolver {
    /// A resolver whose every lookup gives up after `timeout`.
    ///
    /// A missing or empty resolv.conf is not an error here: probing `localhost` or an
    /// IP address must still work, so SRV/MX lookups report the problem instead.
    pub fn new(timeout: Duration) -> Result<Self, DnsError> {
        match TokioResolver::builder_tokio() {
            Ok(builder) => Self::from_builder(timeout, builder),
            Err(e) => Ok(SystemResolver {
                timeout,
                dns: Err(format!("no usable DNS configuration: {e}")),
            }),
        }
    }

    fn from_builder(
        timeout: Duration,
        mut builder: ResolverBuilder<TokioRuntimeProvider>,
    ) -> Result<Self, DnsError> {
        // hickory's own per-request limit; the outer tokio timeout bounds retries and servers.
        builder.options_mut().timeout = timeout;
        let dns = builder.build().map_err(|e| DnsError::Failed {
            name: "system resolver".to_string(),
            reason: e.to_string(),
        })?;
        Ok(SystemResolver {
            timeout,
            dns: Ok(dns),
        })
    }

    /// A resolver that asks one given server over UDP: lets tests point at a local
    /// server that never answers, the case that must not hang.
    #[cfg(test)]
    fn with_server(timeout: Duration, server: std::net::SocketAddr) -> Result<Self, DnsError> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        let mut ns = NameServerConfig::udp(server.ip());
        for c in &mut ns.connections {
            c.port = server.port();
        }
        let config = ResolverConfig::from_name_servers(vec![ns]);
        Self::from_builder(
            timeout,
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()),
        )
    }

    /// The timeout each lookup is bounded by.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn hickory(&self, name: &str) -> Result<(&TokioResolver, Name), DnsError> {
        let dns = self.dns.as_ref().map_err(|reason| DnsError::Failed {
            name: name.to_string(),
            reason: reason.clone(),
        })?;
        Ok((dns, absolute_name(name)?))
    }
}

impl Resolver for SystemResolver {
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            if let Some(ip) = ip_literal(host) {
                return Ok(vec![ip]);
            }
            libc_lookup(host, self.timeout).await
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>> {
        Box::pin(async move {
            let (dns, fqdn) = self.hickory(name)?;
            let lookup = match tokio::time::timeout(self.timeout, dns.srv_lookup(fqdn)).await {
                Err(_) => return Err(DnsError::Timeout(name.to_string())),
                Ok(r) => r.map_err(|e| hickory_error(name, &e))?,
            };
            let records: Vec<SrvRecord> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: host_text(&srv.target),
                    }),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                return Err(DnsError::NotFound(name.to_string()));
            }
            Ok(records)
        })
    }

    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<MxRecord>, DnsError>> {
        Box::pin(async move {
            let (dns, fqdn) = self.hickory(domain)?;
            let lookup = match tokio::time::timeout(self.timeout, dns.mx_lookup(fqdn)).await {
                Err(_) => return Err(DnsError::Timeout(domain.to_string())),
                Ok(r) => r.map_err(|e| hickory_error(domain, &e))?,
            };
            let records: Vec<MxRecord> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(MxRecord {
                        preference: mx.preference,
                        host: host_text(&mx.exchange),
                    }),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                return Err(DnsError::NotFound(domain.to_string()));
            }
            Ok(records)
        })
    }
}

/// `host` as an IP address, also in URL brackets (`[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Query names are made absolute so the resolv.conf search list never turns
/// `_imaps._tcp.example.org` into `_imaps._tcp.example.org.corp.local`.
fn absolute_name(name: &str) -> Result<Name, DnsError> {
    let trimmed = name.trim().trim_end_matches('.');
    Name::from_utf8(format!("{trimmed}.")).map_err(|e| DnsError::Failed {
        name: name.to_string(),
        reason: format!("not a valid DNS name: {e}"),
    })
}

/// A DNS name as text for connecting: ASCII (punycode) form, no trailing dot, root kept as ".".
fn host_text(name: &Name) -> String {
    if name.is_root() {
        return ".".to_string();
    }
    let text = name.to_ascii();
    match text.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => text,
    }
}

fn hickory_error(name: &str, e: &hickory_resolver::net::NetError) -> DnsError {
    if e.is_no_records_found() {
        DnsError::NotFound(name.to_string())
    } else if matches!(e, hickory_resolver::net::NetError::Timeout) {
        DnsError::Timeout(name.to_string())
    } else {
        DnsError::Failed {
            name: name.to_string(),
            reason: e.to_string(),
        }
    }
}

/// Address lookup through the C library (getaddrinfo), bounded by `limit`.
///
/// It runs on a detached thread rather than tokio's blocking pool: a runtime waits
/// for its blocking tasks when it shuts down, so one stuck getaddrinfo would hold
/// the whole program at exit long after we reported the timeout.
async fn libc_lookup(host: &str, limit: Duration) -> Result<Vec<IpAddr>, DnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let query = host.to_string();
    std::thread::Builder::new()
        .name("mailcheck-dns".to_string())
        .spawn(move || {
            let answer = (query.as_str(), 0u16)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>());
            // The receiver is gone when the caller gave up; nothing left to tell.
            let _ = tx.send(answer);
        })
        .map_err(|e| DnsError::Failed {
            name: host.to_string(),
            reason: format!("cannot start lookup: {e}"),
        })?;
    match tokio::time::timeout(limit, rx).await {
        Err(_) => Err(DnsError::Timeout(host.to_string())),
        Ok(Err(_)) => Err(DnsError::Failed {
            name: host.to_string(),
            reason: "lookup thread ended".to_string(),
        }),
        Ok(Ok(Err(e))) => Err(libc_error(host, &e)),
        Ok(Ok(Ok(found))) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for ip in found {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            if ips.is_empty() {
                Err(DnsError::NotFound(host.to_string()))
            } else {
                Ok(ips)
            }
        }
    }
}

/// getaddrinfo's verdict only reaches us as text; "does not exist" gets its own
/// variant because it means a typo or a missing record, not a broken resolver.
fn libc_error(host: &str, e: &std::io::Error) -> DnsError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let missing = [
        "name or service not known",
        "no address associated",
        "nodename nor servname",
        "no such host",
    ];
    if missing.iter().any(|m| lower.contains(m)) {
        DnsError::NotFound(host.to_string())
    } else {
        DnsError::Failed {
            name: host.to_string(),
            reason: text,
        }
    }
}

/// Fixed answers for tests: no network at all. Anything not registered is `NotFound`;
/// IP literals resolve to themselves, as with [`SystemResolver`].
#[derive(Debug, Default)]
pub struct StaticResolver {
    ips: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<SrvRecord>>,
    mx: HashMap<String, Vec<MxRecord>>,
    errors: HashMap<String, DnsError>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an address for `host`.
    pub fn ip(mut self, host: &str, ip: IpAddr) -> Self {
        self.ips.entry(key(host)).or_default().push(ip);
        self
    }

    /// Add an SRV record at `name`.
    pub fn srv(mut self, name: &str, rec: SrvRecord) -> Self {
        self.srv.entry(key(name)).or_default().push(rec);
        self
    }

    /// Add an MX record for `domain`.
    pub fn mx(mut self, domain: &str, rec: MxRecord) -> Self {
        self.mx.entry(key(domain)).or_default().push(rec);
        self
    }

    /// Make every lookup of `name` fail with `err` (to test timeouts and broken DNS).
    pub fn error(mut self, name: &str, err: DnsError) -> Self {
        self.errors.insert(key(name), err);
        self
    }

    fn answer<T: Clone>(&self, map: &HashMap<String, Vec<T>>, name: &str) -> Result<Vec<T>, DnsError> {
        let k = key(name);
        if let Some(e) = self.errors.get(&k) {
            return Err(e.clone());
        }
        match map.get(&k) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(DnsError::NotFound(name.to_string())),
        }
    }
}

impl Resolver for StaticResolver {
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            match ip_literal(host) {
                Some(ip) => Ok(vec![ip]),
                None => self.answer(&self.ips, host),
            }
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>> {
        Box::pin(async move { self.answer(&self.srv, name) })
    }

    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<MxRecord>, DnsError>> {
        Box::pin(async move { self.answer(&self.mx, domain) })
    }
}

/// Lookup key: DNS names compare without case and without the root dot.
fn key(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    const LIMIT: Duration = Duration::from_millis(1500);

    #[tokio::test]
    async fn system_resolver_returns_ip_literals_as_is() {
        let r = SystemResolver::new(LIMIT).expect("resolver");
        assert_eq!(
            r.ips("192.0.2.7").await,
            Ok(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))])
        );
        assert_eq!(r.ips("::1").await, Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]));
        assert_eq!(r.ips("[::1]").await, Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]));
    }

    #[tokio::test]
    async fn system_resolver_finds_localhost() {
        let r = SystemResolver::new(LIMIT).expect("resolver");
        let ips = tokio::time::timeout(LIMIT * 2, r.ips("localhost"))
            .await
            .expect("returns in time");
        let ips = ips.expect("localhost resolves");
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    }

    #[tokio::test]
    async fn system_resolver_fails_fast_on_a_bogus_name() {
        let r = SystemResolver::new(LIMIT).expect("resolver");
        let started = Instant::now();
        let name = "no-such-host.mailcheck.invalid";
        let ips = tokio::time::timeout(LIMIT * 2, r.ips(name))
            .await
            .expect("ips() returns in time");
        assert!(ips.is_err(), "{ips:?}");
        let srv = tokio::time::timeout(LIMIT * 2, r.srv("_imaps._tcp.mailcheck.invalid"))
            .await
            .expect("srv");
        assert!(srv.is_err(), "{srv:?}");
        let mx = tokio::time::timeout(LIMIT * 2, r.mx("mailcheck.invalid"))
            .await
            .expect("mx");
        assert!(mx.is_err(), "{mx:?}");
        assert!(started.elapsed() < LIMIT * 4);
    }

    #[tokio::test]
    async fn srv_and_mx_give_up_on_a_silent_server() {
        // A bound socket that never replies: the query goes nowhere, like a dead DNS server.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr");
        let limit = Duration::from_millis(400);
        let r = SystemResolver::with_server(limit, addr).expect("resolver");
        let started = Instant::now();
        let srv = tokio::time::timeout(limit * 2, r.srv("_imaps._tcp.example.org"))
            .await
            .expect("srv returns");
        assert!(matches!(srv, Err(DnsError::Timeout(_))), "{srv:?}");
        let mx = tokio::time::timeout(limit * 2, r.mx("example.org"))
            .await
            .expect("mx returns");
        assert!(matches!(mx, Err(DnsError::Timeout(_))), "{mx:?}");
        assert!(started.elapsed() < limit * 4);
    }

    #[tokio::test]
    async fn without_dns_configuration_addresses_still_work() {
        let r = SystemResolver {
            timeout: LIMIT,
            dns: Err("no usable DNS configuration".into()),
        };
        assert!(matches!(
            r.srv("_imaps._tcp.example.org").await,
            Err(DnsError::Failed { .. })
        ));
        assert!(matches!(r.mx("example.org").await, Err(DnsError::Failed { .. })));
        assert_eq!(
            r.ips("127.0.0.1").await,
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        );
    }

    #[tokio::test]
    async fn static_resolver_answers_only_what_was_registered() {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let rec = SrvRecord {
            priority: 0,
            weight: 1,
            port: 993,
            target: "imap.example.org".into(),
        };
        // The builder methods share names with the trait's, so queries go through the trait.
        let r = StaticResolver::new()
            .ip("Imap.Example.org.", ip)
            .srv("_imaps._tcp.example.org", rec.clone())
            .mx(
                "example.org",
                MxRecord {
                    preference: 10,
                    host: "mx.example.org".into(),
                },
            )
            .error(
                "broken.example.org",
                DnsError::Timeout("broken.example.org".into()),
            );
        assert_eq!(Resolver::ips(&r, "imap.example.org").await, Ok(vec![ip]));
        assert_eq!(Resolver::srv(&r, "_imaps._tcp.example.org.").await, Ok(vec![rec]));
        assert_eq!(Resolver::mx(&r, "EXAMPLE.ORG").await.map(|v| v.len()), Ok(1));
        assert_eq!(
            r.ips("other.example.org").await,
            Err(DnsError::NotFound("other.example.org".into()))
        );
        assert!(matches!(
            Resolver::srv(&r, "_pop3s._tcp.example.org").await,
            Err(DnsError::NotFound(_))
        ));
        assert!(matches!(
            Resolver::mx(&r, "broken.example.org").await,
            Err(DnsError::Timeout(_))
        ));
        assert_eq!(
            r.ips("127.0.0.1").await,
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        );
    }

    #[test]
    fn names_become_absolute_and_print_without_the_root_dot() {
        let n = absolute_name("_imaps._tcp.example.org").expect("valid");
        assert!(n.is_fqdn());
        assert_eq!(host_text(&n), "_imaps._tcp.example.org");
        assert_eq!(host_text(&Name::root()), ".");
        assert!(absolute_name("bad..name").is_err());
    }

    #[test]
    fn getaddrinfo_texts_map_to_not_found() {
        let e = std::io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(
            libc_error("x.invalid", &e),
            DnsError::NotFound("x.invalid".into())
        );
        let e = std::io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        assert!(matches!(libc_error("x.invalid", &e), DnsError::Failed { .. }));
    }
}
