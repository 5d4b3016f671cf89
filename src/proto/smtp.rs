//! SMTP (RFC 5321) reply grammar, as much as the probe needs today: reply
//! lines `code-text` / `code text`, multi-line replies with one code, and
//! the EHLO keyword list. The full transaction model comes with the SMTP suite.

/// One line of a reply: code, whether more lines follow, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    pub more: bool,
    pub text: &'a str,
}

/// Parse `250-SIZE 1000` / `250 OK` / `220` (RFC 5321 section 4.2).
pub fn parse_line(line: &str) -> Option<ReplyLine<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let digits = line.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&digits.as_bytes()[0]) {
        return None;
    }
    let code = digits.parse().ok()?;
    match line.as_bytes().get(3) {
        None => Some(ReplyLine {
            code,
            more: false,
            text: "",
        }),
        Some(b' ') => Some(ReplyLine {
            code,
            more: false,
            text: &line[4..],
        }),
        Some(b'-') => Some(ReplyLine {
            code,
            more: true,
            text: &line[4..],
        }),
        Some(_) => None,
    }
}

/// A complete reply: its code and the text of every line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined, as a user would see them.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {l}", self.code))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// EHLO keywords (first word of each line after the first), upper-cased.
    pub fn ehlo_keywords(&self) -> Vec<String> {
        self.lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(|k| k.to_ascii_uppercase())
            .collect()
    }

    /// Parameters of one EHLO keyword (e.g. the mechanisms after `AUTH`).
    pub fn ehlo_params(&self, keyword: &str) -> Option<Vec<String>> {
        self.lines.iter().skip(1).find_map(|l| {
            let mut words = l.split_whitespace();
            let k = words.next()?;
            k.eq_ignore_ascii_case(keyword)
                .then(|| words.map(str::to_string).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reply_lines() {
        assert_eq!(
            parse_line("250-SIZE 100\r\n"),
            Some(ReplyLine {
                code: 250,
                more: true,
                text: "SIZE 100"
            })
        );
        assert_eq!(
            parse_line("220 ready"),
            Some(ReplyLine {
                code: 220,
                more: false,
                text: "ready"
            })
        );
        assert_eq!(
            parse_line("250"),
            Some(ReplyLine {
                code: 250,
                more: false,
                text: ""
            })
        );
        assert_eq!(parse_line("25x ok"), None);
        assert_eq!(parse_line("650 nope"), None);
        assert_eq!(parse_line("250_x"), None);
    }

    #[test]
    fn ehlo_keywords_and_params() {
        let r = Reply {
            code: 250,
            lines: vec![
                "mx.example".into(),
                "SIZE 1000".into(),
                "AUTH PLAIN LOGIN".into(),
                "STARTTLS".into(),
            ],
        };
        assert_eq!(r.ehlo_keywords(), vec!["SIZE", "AUTH", "STARTTLS"]);
        assert_eq!(r.ehlo_params("auth").unwrap(), vec!["PLAIN", "LOGIN"]);
    }
}
