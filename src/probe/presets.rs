//! Built-in provider presets: the endpoints big mail providers publish, so that
//! `mailcheck probe yandex` needs no DNS at all, plus the provider quirks users
//! trip over (app passwords, protocols switched off by default, login formats).
//!
//! Only hosts and ports the providers document are listed; when unsure, leave
//! it out and let discovery find it.

use super::model::{Endpoint, Service, TlsMode};

use Service::{Imap, Pop3, Smtp};
use TlsMode::{Implicit, Starttls};

/// One provider's documented client endpoints and the advice that goes with them.
#[derive(Debug)]
pub struct Preset {
    /// Canonical name, shown to the user and accepted on the command line.
    pub name: &'static str,
    /// Other names users type for the same provider (matched case-insensitively).
    pub aliases: &'static [&'static str],
    /// Mailbox domains hosted by the provider: `user@DOMAIN` uses this preset.
    pub domains: &'static [&'static str],
    /// MX host suffixes that identify the provider for domains it hosts
    /// (`aspmx.l.google.com` matches `google.com`).
    pub mx_suffixes: &'static [&'static str],
    /// Endpoints in the order worth probing: preferred first.
    pub endpoints: &'static [(Service, &'static str, u16, TlsMode)],
    /// Provider specifics shown next to the results.
    pub notes: &'static [&'static str],
}

impl Preset {
    /// The preset's endpoints, tagged `preset NAME` so reports say where they came from.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints_from(&format!("preset {}", self.name))
    }

    /// The preset's endpoints with a caller-chosen source (discovery says how it matched).
    pub fn endpoints_from(&self, source: &str) -> Vec<Endpoint> {
        self.endpoints
            .iter()
            .map(|&(service, host, port, tls)| Endpoint {
                service,
                host: host.to_string(),
                port,
                tls,
                source: source.to_string(),
            })
            .collect()
    }

    /// Whether the preset lists any endpoint for `service` (iCloud has no POP3).
    pub fn offers(&self, service: Service) -> bool {
        self.endpoints.iter().any(|e| e.0 == service)
    }
}

