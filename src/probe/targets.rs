//! What the user named on the command line -> the endpoints to probe:
//! URLs as they are, preset names from the table, domains by discovery.

use super::discover;
use super::dns::Resolver;
use super::model::{Endpoint, Service, TlsMode};
use super::presets;

/// Turn the probe's arguments into endpoints (and notes on how they were found).
pub async fn endpoints(
    targets: &[String],
    only: &[Service],
    resolver: &dyn Resolver,
) -> Result<(Vec<Endpoint>, Vec<String>), String> {
    let mut out: Vec<Endpoint> = Vec::new();
    let mut notes = Vec::new();
    for t in targets {
        if t.contains("://") {
            let ep = parse_url(t)?;
            if only.is_empty() || only.contains(&ep.service) {
                out.push(ep);
            }
        } else if let Some(p) = presets::find(t) {
            notes.push(format!("{}: preset {}", t, p.name));
            for n in p.notes {
                notes.push(format!("  {n}"));
            }
            out.extend(
                p.endpoints()
                    .into_iter()
                    .filter(|e| only.is_empty() || only.contains(&e.service)),
            );
        } else if t.contains('.') {
            let found = discover::discover(t, only, resolver).await;
            notes.extend(found.notes.into_iter().map(|n| format!("{t}: {n}")));
            if found.endpoints.is_empty() {
                notes.push(format!("{t}: no mail endpoints found"));
            }
            out.extend(found.endpoints);
        } else {
            let close = presets::closest(t);
            let hint = if close.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", close.join(", "))
            };
            return Err(format!(
                "`{t}` is not a known provider, a domain or a URL{hint} (presets: {})",
                presets::all()
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut unique: Vec<Endpoint> = Vec::new();
    for ep in out {
        if !unique
            .iter()
            .any(|u| u.service == ep.service && u.host == ep.host && u.port == ep.port)
        {
            unique.push(ep);
        }
    }
    Ok((unique, notes))
}

/// `imaps://host`, `pop3://host:110`, `submission://host`, ...
pub fn parse_url(text: &str) -> Result<Endpoint, String> {
    let url = url::Url::parse(text).map_err(|_| format!("`{text}` is not a URL"))?;
    let (service, tls, port) = match url.scheme() {
        "imap" => (Service::Imap, TlsMode::Starttls, 143),
        "imaps" => (Service::Imap, TlsMode::Implicit, 993),
        "pop3" | "pop" => (Service::Pop3, TlsMode::Starttls, 110),
        "pop3s" | "pops" => (Service::Pop3, TlsMode::Implicit, 995),
        "smtp" => (Service::Smtp, TlsMode::Starttls, 25),
        "submission" => (Service::Smtp, TlsMode::Starttls, 587),
        "smtps" | "submissions" => (Service::Smtp, TlsMode::Implicit, 465),
        other => {
            return Err(format!(
                "unknown scheme `{other}://` (known: imap, imaps, pop3, pop3s, smtp, submission, smtps)"
            ))
        }
    };
    if url.password().is_some() {
        return Err("a password in the URL would be visible to others; use MAILCHECK_PASSWORD".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(format!("`{text}` has no host")),
    };
    Ok(Endpoint {
        service,
        host,
        port: url.port().unwrap_or(port),
        tls,
        source: "command line".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_endpoints() {
        let e = parse_url("imaps://mail.example.org").unwrap();
        assert_eq!(
            (e.service, e.port, e.tls),
            (Service::Imap, 993, TlsMode::Implicit)
        );
        let e = parse_url("pop3://mail.example.org:110").unwrap();
        assert_eq!(
            (e.service, e.port, e.tls),
            (Service::Pop3, 110, TlsMode::Starttls)
        );
        let e = parse_url("submission://smtp.example.org").unwrap();
        assert_eq!((e.port, e.tls), (587, TlsMode::Starttls));
        assert!(parse_url("gopher://x").is_err());
        assert!(parse_url("imap://u:p@x").is_err());
    }
}
