//! The message text after DATA (RFC 5321 sections 4.1.1.4, 4.5.2 and
//! 4.5.3.1.6): dot-unstuffing, the end of data at `CRLF.CRLF` and nowhere
//! else, and the checks that make a message undeliverable.
//!
//! Only `CRLF.CRLF` ends the data: a `.` line after a bare LF (`\n.\n`,
//! `\n.\r\n`) is text, and since a bare CR or LF makes the message
//! ambiguous for every later hop the whole message is refused once its real
//! end arrives. Accepting such a dot line as the end is how SMTP smuggling
//! works: what follows it would run as commands here, while another server
//! reads it as part of the message.

/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF,
/// not counting the dot added for transparency.
pub(super) const MAX_TEXT_LINE: usize = 1000;

/// How long a raw (still dot-stuffed) line may be before the reader only
/// tracks its end instead of keeping it.
pub(super) const MAX_RAW_LINE: usize = MAX_TEXT_LINE + 1;

/// Why a message is refused once its data has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem {
    /// A CR or LF that is not part of a CRLF pair.
    BareLineEnding,
    /// A text line over [`MAX_TEXT_LINE`] octets.
    LineTooLong,
    /// More octets than the size limit (RFC 1870 counts the unstuffed text).
    TooBig,
}

/// Whether the data has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    More,
    End,
}

/// Collects one message line by line, bounded by its size limit.
pub(super) struct DataReader {
    /// The unstuffed message, kept only while it is within the limit.
    body: Vec<u8>,
    /// Unstuffed octets seen, including any not kept.
    size: usize,
    limit: usize,
    /// The previous line ended in CRLF (the DATA command's CRLF counts), so
    /// a `.` line now would complete `CRLF.CRLF`.
    after_crlf: bool,
    /// The first reason found to refuse the message.
    problem: Option<Problem>,
    /// `smtp-lf-dot-ends-data`: any `.` line ends the data.
    lf_dot_ends: bool,
    /// Cleared by `smtp-no-dot-unstuff`.
    unstuff: bool,
}

impl DataReader {
    pub(super) fn new(limit: usize, lf_dot_ends: bool, unstuff: bool) -> Self {
        DataReader {
            body: Vec::new(),
            size: 0,
            limit,
            after_crlf: true,
            problem: None,
            lf_dot_ends,
            unstuff,
        }
    }

    fn note(&mut self, problem: Problem) {
        self.problem.get_or_insert(problem);
    }

    /// One line as received, with its LF.
    pub(super) fn line(&mut self, line: &[u8]) -> Feed {
        let crlf = line.ends_with(b"\r\n");
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        let ends = if self.lf_dot_ends {
            content == b"."
        } else {
            self.after_crlf && crlf && content == b"."
        };
        if ends {
            return Feed::End;
        }
        self.after_crlf = crlf;
        if !crlf || content.contains(&b'\r') {
            self.note(Problem::BareLineEnding);
        }
        let text = match content.strip_prefix(b".") {
            Some(rest) if self.unstuff => rest,
            _ => content,
        };
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let octets = text.len() + eol.len();
        if octets > MAX_TEXT_LINE {
            self.note(Problem::LineTooLong);
        }
        self.size = self.size.saturating_add(octets);
        if self.size > self.limit {
            self.note(Problem::TooBig);
            // Nothing more is kept: the message cannot be delivered anyway.
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(text);
            self.body.extend_from_slice(eol);
        }
        Feed::More
    }

    /// A line longer than [`MAX_RAW_LINE`] whose content was discarded;
    /// `crlf` says how it ended. It is never the end of data.
    pub(super) fn too_long(&mut self, crlf: bool) {
        self.after_crlf = crlf;
        if !crlf {
            self.note(Problem::BareLineEnding);
        }
        self.note(Problem::LineTooLong);
    }