static PRESETS: &[Preset] = &[
    Preset {
        name: "yandex",
        aliases: &["ya", "yandex.ru", "yandex360", "yandex-360"],
        domains: &[
            "yandex.ru",
            "ya.ru",
            "yandex.com",
            "yandex.by",
            "yandex.kz",
            "yandex.ua",
            "narod.ru",
        ],
        mx_suffixes: &["yandex.net", "yandex.ru"],
        endpoints: &[
            (Imap, "imap.yandex.ru", 993, Implicit),
            (Pop3, "pop.yandex.ru", 995, Implicit),
            (Smtp, "smtp.yandex.ru", 465, Implicit),
        ],
        notes: &[
            "login: the part before @ for @yandex.ru boxes, the full address for domains hosted at Yandex",
            "accounts with two-factor authentication need an app password",
            "IMAP and POP3 are each switched on separately in the web settings (\"Mail clients\")",
            "devices without TLS (scanners) can send through smtp-devices.yandex.com:25 with AUTH, \
             to Yandex-hosted recipients only",
        ],
    },
    Preset {
        name: "mail.ru",
        aliases: &["mailru", "mail-ru"],
        domains: &["mail.ru", "inbox.ru", "list.ru", "bk.ru", "internet.ru"],
        mx_suffixes: &["mail.ru"],
        endpoints: &[
            (Imap, "imap.mail.ru", 993, Implicit),
            (Pop3, "pop.mail.ru", 995, Implicit),
            (Smtp, "smtp.mail.ru", 465, Implicit),
        ],
        notes: &[
            "mail clients usually need a password for external applications, made in the account's \
                  security settings, not the web login password",
        ],
    },
    Preset {
        name: "gmail",
        aliases: &["google", "googlemail", "gsuite", "workspace", "google-workspace"],
        domains: &["gmail.com", "googlemail.com"],
        mx_suffixes: &["google.com", "googlemail.com"],
        endpoints: &[
            (Imap, "imap.gmail.com", 993, Implicit),
            (Pop3, "pop.gmail.com", 995, Implicit),
            (Smtp, "smtp.gmail.com", 465, Implicit),
            (Smtp, "smtp.gmail.com", 587, Starttls),
        ],
        notes: &[
            "password logins need an app password (2-Step Verification on) or OAuth2",
            "POP3 must be switched on in Gmail settings (Forwarding and POP/IMAP)",
        ],
    },
    Preset {
        name: "office365",
        aliases: &[
            "outlook",
            "hotmail",
            "live",
            "msn",
            "o365",
            "microsoft",
            "microsoft365",
            "exchange-online",
        ],
        domains: &["outlook.com", "hotmail.com", "live.com", "msn.com"],
        mx_suffixes: &["protection.outlook.com"],
        endpoints: &[
            (Imap, "outlook.office365.com", 993, Implicit),
            (Pop3, "outlook.office365.com", 995, Implicit),
            (Smtp, "smtp.office365.com", 587, Starttls),
        ],
        notes: &[
            "Microsoft is retiring plain password logins; many accounts accept only OAuth2 (modern auth)",
            "personal Outlook.com accounts can also send through smtp-mail.outlook.com:587 (STARTTLS)",
            "POP3 may need to be switched on in the account's mail settings",
        ],
    },
    Preset {
        name: "icloud",
        aliases: &["apple", "icloud-mail"],
        domains: &["icloud.com", "me.com", "mac.com"],
        mx_suffixes: &["mail.icloud.com"],
        endpoints: &[
            (Imap, "imap.mail.me.com", 993, Implicit),
            (Smtp, "smtp.mail.me.com", 587, Starttls),
        ],
        notes: &[
            "iCloud Mail has no POP3",
            "mail clients need an app-specific password (Apple ID two-factor authentication on)",
            "IMAP login is usually the name before @; SMTP login is the full address",
        ],
    },
    Preset {
        name: "yahoo",
        aliases: &["yahoo-mail", "ymail", "yahoo.com"],
        domains: &["yahoo.com", "ymail.com", "rocketmail.com"],
        mx_suffixes: &["yahoodns.net"],
        endpoints: &[
            (Imap, "imap.mail.yahoo.com", 993, Implicit),
            (Pop3, "pop.mail.yahoo.com", 995, Implicit),
            (Smtp, "smtp.mail.yahoo.com", 465, Implicit),
            (Smtp, "smtp.mail.yahoo.com", 587, Starttls),
        ],
        notes: &["mail clients need an app password, made in the account security settings"],
    },
    Preset {
        name: "gmx",
        aliases: &["gmx.net", "gmx.de", "gmx-de"],
        domains: &["gmx.net", "gmx.de", "gmx.at", "gmx.ch"],
        mx_suffixes: &["gmx.net"],
        endpoints: &[
            (Imap, "imap.gmx.net", 993, Implicit),
            (Pop3, "pop.gmx.net", 995, Implicit),
            (Smtp, "mail.gmx.net", 465, Implicit),
            (Smtp, "mail.gmx.net", 587, Starttls),
        ],
        notes: &["POP3/IMAP access must be allowed in the web settings first"],
    },
    Preset {
        name: "gmx.com",
        aliases: &["gmx-com", "gmxcom"],
        domains: &["gmx.com"],
        mx_suffixes: &["gmx.com"],
        endpoints: &[
            (Imap, "imap.gmx.com", 993, Implicit),
            (Pop3, "pop.gmx.com", 995, Implicit),
            (Smtp, "mail.gmx.com", 587, Starttls),
        ],
        notes: &[
            "GMX.com (international) is run apart from GMX.net/.de and has its own servers",
            "POP3/IMAP access may need to be allowed in the web settings first",
        ],
    },
    Preset {
        name: "zoho",
        aliases: &["zohomail", "zoho-mail", "zoho.com"],
        domains: &["zoho.com", "zohomail.com"],
        mx_suffixes: &[],
        endpoints: &[
            (Imap, "imap.zoho.com", 993, Implicit),
            (Pop3, "pop.zoho.com", 995, Implicit),
            (Smtp, "smtp.zoho.com", 465, Implicit),
            (Smtp, "smtp.zoho.com", 587, Starttls),
        ],
        notes: &[
            "these are the servers for personal @zoho.com accounts; accounts on your own domain use \
             imappro/poppro/smtppro.zoho.com (preset zoho-org)",
            "IMAP and POP access are switched on in Zoho Mail settings; with two-factor \
             authentication use an app-specific password",
            "accounts in other Zoho data centres use the same names under zoho.eu, zoho.in, zoho.com.au",
        ],
    },
    Preset {
        name: "zoho-org",
        aliases: &["zohopro", "zoho-pro", "zoho-business"],
        domains: &[],
        mx_suffixes: &["zoho.com"],
        endpoints: &[
            (Imap, "imappro.zoho.com", 993, Implicit),
            (Pop3, "poppro.zoho.com", 995, Implicit),
            (Smtp, "smtppro.zoho.com", 465, Implicit),
            (Smtp, "smtppro.zoho.com", 587, Starttls),
        ],
        notes: &[
            "Zoho Mail for your own domain (organization accounts)",
            "IMAP and POP access are switched on in Zoho Mail settings; with two-factor \
             authentication use an app-specific password",
            "accounts in other Zoho data centres use the same names under zoho.eu, zoho.in, zoho.com.au",
        ],
    },
    Preset {
        name: "fastmail",
        aliases: &["fastmail.com"],
        domains: &["fastmail.com", "fastmail.fm"],
        mx_suffixes: &["messagingengine.com"],
        endpoints: &[
            (Imap, "imap.fastmail.com", 993, Implicit),
            (Pop3, "pop.fastmail.com", 995, Implicit),
            (Smtp, "smtp.fastmail.com", 465, Implicit),
            (Smtp, "smtp.fastmail.com", 587, Starttls),
        ],
        notes: &["mail clients need an app password (Settings, Privacy & Security), not the web password"],
    },
];

