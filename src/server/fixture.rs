//! The fixture maildrop every demo account starts with.
//!
//! Each message exercises something a client check relies on: a plain
//! message, dot-leading lines (byte-stuffing), a ~1 MiB message (streaming
//! and size accounting) and a message with an empty body (TOP edge case).
//! Everything is deterministic so sizes and transcripts are reproducible.

/// Demo accounts and their passwords (deliberately public: they only guard
/// the embedded test server).
pub const FIXTURE_USERS: &[(&str, &str)] = &[("alice", "alice-demo-pw"), ("bob", "bob-demo-pw")];

/// Target size of the body of the large message.
const LARGE_BODY_TARGET: usize = 1024 * 1024;

/// Content width of the large message's lines (plus CRLF).
const LARGE_LINE_WIDTH: usize = 76;

fn headers(date: &str, subject: &str, id: &str) -> String {
    format!(
        "Date: {date}\r\n\
         From: Mailcheck Fixture <fixture@mailcheck.local>\r\n\
         To: Mailcheck Users <users@mailcheck.local>\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{id}@mailcheck.local>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n"
    )
}

/// Message 1: short and plain.
pub fn plain() -> Vec<u8> {
    let mut m = headers("Mon, 06 Jan 2025 09:00:00 +0000", "Welcome", "fixture-1");
    m.push_str("\r\nHello,\r\n\r\nthis is the first fixture message of mailcheck.\r\n");
    m.into_bytes()
}

/// Message 2: body lines that must be byte-stuffed on the wire, including a
/// line that is exactly "." (which would end the reply early if unstuffed).
pub fn dotted() -> Vec<u8> {
    let mut m = headers(
        "Mon, 06 Jan 2025 09:05:00 +0000",
        "Lines starting with dots",
        "fixture-2",
    );
    m.push_str(
        "\r\nThe next lines start with a dot:\r\n\
         .hidden\r\n\
         ..double\r\n\
         .\r\n\
         . space\r\n\
         Text after the dot lines.\r\n\
         The end.\r\n",
    );
    m.into_bytes()
}

/// Message 3: about 1 MiB of 76-character lines from a fixed-seed generator,
/// with dot-leading lines sprinkled in.
pub fn large() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "mail",
        "server",
        "check",
        "message",
        "octet",
        "line",
        "drop",
        "client",
        "stuffing",
        "terminator",
        "pop3",
        "capability",
        "unique",
        "identifier",
        "transaction",
        "update",
        "greeting",
        "timestamp",
        "digest",
        "quit",
        "list",
        "retrieve",
        "delete",
        "reset",
    ];
    let mut m = headers("Mon, 06 Jan 2025 09:10:00 +0000", "A large message", "fixture-3").into_bytes();
    m.extend_from_slice(b"\r\n");
    let body_start = m.len();
    // xorshift64: tiny, deterministic and good enough to vary the text.
    let mut state: u64 = 0x6d61_696c_6368_6563;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut line_no = 0usize;
    while m.len() - body_start < LARGE_BODY_TARGET {
        line_no += 1;
        let mut line = match line_no % 1500 {
            500 => ".".to_string(),
            1000 => format!("..double dot line {line_no}"),
            0 => format!(".dot-leading line {line_no}"),
            _ => format!("{line_no:06}"),
        };
        if line != "." {
            while line.len() < LARGE_LINE_WIDTH {
                // The modulo keeps the index in range, so the cast is exact.
                let word = WORDS[(next() % WORDS.len() as u64) as usize];
                if line.len() + 1 + word.len() > LARGE_LINE_WIDTH {
                    break;
                }
                line.push(' ');
                line.push_str(word);
            }
        }
        m.extend_from_slice(line.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Message 4: headers and an empty body.
pub fn empty_body() -> Vec<u8> {
    let mut m = headers("Mon, 06 Jan 2025 09:15:00 +0000", "Headers only", "fixture-4");
    m.push_str("\r\n");
    m.into_bytes()
}

/// The fixture maildrop, in message-number order.
pub fn messages() -> Vec<Vec<u8>> {
    vec![plain(), dotted(), large(), empty_body()]
}

/// When each message of [`messages`] arrived (its IMAP INTERNALDATE, in
/// seconds since the Unix epoch, UTC): the time in its Date header, so date
/// searches and FETCH INTERNALDATE are reproducible.
pub fn received() -> [i64; 4] {
    // 2025-01-06 09:00:00 UTC, then 5-minute steps like the Date headers.
    const FIRST: i64 = 1_736_154_000;
    [FIRST, FIRST + 300, FIRST + 600, FIRST + 900]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lines_end_in_crlf() {
        for m in messages() {
            assert!(m.ends_with(b"\r\n"));
            for (i, b) in m.iter().enumerate() {
                if *b == b'\n' {
                    assert!(i > 0 && m[i - 1] == b'\r');
                }
                if *b == b'\r' {
                    assert_eq!(m.get(i + 1), Some(&b'\n'));
                }
            }
            assert!(m.is_ascii());
        }
    }

    #[test]
    fn large_is_about_a_mebibyte_with_dot_lines() {
        let m = large();
        assert!(m.len() > 1024 * 1024 && m.len() < 1024 * 1024 + 2048);
        assert_eq!(m, large(), "deterministic");
        let dot_lines = m.split(|b| *b == b'\n').filter(|l| l.starts_with(b".")).count();
        assert!(dot_lines >= 10);
        assert!(m.split(|b| *b == b'\n').all(|l| l.len() <= 78));
    }

    #[test]
    fn dotted_has_the_tricky_lines() {
        let m = dotted();
        for needle in [
            &b"\r\n.hidden\r\n"[..],
            b"\r\n..double\r\n",
            b"\r\n.\r\n",
            b"\r\n. space\r\n",
        ] {
            assert!(m.windows(needle.len()).any(|w| w == needle));
        }
    }

    #[test]
    fn empty_body_ends_with_blank_line() {
        assert!(empty_body().ends_with(b"\r\n\r\n"));
    }
}
