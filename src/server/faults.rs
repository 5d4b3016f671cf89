//! Fault switches: each one makes the embedded server break exactly one
//! protocol rule, so every client-side check can be shown to fail against a
//! misbehaving server and pass against the correct one.

use std::fmt;
use std::str::FromStr;

use super::ServerError;

macro_rules! faults {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal : $describe:literal, )*) => {
        /// One rule the server can be told to break.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Fault {
            $( $(#[$doc])* $variant, )*
        }

        impl Fault {
            /// Every fault, in declaration order (which is also the order of
            /// [`Faults::iter`] and of its `Display`).
            pub const ALL: &'static [Fault] = &[$(Fault::$variant,)*];

            /// The kebab-case name used on the command line and in scenarios.
            pub fn name(&self) -> &'static str {
                match self { $(Fault::$variant => $name,)* }
            }

            /// One line saying which rule the server breaks.
            pub fn describe(&self) -> &'static str {
                match self { $(Fault::$variant => $describe,)* }
            }
        }
    };
}

faults! {
    /// RETR/TOP content lines starting with "." are sent without the extra ".".
    NoByteStuffing = "no-byte-stuffing":
        "RETR/TOP send dot-leading lines without byte-stuffing",
    /// Multi-line replies never get their final "." line.
    MissingTerminator = "missing-terminator":
        "multi-line replies never send the terminating \".\" line",
    /// Transaction commands work before authentication.
    CommandsBeforeLogin = "commands-before-login":
        "STAT/LIST/RETR/UIDL/TOP/DELE/NOOP/RSET answer +OK before login",
    /// Deletions are committed even when the session ends without QUIT.
    DeleteWithoutQuit = "delete-without-quit":
        "a session that ends without QUIT still commits its deletions",
    /// LIST and STAT report every message one octet too large.
    WrongListSize = "wrong-list-size":
        "LIST and STAT report each message size off by +1",
    /// Every line the server sends ends in LF instead of CRLF.
    BareLf = "bare-lf":
        "all reply lines end in a bare LF instead of CRLF",
    /// The greeting exceeds the 512-octet response limit of RFC 2449.
    LongReply = "long-reply":
        "the greeting is padded to 600 octets (limit is 512)",
    /// Status indicators are sent in lower case.
    LowercaseStatus = "lowercase-status":
        "status indicators are sent as +ok / -err",
    /// UIDL values change from one session to the next.
    UnstableUidl = "unstable-uidl":
        "UIDL values differ in every session",
    /// Messages marked deleted are still visible within the session.
    DeletedVisible = "deleted-visible":
        "DELE'd messages are still listed, counted and retrievable",
    /// RSET claims success but keeps the deletion marks.
    RsetIgnored = "rset-ignored":
        "RSET answers +OK but keeps the deletions",
    /// RETR is never answered.
    StallRetr = "stall-retr":
        "RETR is never answered; the connection stays open",
    /// The server never sends its greeting.
    NoGreeting = "no-greeting":
        "the server accepts the connection and never sends a greeting",
    /// Unknown commands are accepted.
    UnknownOk = "unknown-ok":
        "unknown commands are answered with +OK",
    /// TOP ignores its line count.
    TopIgnoresLines = "top-ignores-lines":
        "TOP returns the whole message regardless of the line count",
    /// UIDL identifiers are syntactically invalid.
    BadUidlFormat = "bad-uidl-format":
        "UIDL ids are longer than 70 octets and contain a space",
    /// `LIST n` answers for a different message number.
    ListNMismatch = "list-n-mismatch":
        "LIST n answers with message number n+1",
    /// QUIT does not commit deletions.
    QuitNoCommit = "quit-no-commit":
        "QUIT answers +OK without removing the deleted messages",
    /// Any password is accepted for an existing user.
    BadPassOk = "bad-pass-ok":
        "a wrong password (or APOP digest) is accepted",
    /// CAPA answers with a single line instead of a multi-line list.
    NoMultilineCapa = "no-multiline-capa":
        "CAPA answers a single +OK line without a list or terminator",
    /// STLS claims success but no TLS handshake follows.
    StlsIgnoredTls = "stls-ignored-tls":
        "STLS answers +OK but the server keeps talking plaintext",
    /// Connections are closed as soon as they are accepted.
    CloseOnAccept = "close-on-accept":
        "the server accepts the connection and closes it at once, without a greeting",
    /// Like Dovecot with `disable_plaintext_auth`: no login before TLS.
    PlaintextLoginRefused = "plaintext-login-refused":
        "USER/APOP are refused without TLS and CAPA omits USER; login works after STLS",
    /// Authentication always fails, as on an account with POP3 turned off.
    LoginDisabled = "login-disabled":
        "every PASS/APOP is refused, even with the right password",
    /// IMAP: tagged completions carry a different tag than the command's.
    ImapWrongTag = "imap-wrong-tag":
        "IMAP: every tagged completion carries another tag (A1 is completed as A2)",
    /// IMAP: FETCH never completes.
    ImapNoCompletion = "imap-no-completion":
        "IMAP: FETCH / UID FETCH send their data but never the tagged completion",
    /// IMAP: message literals announce one octet more than they carry.
    ImapLiteralMiscount = "imap-literal-miscount":
        "IMAP: FETCH body literals announce {n+1} but carry n octets",
    /// IMAP: SELECT/EXAMINE leave out UIDVALIDITY.
    ImapSelectNoUidvalidity = "imap-select-no-uidvalidity":
        "IMAP: SELECT/EXAMINE omit the OK [UIDVALIDITY n] response",
    /// IMAP: EXAMINE opens the mailbox read-write.
    ImapExamineWritable = "imap-examine-writable":
        "IMAP: EXAMINE completes without [READ-ONLY] and STORE/EXPUNGE then succeed",
    /// IMAP: BODY.PEEK sets \Seen like BODY does.
    ImapPeekSetsSeen = "imap-peek-sets-seen":
        "IMAP: FETCH BODY.PEEK[...] (and RFC822.HEADER) set \\Seen",
    /// IMAP: FETCH reports UIDs in descending order.
    ImapUidsDescending = "imap-uids-descending":
        "IMAP: FETCH reports message n with the UID of message N+1-n, so UIDs descend",
    /// IMAP: EXPUNGE removes messages without saying which.
    ImapExpungeSilent = "imap-expunge-silent":
        "IMAP: EXPUNGE / UID EXPUNGE remove messages without untagged EXPUNGE responses",
    /// IMAP: SELECT/EXAMINE succeed before login.
    ImapOkBeforeLogin = "imap-ok-before-login":
        "IMAP: SELECT/EXAMINE answer OK before login (on the first account)",
    /// IMAP: syntax errors get NO instead of BAD.
    ImapBadAsNo = "imap-bad-as-no":
        "IMAP: unknown commands and syntax errors are answered NO instead of BAD",
    /// IMAP: LOGOUT without BYE.
    ImapNoByeOnLogout = "imap-no-bye-on-logout":
        "IMAP: LOGOUT is answered with the tagged OK only, without the untagged BYE",
    /// SMTP: the greeting has no reply code.
    SmtpBadGreeting = "smtp-bad-greeting":
        "SMTP: the greeting is `mailcheck.local ESMTP ...` without the 220 code",
    /// SMTP: a multi-line EHLO reply changes its code midway.
    SmtpMultilineCodeMismatch = "smtp-multiline-code-mismatch":
        "SMTP: one EHLO continuation line carries 251 instead of 250 (251-PIPELINING)",
    /// SMTP: an EHLO line has neither `-` nor space after the code.
    SmtpBadSeparator = "smtp-bad-separator":
        "SMTP: the EHLO SIZE line is sent as `250SIZE n`, without `-` or space after the code",
    /// SMTP: replies end in LF instead of CRLF.
    SmtpBareLf = "smtp-bare-lf":
        "SMTP: all reply lines end in a bare LF instead of CRLF",
    /// SMTP: the EHLO reply exceeds the 512-octet reply line limit.
    SmtpLongReply = "smtp-long-reply":
        "SMTP: the first EHLO reply line is padded to 600 octets (limit is 512)",
    /// SMTP: enhanced status codes disagree with the reply class.
    SmtpEnhancedClassMismatch = "smtp-enhanced-class-mismatch":
        "SMTP: 5xx replies carry a 2.x.x enhanced code (550 2.1.1 for an unknown recipient)",
    /// SMTP: transaction commands out of order are accepted.
    SmtpOutOfOrderOk = "smtp-out-of-order-ok":
        "SMTP: RCPT before MAIL gets 250 and DATA before RCPT gets 354 instead of 503",
    /// SMTP: RSET does not reset the transaction.
    SmtpRsetIgnored = "smtp-rset-ignored":
        "SMTP: RSET answers 250 but keeps the transaction (the next MAIL gets 503)",
    /// SMTP: STARTTLS does not reset the session.
    SmtpStarttlsKeepsState = "smtp-starttls-keeps-state":
        "SMTP: after STARTTLS the session keeps its EHLO (MAIL without a new EHLO gets 250)",
    /// SMTP: STARTTLS is offered on a connection that already has TLS.
    SmtpStarttlsStillAdvertised = "smtp-starttls-still-advertised":
        "SMTP: EHLO lists STARTTLS even when TLS is already active",
    /// SMTP: plaintext pipelined after STARTTLS runs inside the TLS session.
    SmtpStarttlsInjection = "smtp-starttls-injection":
        "SMTP: commands sent after STARTTLS before the handshake are executed after it (CVE-2011-0411)",
    /// SMTP: the server sends plaintext after its STARTTLS reply.
    SmtpStarttlsEarlyData = "smtp-starttls-early-data":
        "SMTP: an extra plaintext line follows the 220 to STARTTLS, before the handshake",
    /// SMTP: AUTH works without TLS.
    SmtpAuthInCleartext = "smtp-auth-in-cleartext":
        "SMTP: AUTH is advertised and accepted before STARTTLS (relay and submission ports)",
    /// SMTP: any password is accepted.
    SmtpAuthBadOk = "smtp-auth-bad-ok":
        "SMTP: AUTH with a wrong password (for an existing user) gets 235",
    /// SMTP: the SIZE limit is not enforced.
    SmtpSizeIgnored = "smtp-size-ignored":
        "SMTP: MAIL FROM with SIZE= over the limit gets 250 and oversized messages are delivered",
    /// SMTP: DATA ends at a bare-LF dot line: the SMTP smuggling bug.
    SmtpLfDotEndsData = "smtp-lf-dot-ends-data":
        "SMTP: `\\n.\\n` or `\\n.\\r\\n` ends DATA, so what follows runs as commands (SMTP smuggling)",
    /// SMTP: dot-stuffing is not undone.
    SmtpNoDotUnstuff = "smtp-no-dot-unstuff":
        "SMTP: delivered messages keep the extra leading dot of stuffed lines",
    /// SMTP: 8-bit content is mangled.
    SmtpStrip8bit = "smtp-strip-8bit":
        "SMTP: the 8th bit of every body octet is cleared on delivery",
    /// SMTP: QUIT does not close the connection.
    SmtpQuitStaysOpen = "smtp-quit-stays-open":
        "SMTP: QUIT gets 221 but the server keeps the connection open",
    /// SMTP: pipelined commands are lost.
    SmtpPipeliningDrops = "smtp-pipelining-drops":
        "SMTP: only the first command of a pipelined batch is answered; the rest of the input is dropped",
    /// SMTP: the server never greets.
    SmtpNoGreeting = "smtp-no-greeting":
        "SMTP: the server accepts the connection and never sends the 220 greeting",
    /// SMTP: unknown commands are accepted.
    SmtpUnknownOk = "smtp-unknown-ok":
        "SMTP: unknown commands are answered 250 instead of 500",
    /// IMAP: LOGINDISABLED advertised, LOGIN accepted anyway.
    ImapLoginDespiteLogindisabled = "imap-login-despite-logindisabled":
        "IMAP: plaintext connections advertise LOGINDISABLED, yet LOGIN succeeds on them",
    /// IMAP: the capability list does not change with TLS.
    ImapStarttlsStaleCapabilities = "imap-starttls-stale-capabilities":
        "IMAP: after STARTTLS, CAPABILITY still lists STARTTLS and LOGINDISABLED",
    /// IMAP: the version is missing from the capabilities after login.
    ImapNoVersionAfterLogin = "imap-no-version-after-login":
        "IMAP: after login, CAPABILITY no longer lists IMAP4rev1",
    /// IMAP: LSUB ignores subscriptions.
    ImapLsubUnsubscribed = "imap-lsub-unsubscribed":
        "IMAP: LSUB lists every mailbox, subscribed or not",
    /// IMAP: UID SEARCH answers with sequence numbers.
    ImapUidSearchSeqs = "imap-uid-search-seqs":
        "IMAP: UID SEARCH answers with message sequence numbers instead of UIDs",
    /// IMAP: UID STORE's FETCH responses have no UID.
    ImapUidStoreNoUid = "imap-uid-store-no-uid":
        "IMAP: the FETCH responses of UID STORE leave out the UID item",
    /// IMAP: COPY loses the messages.
    ImapCopyLost = "imap-copy-lost":
        "IMAP: COPY answers OK but the target mailbox gets nothing",
    /// IMAP: MOVE without EXPUNGE responses.
    ImapMoveSilent = "imap-move-silent":
        "IMAP: MOVE removes the messages without untagged EXPUNGE responses",
    /// IMAP: IDLE never gets its continuation.
    ImapIdleNoContinuation = "imap-idle-no-continuation":
        "IMAP: IDLE is never answered with +; the server waits silently for DONE",
    /// IMAP: nothing is reported while idling.
    ImapIdleNoUpdates = "imap-idle-no-updates":
        "IMAP: IDLE reports no changes until DONE",
    /// IMAP: INTERNALDATE in the wrong format.
    ImapInternaldateWrongForm = "imap-internaldate-wrong-form":
        "IMAP: INTERNALDATE is sent as \"14 Nov 2023 22:14:20 +0000\" (RFC 5322 style) instead of \"14-Nov-2023 ...\"",
    /// IMAP: ENVELOPE with a field missing.
    ImapEnvelopeShort = "imap-envelope-short":
        "IMAP: ENVELOPE has 9 fields (the Message-ID is left out)",
    /// IMAP: BODYSTRUCTURE text parts without their line count.
    ImapBodystructureNoLines = "imap-bodystructure-no-lines":
        "IMAP: BODYSTRUCTURE and BODY leave out the line count of text parts",
    /// IMAP: RFC822.SIZE does not match the message.
    ImapWrongSize = "imap-wrong-size":
        "IMAP: RFC822.SIZE is one more than the octets BODY[] sends",
    /// IMAP: synchronizing literals get no continuation.
    ImapLiteralNoContinuation = "imap-literal-no-continuation":
        "IMAP: a synchronizing literal {n} in a command gets no + continuation",
    /// IMAP: LITERAL+ advertised but refused.
    ImapLiteralPlusRefused = "imap-literal-plus-refused":
        "IMAP: LITERAL+ is advertised but commands with {n+} literals are answered BAD",
    /// IMAP: one command, two completions.
    ImapDoubleCompletion = "imap-double-completion":
        "IMAP: NOOP is completed twice (two tagged OKs with its tag)",
    /// IMAP: failures reported as protocol errors.
    ImapFailureAsBad = "imap-failure-as-bad":
        "IMAP: failures of valid commands (wrong password, no such mailbox) are answered BAD instead of NO",
    /// IMAP: PREAUTH that is not.
    ImapPreauthUnauthenticated = "imap-preauth-unauthenticated":
        "IMAP: with the PREAUTH greeting, the session is still treated as not authenticated",
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = ServerError;

    /// Case-insensitive, and `_` is accepted for `-`, because people type
    /// these on command lines.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.name() == wanted)
            .ok_or_else(|| ServerError::UnknownFault(s.trim().to_string()))
    }
}