/// Every preset, in the order shown to users.
pub fn all() -> &'static [Preset] {
    PRESETS
}

/// The preset called `name` (or one of its aliases), ignoring case.
pub fn find(name: &str) -> Option<&'static Preset> {
    let name = name.trim();
    PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name) || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
}

/// The preset whose provider hosts mailboxes `@domain` (also accepts a full address).
pub fn by_domain(domain: &str) -> Option<&'static Preset> {
    let domain = normalize(domain.rsplit('@').next().unwrap_or(domain));
    PRESETS
        .iter()
        .find(|p| p.domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)))
}

/// The preset whose provider runs the MX host `mx`, for domains it hosts.
pub fn by_mx_host(mx: &str) -> Option<&'static Preset> {
    let mx = normalize(mx);
    if mx.is_empty() || mx == "." {
        return None;
    }
    PRESETS
        .iter()
        .find(|p| p.mx_suffixes.iter().any(|s| is_within(&mx, s)))
}

/// Up to three preset names close to a mistyped `name`, best first, for "did you mean".
pub fn closest(name: &str) -> Vec<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Vec::new();
    }
    // Allow roughly one typo per three characters, and at least two.
    let limit = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &'static str)> = PRESETS
        .iter()
        .filter_map(|p| {
            let best = std::iter::once(p.name)
                .chain(p.aliases.iter().copied())
                .map(|n| edit_distance(&name, n))
                .min()?;
            (best <= limit).then_some((best, p.name))
        })
        .collect();
    scored.sort_by_key(|&(d, _)| d);
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

/// Lower-case and drop a trailing root dot, so `MX.Yandex.NET.` compares equal to `mx.yandex.net`.
fn normalize(name: &str) -> String {
    let name = name.trim();
    let name = if name.len() > 1 {
        name.strip_suffix('.').unwrap_or(name)
    } else {
        name
    };
    name.to_ascii_lowercase()
}

/// `host` is `suffix` itself or a name under it (label boundary, so `evilgoogle.com` is not `google.com`).
fn is_within(host: &str, suffix: &str) -> bool {
    host == suffix
        || (host.len() > suffix.len()
            && host.ends_with(suffix)
            && host[..host.len() - suffix.len()].ends_with('.'))
}

