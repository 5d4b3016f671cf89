//! Finding a domain's mail endpoints: what `mailcheck probe example.org` probes.
//!
//! Sources, most trusted first: a built-in preset for the domain; the domain's own
//! SRV records (RFC 6186, with the implicit-TLS names of RFC 8314); a preset
//! recognised from the MX hosts; and last, conventional names such as
//! `imap.DOMAIN` that resolve. A service found by an earlier source is not looked
//! up again by a later one, so the report shows what a careful mail client would use.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use super::dns::{DnsError, Resolver, SrvRecord};
use super::model::{Endpoint, Service, TlsMode};
use super::presets::{self, Preset};

/// What discovery found, and how, in words for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub endpoints: Vec<Endpoint>,
    /// E.g. `SRV _pop3s._tcp.example.org says: not offered`, `no MX records`,
    /// `preset gmail (by MX aspmx.l.google.com)`.
    pub notes: Vec<String>,
}

/// SRV service labels and what they promise: `s` names mean TLS from the first byte.
const SRV_LABELS: [(&str, Service, TlsMode); 6] = [
    ("_imaps._tcp", Service::Imap, TlsMode::Implicit),
    ("_imap._tcp", Service::Imap, TlsMode::Starttls),
    ("_pop3s._tcp", Service::Pop3, TlsMode::Implicit),
    ("_pop3._tcp", Service::Pop3, TlsMode::Starttls),
    ("_submissions._tcp", Service::Smtp, TlsMode::Implicit),
    ("_submission._tcp", Service::Smtp, TlsMode::Starttls),
];

/// Host name prefixes admins commonly use, tried only when nothing better answered.
const PREFIXES: [&str; 5] = ["imap", "pop", "pop3", "smtp", "mail"];

/// Which conventional prefixes serve a service, and the ports to try there (implicit TLS first).
fn conventional(service: Service) -> (&'static [&'static str], [(u16, TlsMode); 2]) {
    match service {
        Service::Imap => (
            &["imap", "mail"],
            [(993, TlsMode::Implicit), (143, TlsMode::Starttls)],
        ),
        Service::Pop3 => (
            &["pop", "pop3", "mail"],
            [(995, TlsMode::Implicit), (110, TlsMode::Starttls)],
        ),
        Service::Smtp => (
            &["smtp", "mail"],
            [(465, TlsMode::Implicit), (587, TlsMode::Starttls)],
        ),
    }
}

/// Find the endpoints of `domain` for the services in `only` (all when empty).
///
/// Never fails: DNS trouble becomes a note, and the caller decides what an empty
/// result means. Lookups run concurrently, each bounded by the resolver's timeout.
pub async fn discover(domain: &str, only: &[Service], resolver: &dyn Resolver) -> Discovery {
    let mut found = Discovery::default();
    let domain = normalize(domain);
    if domain.is_empty() {
        found.notes.push("no domain given".to_string());
        return found;
    }
    let wanted: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(s))
        .collect();

    if let Some(preset) = presets::by_domain(&domain) {
        let source = format!("preset {} (by domain {domain})", preset.name);
        found.notes.push(source.clone());
        use_preset(&mut found, preset, &source, &wanted);
        return found;
    }

    // Ask everything at once: one slow or dead server then costs one timeout, not twelve.
    let srv_names: Vec<(String, Service, TlsMode)> = SRV_LABELS
        .iter()
        .filter(|(_, s, _)| wanted.contains(s))
        .map(|&(label, s, tls)| (format!("{label}.{domain}"), s, tls))
        .collect();
    let prefixes: Vec<&str> = PREFIXES
        .into_iter()
        .filter(|p| wanted.iter().any(|&s| conventional(s).0.contains(p)))
        .collect();
    let hosts: Vec<String> = prefixes.iter().map(|p| format!("{p}.{domain}")).collect();
    let srv_queries: Vec<_> = srv_names.iter().map(|(name, _, _)| resolver.srv(name)).collect();
    let host_queries: Vec<_> = hosts.iter().map(|h| resolver.ips(h)).collect();
    let (srv_answers, mx_answer, host_answers) = tokio::join!(
        join_all(srv_queries),
        resolver.mx(&domain),
        join_all(host_queries)
    );

    let mut settled: Vec<Service> = Vec::new();
    use_srv(
        &mut found,
        &mut settled,
        &domain,
        &wanted,
        &srv_names,
        srv_answers,
    );

    match mx_answer {
        Ok(mut mx) => {
            mx.sort_by_key(|m| m.preference);
            if mx.len() == 1 && mx[0].host == "." {
                found
                    .notes
                    .push(format!("null MX: {domain} says it accepts no mail (RFC 7505)"));
            } else if let Some((preset, host)) = mx
                .iter()
                .find_map(|m| presets::by_mx_host(&m.host).map(|p| (p, m.host.as_str())))
            {
                let source = format!("preset {} (by MX {host})", preset.name);
                found.notes.push(source.clone());
                let missing: Vec<Service> = wanted.iter().copied().filter(|s| !settled.contains(s)).collect();
                if !missing.is_empty() {
                    settled.extend(use_preset(&mut found, preset, &source, &missing));
                }
            } else {
                let list: Vec<&str> = mx.iter().map(|m| m.host.as_str()).collect();
                found
                    .notes
                    .push(format!("MX {} (no known provider)", list.join(", ")));
            }
        }
        Err(DnsError::NotFound(_)) => found.notes.push("no MX records".to_string()),
        Err(e) => found.notes.push(format!("MX: {e}")),
    }

    let missing: Vec<Service> = wanted.iter().copied().filter(|s| !settled.contains(s)).collect();
    if !missing.is_empty() {
        use_conventional(&mut found, &missing, &prefixes, &hosts, host_answers);
    }

    dedup(&mut found.endpoints);
    found
}

