//! IMAP (RFC 9051 / RFC 3501) grammar, as much as the probe needs today:
//! status responses (tagged and untagged), capability lists, and quoting of
//! LOGIN arguments. The full framing with literals and the session model
//! come with the IMAP suite.

/// The condition of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Ok,
    No,
    Bad,
    Preauth,
    Bye,
}

/// A status response: `* OK [CAPABILITY ...] text` or `a1 NO text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// `*` for untagged.
    pub tag: &'a str,
    pub cond: Cond,
    /// The response code inside `[...]`, if any.
    pub code: Option<&'a str>,
    pub text: &'a str,
}

/// Parse a status response line (RFC 9051 section 7.1); other lines give None.
pub fn parse_status(line: &str) -> Option<StatusLine<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line.split_once(' ')?;
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let cond = match word.to_ascii_uppercase().as_str() {
        "OK" => Cond::Ok,
        "NO" => Cond::No,
        "BAD" => Cond::Bad,
        "PREAUTH" if tag == "*" => Cond::Preauth,
        "BYE" if tag == "*" => Cond::Bye,
        _ => return None,
    };
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code), text.trim_start()),
        None => (None, rest),
    };
    Some(StatusLine {
        tag,
        cond,
        code,
        text,
    })
}

/// Capabilities from `* CAPABILITY a b c` or a `[CAPABILITY a b c]` code, upper-cased.
pub fn capabilities(line: &str) -> Option<Vec<String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let list = if let Some(rest) = line.strip_prefix("* CAPABILITY ") {
        rest
    } else {
        let status = parse_status(line)?;
        status.code?.strip_prefix("CAPABILITY ")?
    };
    Some(list.split_whitespace().map(|c| c.to_ascii_uppercase()).collect())
}

/// Quote a LOGIN argument (RFC 9051 section 4.3): a quoted string, or None
/// when it needs a literal (CR, LF or NUL inside).
pub fn quote(s: &str) -> Option<String> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let s = parse_status("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n").unwrap();
        assert_eq!(
            (s.tag, s.cond, s.code),
            ("*", Cond::Ok, Some("CAPABILITY IMAP4rev1 STARTTLS"))
        );
        assert_eq!(s.text, "Dovecot ready.");
        let s = parse_status("a1 NO [AUTHENTICATIONFAILED] Authentication failed.").unwrap();
        assert_eq!(
            (s.tag, s.cond, s.code),
            ("a1", Cond::No, Some("AUTHENTICATIONFAILED"))
        );
        assert_eq!(parse_status("* BYE bye").unwrap().cond, Cond::Bye);
        assert!(parse_status("* 3 EXISTS").is_none());
        assert!(parse_status("a1 PREAUTH x").is_none());
    }

    #[test]
    fn capability_lists() {
        assert_eq!(
            capabilities("* CAPABILITY IMAP4rev1 LOGINDISABLED").unwrap(),
            vec!["IMAP4REV1", "LOGINDISABLED"]
        );
        assert_eq!(
            capabilities("* OK [CAPABILITY IMAP4rev2 AUTH=PLAIN] hi").unwrap(),
            vec!["IMAP4REV2", "AUTH=PLAIN"]
        );
        assert!(capabilities("* OK hi").is_none());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb").is_none());
    }
}
