//! SMTP command lines (RFC 5321 section 4.1): the verb, the MAIL/RCPT
//! paths (section 4.1.2 grammar) and ESMTP parameters. Pure functions over
//! the line's text, so each syntax rule is unit-tested without sockets.

/// RFC 5321 4.5.3.1.3: a path is at most 256 octets, brackets included.
pub(super) const MAX_PATH: usize = 256;

/// RFC 5321 4.5.3.1.1: a local part is at most 64 octets.
const MAX_LOCAL_PART: usize = 64;

/// RFC 5321 4.5.3.1.2: a domain is at most 255 octets.
const MAX_DOMAIN: usize = 255;

/// Splits a command line (without its line ending) into the upper-cased
/// verb and the argument text after it (surrounding spaces trimmed, since
/// clients often send a trailing space).
pub(super) fn split_command(line: &str) -> (String, &str) {
    let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
    (verb.to_ascii_uppercase(), args.trim_matches(' '))
}

/// Whether a command line is made of printable US-ASCII, SP and HT only.
/// SMTPUTF8 is not offered, and a bare CR or another control octet in a
/// command would make its meaning ambiguous, so such lines are refused whole.
pub(super) fn is_command_text(line: &[u8]) -> bool {
    line.iter()
        .all(|&b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b))
}

/// A mailbox from a MAIL or RCPT path, without any source route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mailbox {
    /// The local part's value: a quoted string is unquoted and unescaped, so
    /// `"alice"@localhost` and `alice@localhost` name the same user.
    pub local: String,
    /// `None` only for the bare `<Postmaster>` that RCPT accepts.
    pub domain: Option<String>,
    /// The mailbox as the client wrote it, for Return-Path and replies.
    pub text: String,
}

/// What was wrong with a path; the text goes into the 501 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathError {
    Syntax(&'static str),
    TooLong,
}

/// A MAIL/RCPT argument split at its path: `FROM:<...> params` gives the
/// text inside the brackets and the parameter text. A space after the
/// colon is tolerated (RFC 5321 says clients must not send one, and that
/// servers may be liberal); the angle brackets are required.
pub(super) fn split_path_arg<'a>(args: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start_matches(' ');
    let inner = rest.strip_prefix('<')?;
    let close = closing_bracket(inner)?;
    let params = &inner[close + 1..];
    // Parameters are separated from the path by a space (or there are none).
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    Some((&inner[..close], params.trim_matches(' ')))
}

/// Index of the `>` that closes a path, skipping quoted strings (a quoted
/// local part may contain `>`).
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The reverse-path of MAIL: `None` for the null path `<>` (bounces).
pub(super) fn parse_reverse_path(inner: &str) -> Result<Option<Mailbox>, PathError> {
    if inner.is_empty() {
        return Ok(None);
    }
    parse_path(inner).map(Some)
}

/// The forward-path of RCPT: a mailbox, or `Postmaster` without a domain
/// (RFC 5321 4.1.1.3 and 4.5.1: it must be accepted in any case).
pub(super) fn parse_forward_path(inner: &str) -> Result<Mailbox, PathError> {
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok(Mailbox {
            local: inner.to_string(),
            domain: None,
            text: inner.to_string(),
        });
    }
    parse_path(inner)
}

fn parse_path(inner: &str) -> Result<Mailbox, PathError> {
    if inner.len() + 2 > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let mailbox = strip_source_route(inner)?;
    parse_mailbox(mailbox)
}

/// Drops an `@one,@two:` source route, which RFC 5321 4.1.1.3 says servers
/// must accept and should ignore; its domains must still be well-formed.
fn strip_source_route(inner: &str) -> Result<&str, PathError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let Some((route, mailbox)) = inner.split_once(':') else {
        return Err(PathError::Syntax("source route without `:`"));
    };
    for hop in route.split(',') {
        match hop.strip_prefix('@') {
            Some(domain) if is_domain(domain) => {}
            _ => return Err(PathError::Syntax("malformed source route")),
        }
    }
    Ok(mailbox)
}