/// Levenshtein distance over characters; names are short, so the simple O(n*m) table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_by_name_and_alias_ignoring_case() {
        assert_eq!(find("yandex").map(|p| p.name), Some("yandex"));
        assert_eq!(find("Mail.RU").map(|p| p.name), Some("mail.ru"));
        assert_eq!(find("mailru").map(|p| p.name), Some("mail.ru"));
        assert_eq!(find("Outlook").map(|p| p.name), Some("office365"));
        assert_eq!(find("hotmail").map(|p| p.name), Some("office365"));
        assert_eq!(find("office365").map(|p| p.name), Some("office365"));
        assert_eq!(find("GMAIL").map(|p| p.name), Some("gmail"));
        assert!(find("nosuchprovider").is_none());
        assert!(find("").is_none());
    }

    #[test]
    fn by_domain_covers_provider_domains() {
        for (domain, want) in [
            ("yandex.ru", "yandex"),
            ("ya.ru", "yandex"),
            ("yandex.com", "yandex"),
            ("narod.ru", "yandex"),
            ("gmail.com", "gmail"),
            ("googlemail.com", "gmail"),
            ("mail.ru", "mail.ru"),
            ("inbox.ru", "mail.ru"),
            ("list.ru", "mail.ru"),
            ("bk.ru", "mail.ru"),
            ("outlook.com", "office365"),
            ("hotmail.com", "office365"),
            ("live.com", "office365"),
            ("icloud.com", "icloud"),
            ("me.com", "icloud"),
            ("mac.com", "icloud"),
            ("yahoo.com", "yahoo"),
            ("gmx.net", "gmx"),
            ("gmx.de", "gmx"),
            ("gmx.com", "gmx.com"),
            ("zoho.com", "zoho"),
            ("fastmail.com", "fastmail"),
            ("GMAIL.COM.", "gmail"),
            ("someone@Yandex.RU", "yandex"),
        ] {
            assert_eq!(by_domain(domain).map(|p| p.name), Some(want), "{domain}");
        }
        assert!(by_domain("example.org").is_none());
        assert!(by_domain("notgmail.com").is_none());
    }

    #[test]
    fn by_mx_host_matches_on_label_boundaries() {
        for (mx, want) in [
            ("mx.yandex.net", "yandex"),
            ("mx.yandex.ru.", "yandex"),
            ("aspmx.l.google.com", "gmail"),
            ("ALT1.ASPMX.L.GOOGLE.COM", "gmail"),
            ("example-org.mail.protection.outlook.com", "office365"),
            ("mxs.mail.ru", "mail.ru"),
            ("mx.zoho.com", "zoho-org"),
            ("mx2.zoho.com", "zoho-org"),
            ("in1-smtp.messagingengine.com", "fastmail"),
            ("mx01.mail.icloud.com", "icloud"),
            ("mta5.am0.yahoodns.net", "yahoo"),
        ] {
            assert_eq!(by_mx_host(mx).map(|p| p.name), Some(want), "{mx}");
        }
        assert!(by_mx_host("mx.example.org").is_none());
        assert!(by_mx_host("evilgoogle.com").is_none());
        assert!(by_mx_host(".").is_none());
        assert!(by_mx_host("").is_none());
    }

    #[test]
    fn closest_suggests_near_names() {
        assert!(closest("yandx").contains(&"yandex"));
        assert!(closest("gmial").contains(&"gmail"));
        assert!(closest("outlok").contains(&"office365"));
        assert!(closest("zzzzzzzzzzzz").is_empty());
        assert!(closest("").is_empty());
        assert!(closest("x").len() <= 3);
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for p in all() {
            assert!(!p.endpoints.is_empty(), "{}", p.name);
            assert!(p.offers(Service::Imap) && p.offers(Service::Smtp), "{}", p.name);
            for n in std::iter::once(p.name).chain(p.aliases.iter().copied()) {
                assert!(seen.insert(n.to_ascii_lowercase()), "name {n} used twice");
            }
            for &(service, host, port, tls) in p.endpoints {
                assert!(!host.is_empty() && port != 0, "{}", p.name);
                let implicit_port = matches!(port, 993 | 995 | 465);
                assert_eq!(
                    implicit_port,
                    tls == TlsMode::Implicit,
                    "{} {service} {host}:{port}",
                    p.name
                );
            }
        }
        let icloud = find("icloud").map(|p| p.offers(Service::Pop3));
        assert_eq!(icloud, Some(false));
    }

    #[test]
    fn endpoints_carry_the_preset_source() {
        let eps = find("gmail").map(|p| p.endpoints()).unwrap_or_default();
        assert!(eps.iter().all(|e| e.source == "preset gmail"));
        assert!(eps
            .iter()
            .any(|e| e.service == Service::Smtp && e.port == 465 && e.tls == TlsMode::Implicit));
        assert!(eps
            .iter()
            .any(|e| e.service == Service::Smtp && e.port == 587 && e.tls == TlsMode::Starttls));
        let o365 = find("office365").map(|p| p.endpoints()).unwrap_or_default();
        assert!(o365
            .iter()
            .any(|e| e.host == "smtp.office365.com" && e.port == 587 && e.tls == TlsMode::Starttls));
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("yandx", "yandex"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