/// Add `preset`'s endpoints for `services`; returns the services it covered.
fn use_preset(found: &mut Discovery, preset: &Preset, source: &str, services: &[Service]) -> Vec<Service> {
    found.endpoints.extend(
        preset
            .endpoints_from(source)
            .into_iter()
            .filter(|e| services.contains(&e.service)),
    );
    for &s in services {
        if !preset.offers(s) {
            found
                .notes
                .push(format!("preset {} has no {s} endpoint", preset.name));
        }
    }
    found.notes.extend(preset.notes.iter().map(|n| n.to_string()));
    services.iter().copied().filter(|&s| preset.offers(s)).collect()
}

/// Turn SRV answers into endpoints, service by service, in RFC 2782 order.
fn use_srv(
    found: &mut Discovery,
    settled: &mut Vec<Service>,
    domain: &str,
    wanted: &[Service],
    names: &[(String, Service, TlsMode)],
    answers: Vec<Result<Vec<SrvRecord>, DnsError>>,
) {
    let mut any_record = false;
    let mut all_missing = true;
    for &service in wanted {
        let mut records: Vec<(SrvRecord, TlsMode, &str)> = Vec::new();
        let (mut asked, mut refused) = (0, 0);
        for ((name, s, tls), answer) in names.iter().zip(&answers) {
            if *s != service {
                continue;
            }
            asked += 1;
            match answer {
                Ok(recs) => {
                    any_record = true;
                    all_missing = false;
                    let (dots, real): (Vec<&SrvRecord>, Vec<&SrvRecord>) =
                        recs.iter().partition(|r| r.target == "." || r.target.is_empty());
                    if real.is_empty() && !dots.is_empty() {
                        refused += 1;
                        found.notes.push(format!("SRV {name} says: not offered"));
                    }
                    for r in real {
                        if r.port == 0 {
                            found
                                .notes
                                .push(format!("SRV {name} names port 0 for {}; ignored", r.target));
                        } else {
                            records.push((r.clone(), *tls, name));
                        }
                    }
                }
                Err(DnsError::NotFound(_)) => {}
                Err(e) => {
                    all_missing = false;
                    found.notes.push(format!("SRV {e}"));
                }
            }
        }
        // Lowest priority first; among equals the heavier weight, then implicit TLS
        // (RFC 8314 prefers it), which the stable sort keeps from the label order.
        records.sort_by_key(|(r, _, _)| (r.priority, std::cmp::Reverse(r.weight)));
        if !records.is_empty() {
            settled.push(service);
            found
                .endpoints
                .extend(records.into_iter().map(|(r, tls, name)| Endpoint {
                    service,
                    host: r.target,
                    port: r.port,
                    tls,
                    source: format!("SRV {name}"),
                }));
        } else if asked > 0 && refused == asked {
            // The domain said outright it has no such service: guessing names would contradict it.
            settled.push(service);
            found
                .notes
                .push(format!("{service}: not offered according to SRV; not probed"));
        }
    }
    if !any_record && all_missing && !names.is_empty() {
        found.notes.push(format!("no SRV records for {domain}"));
    }
}