/// `Local-part "@" ( Domain / address-literal )`.
fn parse_mailbox(s: &str) -> Result<Mailbox, PathError> {
    let (local, rest) = if s.starts_with('"') {
        quoted_local_part(s)?
    } else {
        let end = s
            .find('@')
            .ok_or(PathError::Syntax("address without `@domain`"))?;
        let dot_string = &s[..end];
        if !is_dot_string(dot_string) {
            return Err(PathError::Syntax("malformed local part"));
        }
        (dot_string.to_string(), &s[end..])
    };
    let domain = rest
        .strip_prefix('@')
        .ok_or(PathError::Syntax("address without `@domain`"))?;
    if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN {
        return Err(PathError::TooLong);
    }
    if !(is_domain(domain) || is_address_literal(domain)) {
        return Err(PathError::Syntax("malformed domain"));
    }
    Ok(Mailbox {
        local,
        domain: Some(domain.to_string()),
        text: s.to_string(),
    })
}

/// A quoted local part at the start of `s`: its unescaped value and the
/// rest of `s` after the closing quote.
fn quoted_local_part(s: &str) -> Result<(String, &str), PathError> {
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            // quoted-pairSMTP: backslash followed by any printable or SP.
            '\\' => match chars.next() {
                Some((_, e)) if (' '..='~').contains(&e) => value.push(e),
                _ => return Err(PathError::Syntax("malformed quoted local part")),
            },
            // qtextSMTP: printable and SP except `"` and `\`.
            ' '..='~' => value.push(c),
            _ => return Err(PathError::Syntax("malformed quoted local part")),
        }
    }
    Err(PathError::Syntax("unterminated quoted local part"))
}

/// atext of RFC 5322, as RFC 5321's `Atom` uses it.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// `Dot-string = Atom *("." Atom)`.
fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// `Domain = sub-domain *("." sub-domain)`, each a letter-digit-hyphen
/// label that starts and ends with a letter or digit.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `address-literal`: `[1.2.3.4]`, `[IPv6:...]` or a general literal
/// `[tag:content]`; the addresses themselves must parse.
fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = inner.strip_prefix("IPv6:") {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // General-address-literal = Standardized-tag ":" 1*dcontent.
    match inner.split_once(':') {
        Some((tag, content)) => {
            is_domain(tag)
                && !content.is_empty()
                && content
                    .bytes()
                    .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b))
        }
        None => false,
    }
}

/// One ESMTP parameter of MAIL or RCPT: the keyword upper-cased and its
/// value, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Param {
    pub keyword: String,
    pub value: Option<String>,
}

/// `esmtp-param *(SP esmtp-param)`: `esmtp-keyword ["=" esmtp-value]`,
/// keyword alphanumerics and `-` (starting alphanumeric), value any
/// printable except `=` and SP. `Err` names the first malformed one.
pub(super) fn parse_params(text: &str) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    for item in text.split(' ').filter(|s| !s.is_empty()) {
        let (keyword, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        let keyword_ok = keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
            && keyword.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok =
            value.is_none_or(|v| !v.is_empty() && v.bytes().all(|b| (33..=126).contains(&b) && b != b'='));
        if !keyword_ok || !value_ok {
            return Err(item.to_string());
        }
        params.push(Param {
            keyword: keyword.to_ascii_uppercase(),
            value: value.map(str::to_string),
        });
    }
    Ok(params)
}