// `Faults` is a `u128` bit set: one more fault than fits must not compile.
const _: () = assert!(Fault::ALL.len() <= u128::BITS as usize);

/// A set of [`Fault`]s; faults compose freely.
///
/// A bit set so it is `Copy` and cheap to consult on every reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Faults(u128);

impl Faults {
    /// The correct server: no faults.
    pub const fn none() -> Self {
        Faults(0)
    }

    fn bit(fault: Fault) -> u128 {
        1u128 << (fault as u32)
    }

    pub fn contains(&self, fault: Fault) -> bool {
        self.0 & Self::bit(fault) != 0
    }

    pub fn insert(&mut self, fault: Fault) {
        self.0 |= Self::bit(fault);
    }

    pub fn remove(&mut self, fault: Fault) {
        self.0 &= !Self::bit(fault);
    }

    /// Builder form of [`Faults::insert`].
    pub fn with(mut self, fault: Fault) -> Self {
        self.insert(fault);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// The faults in the set, in [`Fault::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Fault> + '_ {
        Fault::ALL.iter().copied().filter(|f| self.contains(*f))
    }
}

impl From<Fault> for Faults {
    fn from(fault: Fault) -> Self {
        Faults::none().with(fault)
    }
}

impl FromIterator<Fault> for Faults {
    fn from_iter<I: IntoIterator<Item = Fault>>(iter: I) -> Self {
        let mut set = Faults::none();
        for f in iter {
            set.insert(f);
        }
        set
    }
}