/// Add conventional names that resolve, for the services nothing else covered.
fn use_conventional(
    found: &mut Discovery,
    missing: &[Service],
    prefixes: &[&str],
    hosts: &[String],
    answers: Vec<Result<Vec<std::net::IpAddr>, DnsError>>,
) {
    let mut used: Vec<&str> = Vec::new();
    for &service in missing {
        let (service_prefixes, ports) = conventional(service);
        for ((prefix, host), answer) in prefixes.iter().zip(hosts).zip(&answers) {
            if !service_prefixes.contains(prefix) || answer.is_err() {
                continue;
            }
            for (port, tls) in ports {
                found.endpoints.push(Endpoint {
                    service,
                    host: host.clone(),
                    port,
                    tls,
                    source: "conventional name".to_string(),
                });
            }
            if !used.contains(&host.as_str()) {
                used.push(host);
            }
        }
    }
    let names: Vec<String> = missing.iter().map(|s| s.name().to_string()).collect();
    if used.is_empty() {
        found.notes.push(format!(
            "no conventional host names resolve (for {})",
            names.join(", ")
        ));
    } else {
        found
            .notes
            .push(format!("conventional names that resolve: {}", used.join(", ")));
    }
    for (host, answer) in hosts.iter().zip(&answers) {
        if let Err(e @ (DnsError::Timeout(_) | DnsError::Failed { .. })) = answer {
            if used.is_empty() || !used.contains(&host.as_str()) {
                found.notes.push(e.to_string());
            }
        }
    }
}

/// Group by service (stable, so each keeps its preference order) and keep the first of
/// endpoints that share service, host and port (earlier sources win).
fn dedup(endpoints: &mut Vec<Endpoint>) {
    endpoints.sort_by_key(|e| e.service);
    let mut seen: Vec<(Service, String, u16)> = Vec::new();
    endpoints.retain(|e| {
        let k = (e.service, e.host.to_ascii_lowercase(), e.port);
        if seen.contains(&k) {
            false
        } else {
            seen.push(k);
            true
        }
    });
}