/// The `SIZE=` value of RFC 1870: 1 to 20 digits. Values beyond `u64` are
/// still sizes (just too large for any limit), so they saturate.
pub(super) fn parse_size(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_into_verb_and_arguments() {
        assert_eq!(
            split_command("ehlo client.example"),
            ("EHLO".into(), "client.example")
        );
        assert_eq!(split_command("QUIT"), ("QUIT".into(), ""));
        assert_eq!(split_command("NOOP  "), ("NOOP".into(), ""));
        assert_eq!(
            split_command("MAIL FROM:<a@b.example> SIZE=10 "),
            ("MAIL".into(), "FROM:<a@b.example> SIZE=10")
        );
        assert_eq!(split_command(""), ("".into(), ""));
        assert!(is_command_text(b"MAIL FROM:<a@b>\tx"));
        assert!(!is_command_text(b"NOOP \r"));
        assert!(!is_command_text(b"NOOP \x00"));
        assert!(!is_command_text("HELO caf\u{e9}".as_bytes()));
    }

    #[test]
    fn path_arguments_need_the_keyword_and_brackets() {
        assert_eq!(
            split_path_arg("FROM:<a@b.example>", "FROM:"),
            Some(("a@b.example", ""))
        );
        assert_eq!(
            split_path_arg("from: <a@b.example>", "FROM:"),
            Some(("a@b.example", ""))
        );
        assert_eq!(
            split_path_arg("FROM:<> SIZE=1 BODY=8BITMIME", "FROM:"),
            Some(("", "SIZE=1 BODY=8BITMIME"))
        );
        assert_eq!(
            split_path_arg("TO:<\"a>b\"@x.example>", "TO:"),
            Some(("\"a>b\"@x.example", ""))
        );
        assert_eq!(split_path_arg("FROM:a@b.example", "FROM:"), None);
        assert_eq!(split_path_arg("FROM:<a@b.example", "FROM:"), None);
        assert_eq!(split_path_arg("FROM:<a@b.example>SIZE=1", "FROM:"), None);
        assert_eq!(split_path_arg("TO:<a@b.example>", "FROM:"), None);
        assert_eq!(split_path_arg("FR", "FROM:"), None);
    }

    fn mailbox(inner: &str) -> Result<Mailbox, PathError> {
        parse_forward_path(inner)
    }

    #[test]
    fn mailboxes_follow_the_rfc5321_grammar() {
        let m = mailbox("alice@localhost").expect("plain");
        assert_eq!(
            (m.local.as_str(), m.domain.as_deref()),
            ("alice", Some("localhost"))
        );
        assert_eq!(m.text, "alice@localhost");
        let m = mailbox("\"al\\\"ice\"@example.test").expect("quoted");
        assert_eq!(m.local, "al\"ice");
        let m = mailbox("@relay.example,@other.example:bob@example.test").expect("source route");
        assert_eq!((m.local.as_str(), m.text.as_str()), ("bob", "bob@example.test"));
        assert!(mailbox("first.last+tag@sub.example.test").is_ok());
        assert!(mailbox("x@[127.0.0.1]").is_ok());
        assert!(mailbox("x@[IPv6:::1]").is_ok());
        assert!(mailbox("x@[tag:stuff]").is_ok());
        let pm = mailbox("PostMaster").expect("postmaster");
        assert_eq!(pm.domain, None);

        for bad in [
            "alice",
            "@localhost",
            "alice@",
            "a..b@localhost",
            ".a@localhost",
            "a b@localhost",
            "alice@-bad.example",
            "alice@bad-.example",
            "alice@a..example",
            "alice@[999.1.1.1]",
            "alice@[IPv6:zz]",
            "\"open@localhost",
            "@relay.example:",
            "@bad_host:x@y.example",
            "alice@local_host",
        ] {
            assert!(matches!(mailbox(bad), Err(PathError::Syntax(_))), "{bad}");
        }
        let long_local = format!("{}@localhost", "a".repeat(65));
        assert_eq!(mailbox(&long_local), Err(PathError::TooLong));
        let long_path = format!("a@{}.example", "b".repeat(260));
        assert_eq!(mailbox(&long_path), Err(PathError::TooLong));
        assert_eq!(parse_reverse_path(""), Ok(None));
        assert!(parse_reverse_path("Postmaster").is_err(), "MAIL needs a domain");
    }

    #[test]
    fn esmtp_parameters() {
        let p = parse_params("SIZE=100 body=8BITMIME SMTPUTF8").expect("params");
        assert_eq!(
            p,
            vec![
                Param {
                    keyword: "SIZE".into(),
                    value: Some("100".into())
                },
                Param {
                    keyword: "BODY".into(),
                    value: Some("8BITMIME".into())
                },
                Param {
                    keyword: "SMTPUTF8".into(),
                    value: None
                },
            ]
        );
        assert_eq!(parse_params(""), Ok(Vec::new()));
        assert_eq!(parse_params("SIZE="), Err("SIZE=".into()));
        assert_eq!(parse_params("-X=1"), Err("-X=1".into()));
        assert_eq!(parse_params("A=b=c"), Err("A=b=c".into()));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("10485760"), Some(10_485_760));
        assert_eq!(parse_size("99999999999999999999"), Some(u64::MAX));
        assert_eq!(parse_size("999999999999999999999"), None);
        assert_eq!(parse_size("1k"), None);
        assert_eq!(parse_size(""), None);
    }
}
