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

// `Faults` is a `u64` bit set: one more fault than fits must not compile.
const _: () = assert!(Fault::ALL.len() <= u64::BITS as usize);

/// A set of [`Fault`]s; faults compose freely.
///
/// A bit set so it is `Copy` and cheap to consult on every reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Faults(u64);

impl Faults {
    /// The correct server: no faults.
    pub const fn none() -> Self {
        Faults(0)
    }

    fn bit(fault: Fault) -> u64 {
        1u64 << (fault as u32)
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
        assert_eq!(Fault::ALL.len(), 54);
    }

    #[test]
    fn names_are_unique_kebab_case() {
        let mut names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        for n in &names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{n}");
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