/// `Example.ORG.` and `user@example.org` both mean `example.org`.
fn normalize(domain: &str) -> String {
    let d = domain.trim();
    let d = d.rsplit('@').next().unwrap_or(d);
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// Run futures concurrently and collect their outputs in order (the few we have
/// don't justify pulling in the `futures` crate for its `join_all`).
async fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut pending: Vec<Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut all_ready = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => all_ready = false,
                }
            }
        }
        if all_ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::dns::{BoxFuture, MxRecord, StaticResolver};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_string(),
        }
    }

    fn summary(d: &Discovery) -> Vec<String> {
        d.endpoints
            .iter()
            .map(|e| format!("{} {}:{} {}", e.service, e.host, e.port, e.tls))
            .collect()
    }

    #[tokio::test]
    async fn preset_domain_needs_no_dns() {
        let d = discover("Yandex.RU.", &[], &StaticResolver::new()).await;
        assert_eq!(
            summary(&d),
            [
                "imap imap.yandex.ru:993 TLS",
                "pop3 pop.yandex.ru:995 TLS",
                "smtp smtp.yandex.ru:465 TLS"
            ]
        );
        assert!(d
            .endpoints
            .iter()
            .all(|e| e.source == "preset yandex (by domain yandex.ru)"));
        assert!(d.notes.iter().any(|n| n.contains("app password")));
    }

    #[tokio::test]
    async fn preset_domain_respects_only_and_missing_services() {
        let d = discover("icloud.com", &[Service::Pop3], &StaticResolver::new()).await;
        assert!(d.endpoints.is_empty());
        assert!(
            d.notes.iter().any(|n| n == "preset icloud has no pop3 endpoint"),
            "{:?}",
            d.notes
        );
    }

    #[tokio::test]
    async fn srv_records_ordered_and_mapped_to_tls_modes() {
        let r = StaticResolver::new()
            .srv("_imaps._tcp.example.org", srv(10, 0, 993, "imap-b.example.org"))
            .srv("_imaps._tcp.example.org", srv(0, 5, 993, "imap-a.example.org"))
            .srv("_imap._tcp.example.org", srv(0, 1, 143, "imap-a.example.org"))
            .srv("_imap._tcp.example.org", srv(0, 9, 1143, "imap-c.example.org"))
            .srv(
                "_submissions._tcp.example.org",
                srv(0, 0, 465, "smtp.example.org"),
            )
            .srv("_submission._tcp.example.org", srv(0, 0, 587, "smtp.example.org"))
            .srv("_pop3s._tcp.example.org", srv(0, 0, 0, "."))
            .srv("_pop3._tcp.example.org", srv(0, 0, 0, "."))
            .ip("imap.example.org", ip(1))
            .ip("pop.example.org", ip(2))
            .ip("mail.example.org", ip(3));
        let d = discover("example.org", &[], &r).await;
        assert_eq!(
            summary(&d),
            [
                "imap imap-c.example.org:1143 STARTTLS",
                "imap imap-a.example.org:993 TLS",
                "imap imap-a.example.org:143 STARTTLS",
                "imap imap-b.example.org:993 TLS",
                "smtp smtp.example.org:465 TLS",
                "smtp smtp.example.org:587 STARTTLS",
            ]
        );
        assert_eq!(d.endpoints[1].source, "SRV _imaps._tcp.example.org");
        assert_eq!(d.endpoints[2].source, "SRV _imap._tcp.example.org");
        assert!(d
            .notes
            .contains(&"SRV _pop3s._tcp.example.org says: not offered".to_string()));
        assert!(d
            .notes
            .contains(&"SRV _pop3._tcp.example.org says: not offered".to_string()));
        assert!(
            d.notes.iter().any(|n| n.starts_with("pop3: not offered")),
            "{:?}",
            d.notes
        );
    }

    #[tokio::test]
    async fn srv_for_one_service_leaves_the_others_to_fallbacks() {
        let r = StaticResolver::new()
            .srv("_imaps._tcp.example.org", srv(0, 0, 993, "."))
            .srv("_submission._tcp.example.org", srv(0, 0, 587, "mx.example.org"))
            .ip("imap.example.org", ip(1))
            .ip("smtp.example.org", ip(2));
        let d = discover("example.org", &[Service::Imap, Service::Smtp], &r).await;
        // _imap._tcp was not found, so a lone "." on _imaps does not rule IMAP out.
        assert_eq!(
            summary(&d),
            [
                "imap imap.example.org:993 TLS",
                "imap imap.example.org:143 STARTTLS",
                "smtp mx.example.org:587 STARTTLS",
            ]
        );
        assert!(d.endpoints[..2].iter().all(|e| e.source == "conventional name"));
        assert!(d
            .notes
            .contains(&"SRV _imaps._tcp.example.org says: not offered".to_string()));
    }

    #[tokio::test]
    async fn mx_host_selects_a_preset_for_missing_services() {
        let r = StaticResolver::new()
            .mx(
                "example.org",
                MxRecord {
                    preference: 20,
                    host: "alt1.aspmx.l.google.com".into(),
                },
            )
            .mx(
                "example.org",
                MxRecord {
                    preference: 10,
                    host: "aspmx.l.google.com".into(),
                },
            )
            .srv("_imaps._tcp.example.org", srv(0, 0, 993, "imap.example.org"))
            .ip("smtp.example.org", ip(9));
        let d = discover("example.org", &[], &r).await;
        assert_eq!(
            summary(&d),
            [
                "imap imap.example.org:993 TLS",
                "pop3 pop.gmail.com:995 TLS",
                "smtp smtp.gmail.com:465 TLS",
                "smtp smtp.gmail.com:587 STARTTLS",
            ]
        );
        assert_eq!(d.endpoints[1].source, "preset gmail (by MX aspmx.l.google.com)");
        assert!(d
            .notes
            .contains(&"preset gmail (by MX aspmx.l.google.com)".to_string()));
    }

    #[tokio::test]
    async fn unknown_mx_is_reported_and_conventional_names_used() {
        let r = StaticResolver::new()
            .mx(
                "example.net",
                MxRecord {
                    preference: 10,
                    host: "mx.example.net".into(),
                },
            )
            .ip("mail.example.net", ip(4));
        let d = discover("example.net", &[], &r).await;
        assert_eq!(
            summary(&d),
            [
                "imap mail.example.net:993 TLS",
                "imap mail.example.net:143 STARTTLS",
                "pop3 mail.example.net:995 TLS",
                "pop3 mail.example.net:110 STARTTLS",
                "smtp mail.example.net:465 TLS",
                "smtp mail.example.net:587 STARTTLS",
            ]
        );
        assert!(d
            .notes
            .contains(&"MX mx.example.net (no known provider)".to_string()));
        assert!(d.notes.contains(&"no SRV records for example.net".to_string()));
        assert!(d
            .notes
            .contains(&"conventional names that resolve: mail.example.net".to_string()));
    }

    #[tokio::test]
    async fn conventional_names_only_when_they_resolve() {
        let r = StaticResolver::new()
            .ip("pop3.example.org", ip(5))
            .ip("smtp.example.org", ip(6));
        let d = discover("example.org", &[], &r).await;
        assert_eq!(
            summary(&d),
            [
                "pop3 pop3.example.org:995 TLS",
                "pop3 pop3.example.org:110 STARTTLS",
                "smtp smtp.example.org:465 TLS",
                "smtp smtp.example.org:587 STARTTLS",
            ]
        );
    }

    #[tokio::test]
    async fn only_filter_limits_services() {
        let r = StaticResolver::new()
            .srv("_imaps._tcp.example.org", srv(0, 0, 993, "imap.example.org"))
            .ip("mail.example.org", ip(7));
        let d = discover("example.org", &[Service::Smtp], &r).await;
        assert_eq!(
            summary(&d),
            [
                "smtp mail.example.org:465 TLS",
                "smtp mail.example.org:587 STARTTLS"
            ]
        );
        let d = discover("gmail.com", &[Service::Imap], &r).await;
        assert_eq!(summary(&d), ["imap imap.gmail.com:993 TLS"]);
    }

    #[tokio::test]
    async fn empty_domain_gives_no_endpoints_and_says_why() {
        let d = discover("nothing.example", &[], &StaticResolver::new()).await;
        assert!(d.endpoints.is_empty());
        assert!(d.notes.contains(&"no MX records".to_string()));
        assert!(d
            .notes
            .contains(&"no SRV records for nothing.example".to_string()));
        assert!(
            d.notes
                .iter()
                .any(|n| n.starts_with("no conventional host names resolve")),
            "{:?}",
            d.notes
        );
        let d = discover("  ", &[], &StaticResolver::new()).await;
        assert!(d.endpoints.is_empty() && !d.notes.is_empty());
    }

    #[tokio::test]
    async fn dns_failures_become_notes() {
        let r = StaticResolver::new()
            .error("example.org", DnsError::Timeout("example.org".into()))
            .error(
                "_imaps._tcp.example.org",
                DnsError::Timeout("_imaps._tcp.example.org".into()),
            )
            .ip("imap.example.org", ip(1));
        let d = discover("example.org", &[Service::Imap], &r).await;
        assert_eq!(
            summary(&d),
            [
                "imap imap.example.org:993 TLS",
                "imap imap.example.org:143 STARTTLS"
            ]
        );
        assert!(
            d.notes
                .contains(&"MX: example.org: DNS lookup timed out".to_string()),
            "{:?}",
            d.notes
        );
        assert!(d
            .notes
            .contains(&"SRV _imaps._tcp.example.org: DNS lookup timed out".to_string()));
        assert!(!d.notes.iter().any(|n| n.starts_with("no SRV records")));
    }

    #[tokio::test]
    async fn null_mx_is_noted() {
        let r = StaticResolver::new().mx(
            "example.com",
            MxRecord {
                preference: 0,
                host: ".".into(),
            },
        );
        let d = discover("example.com", &[], &r).await;
        assert!(d.notes.iter().any(|n| n.starts_with("null MX")), "{:?}", d.notes);
    }

    #[tokio::test]
    async fn endpoints_are_deduplicated() {
        let r = StaticResolver::new()
            .srv("_imaps._tcp.example.org", srv(0, 0, 993, "mail.example.org"))
            .srv("_imaps._tcp.example.org", srv(1, 0, 993, "MAIL.example.org"))
            .srv("_imap._tcp.example.org", srv(0, 0, 993, "mail.example.org"));
        let d = discover("example.org", &[Service::Imap], &r).await;
        assert_eq!(summary(&d), ["imap mail.example.org:993 TLS"]);
    }

    /// Answers everything after a fixed delay, to show the lookups overlap.
    struct Slow(Duration);

    impl Resolver for Slow {
        fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
            Box::pin(async move {
                tokio::time::sleep(self.0).await;
                Err(DnsError::NotFound(host.to_string()))
            })
        }
        fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>> {
            Box::pin(async move {
                tokio::time::sleep(self.0).await;
                Err(DnsError::Timeout(name.to_string()))
            })
        }
        fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<MxRecord>, DnsError>> {
            Box::pin(async move {
                tokio::time::sleep(self.0).await;
                Err(DnsError::Timeout(domain.to_string()))
            })
        }
    }

    #[tokio::test]
    async fn lookups_run_concurrently() {
        let started = Instant::now();
        let d = discover("example.org", &[], &Slow(Duration::from_millis(200))).await;
        // Twelve lookups one after another would take 2.4 s.
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        assert!(d.endpoints.is_empty());
        assert_eq!(
            d.notes.iter().filter(|n| n.contains("timed out")).count(),
            7,
            "{:?}",
            d.notes
        );
    }
}