impl Extend<Fault> for Faults {
    fn extend<I: IntoIterator<Item = Fault>>(&mut self, iter: I) {
        for f in iter {
            self.insert(f);
        }
    }
}

impl fmt::Display for Faults {
    /// Comma-separated names, the same form [`Faults::from_str`] parses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, fault) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(fault.name())?;
        }
        Ok(())
    }
}

impl FromStr for Faults {
    type Err = ServerError;

    /// Comma- or whitespace-separated fault names; empty means no faults.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(Fault::from_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.to_string().parse::<Fault>().ok(), Some(*f));
            assert!(!f.describe().is_empty());
        }
        // 24 POP3, 30 IMAP, 22 SMTP; the bit set holds 128.
        assert_eq!(Fault::ALL.len(), 76);
    }

    #[test]
    fn names_are_unique_kebab_case() {
        let mut names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        for n in &names {
            // Digits are allowed (`smtp-strip-8bit`); a name starts with a letter.
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && n.starts_with(|c: char| c.is_ascii_lowercase()),
                "{n}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Fault::ALL.len());
    }

    #[test]
    fn parse_is_lenient_about_case_and_underscores() {
        assert_eq!("Bare_LF".parse::<Fault>().ok(), Some(Fault::BareLf));
        assert!(matches!(
            "no-such-fault".parse::<Fault>(),
            Err(ServerError::UnknownFault(name)) if name == "no-such-fault"
        ));
    }

    #[test]
    fn sets_compose_and_display() {
        let set: Faults = "bare-lf, stall-retr,bare-lf".parse().unwrap_or_default();
        assert_eq!(set.len(), 2);
        assert!(set.contains(Fault::BareLf) && set.contains(Fault::StallRetr));
        assert!(!set.contains(Fault::NoGreeting));
        assert_eq!(set.to_string(), "bare-lf,stall-retr");
        assert_eq!(set.to_string().parse::<Faults>().ok(), Some(set));
        assert!("".parse::<Faults>().is_ok_and(|s| s.is_empty()));
        assert!("bare-lf,bogus".parse::<Faults>().is_err());
        let mut all: Faults = Fault::ALL.iter().copied().collect();
        assert_eq!(all.len(), Fault::ALL.len());
        all.remove(Fault::BareLf);
        assert!(!all.contains(Fault::BareLf));
    }
}