    /// The unstuffed message, or why it must be refused.
    pub(super) fn finish(self) -> Result<Vec<u8>, Problem> {
        match self.problem {
            Some(p) => Err(p),
            None => Ok(self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` line by line; returns the verdict and what follows the
    /// end of data (which the session would read as commands).
    fn read(
        wire: &[u8],
        lf_dot_ends: bool,
        unstuff: bool,
        limit: usize,
    ) -> (Result<Vec<u8>, Problem>, Vec<u8>) {
        let mut r = DataReader::new(limit, lf_dot_ends, unstuff);
        let mut consumed = 0;
        for line in wire.split_inclusive(|b| *b == b'\n') {
            consumed += line.len();
            if r.line(line) == Feed::End {
                return (r.finish(), wire[consumed..].to_vec());
            }
        }
        panic!("data did not end");
    }

    #[test]
    fn unstuffs_and_ends_at_crlf_dot_crlf() {
        let wire = b"Subject: x\r\n\r\n..hidden\r\n...two\r\n..\r\n. space\r\nend\r\n.\r\nQUIT\r\n";
        let (body, rest) = read(wire, false, true, 1 << 20);
        assert_eq!(
            body.expect("clean"),
            b"Subject: x\r\n\r\n.hidden\r\n..two\r\n.\r\n space\r\nend\r\n"
        );
        assert_eq!(rest, b"QUIT\r\n");
        let (body, _) = read(b".\r\n", false, true, 10);
        assert_eq!(body, Ok(Vec::new()), "an empty message");
    }

    #[test]
    fn keeps_8bit_and_998_octet_lines() {
        let mut wire = Vec::new();
        wire.extend_from_slice("caf\u{e9} \u{fc}ber\r\n".as_bytes());
        wire.extend_from_slice(&[0x80, 0xff, b'\r', b'\n']);
        wire.extend_from_slice(&vec![b'x'; 998]);
        wire.extend_from_slice(b"\r\n");
        // A stuffed line may be 1001 octets on the wire.
        wire.push(b'.');
        wire.extend_from_slice(&vec![b'.'; 998]);
        wire.extend_from_slice(b"\r\n.\r\n");
        let (body, _) = read(&wire, false, true, 1 << 20);
        let body = body.expect("within limits");
        // The wire minus the stuffing dot and the final ".\r\n".
        let stuffed_at = wire.len() - 5 - 998 - 1;
        let mut expected = wire[..stuffed_at].to_vec();
        expected.extend_from_slice(&wire[stuffed_at + 1..wire.len() - 3]);
        assert_eq!(body, expected);
        assert!(body.ends_with(&[vec![b'.'; 998], b"\r\n".to_vec()].concat()));
    }

    #[test]
    fn lines_over_1000_octets_are_refused() {
        let mut wire = vec![b'x'; 999];
        wire.extend_from_slice(b"\r\n.\r\n");
        let (body, _) = read(&wire, false, true, 1 << 20);
        assert_eq!(body, Err(Problem::LineTooLong));
        let mut r = DataReader::new(1 << 20, false, true);
        r.too_long(true);
        assert_eq!(r.line(b".\r\n"), Feed::End, "a long line ending in CRLF");
        assert_eq!(r.finish(), Err(Problem::LineTooLong));
        let mut r = DataReader::new(1 << 20, false, true);
        r.too_long(false);
        assert_eq!(
            r.line(b".\r\n"),
            Feed::More,
            "`\\n.\\r\\n` after a long line is not the end"
        );
    }

    #[test]
    fn bare_lf_never_ends_data_and_refuses_the_message() {
        for smuggled in [
            &b"hi\r\n.\nMAIL FROM:<x@y.example>\r\n"[..],
            b"hi\n.\r\nMAIL FROM:<x@y.example>\r\n",
            b"hi\n.\nMAIL FROM:<x@y.example>\r\n",
        ] {
            let mut wire = smuggled.to_vec();
            wire.extend_from_slice(b"more\r\n.\r\nQUIT\r\n");
            let (body, rest) = read(&wire, false, true, 1 << 20);
            assert_eq!(body, Err(Problem::BareLineEnding), "{smuggled:?}");
            assert_eq!(rest, b"QUIT\r\n", "{smuggled:?}");

            let (_, rest) = read(&wire, true, true, 1 << 20);
            assert!(
                rest.starts_with(b"MAIL FROM:"),
                "the fault ends data early: {smuggled:?}"
            );
        }
        let (body, _) = read(b"bare\rcr\r\n.\r\n", false, true, 1 << 20);
        assert_eq!(body, Err(Problem::BareLineEnding));
    }

    #[test]
    fn size_limit_counts_unstuffed_octets() {
        // 10 octets: "12345678\r\n"; the stuffing dot does not count.
        let (body, _) = read(b".12345678\r\n.\r\n", false, true, 10);
        assert_eq!(body.map(|b| b.len()), Ok(10));
        let (body, _) = read(b"123456789\r\n.\r\n", false, true, 10);
        assert_eq!(body, Err(Problem::TooBig));
    }

    #[test]
    fn no_unstuff_keeps_the_dots() {
        let (body, _) = read(b"..x\r\n.\r\n", false, false, 100);
        assert_eq!(body, Ok(b"..x\r\n".to_vec()));
    }
}
