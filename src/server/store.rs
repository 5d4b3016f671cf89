//! The in-memory mail store shared by all sessions: the POP3 server works on
//! each account's INBOX (its maildrop), the IMAP server on INBOX and the
//! mailboxes its clients create.
//!
//! POP3 sessions take a snapshot at login and commit deletions by UIDL;
//! IMAP sessions keep a view of the selected mailbox and reconcile it with
//! the store by IMAP UID. Either way concurrent sessions never act on the
//! wrong message and no mailbox lock is needed.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::ServerError;

/// The IMAP hierarchy delimiter.
pub const DELIMITER: char = '/';

/// How many octets one account may hold (all mailboxes), so APPEND cannot
/// exhaust memory; copies share their bytes and are not counted twice.
pub const ACCOUNT_QUOTA: usize = 256 * 1024 * 1024;

/// One stored message. Cloning is cheap: the bytes are shared, so a RETR or
/// FETCH of a large message never copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// POP3 UIDL: unique within the store and stable for the message's
    /// lifetime; printable ASCII 0x21-0x7E, at most 70 octets (RFC 1939).
    pub uid: String,
    /// The exact octets, with CRLF line endings.
    pub data: Arc<[u8]>,
    /// IMAP UID within its mailbox: strictly ascending in arrival order and
    /// never reused while the mailbox keeps its UIDVALIDITY.
    pub imap_uid: u32,
    /// IMAP flags: system flags spelled canonically (`\Seen`), keywords as
    /// first stored; no duplicates (flags compare case-insensitively).
    pub flags: Vec<String>,
    /// IMAP INTERNALDATE in seconds since the Unix epoch...
    pub internal_date: i64,
    /// ...and the UTC offset in minutes it is shown with.
    pub internal_zone: i32,
    /// No IMAP session has selected the mailbox since the message arrived:
    /// the first one to do so reports it as `\Recent` (IMAP4rev1).
    pub recent: bool,
}

impl Message {
    /// Size in octets, as LIST/STAT and RFC822.SIZE report it.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Whether the message carries `flag` (case-insensitive).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// An IMAP mailbox; INBOX is the account's POP3 maildrop.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub name: String,
    /// Changes whenever UIDs could be reused (a new mailbox under an old
    /// name, a restarted server), so clients drop their UID caches.
    pub uid_validity: u32,
    /// The UID the next message will get.
    pub uid_next: u32,
    /// In UID order.
    pub messages: Vec<Message>,
}

impl Mailbox {
    fn new(name: String, uid_validity: u32) -> Self {
        Mailbox {
            name,
            uid_validity,
            uid_next: 1,
            messages: Vec::new(),
        }
    }
}

/// A snapshot of a user and their INBOX (the POP3 maildrop).
#[derive(Clone)]
pub struct Account {
    pub user: String,
    pub password: String,
    /// INBOX.
    pub messages: Vec<Message>,
    /// Every mailbox name, INBOX first.
    pub mailboxes: Vec<String>,
}

impl fmt::Debug for Account {
    /// Hand-written so a debug print never reveals the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("messages", &self.messages.len())
            .field("mailboxes", &self.mailboxes)
            .finish()
    }
}

/// Why a mailbox operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("no such account")]
    NoSuchAccount,
    #[error("no such mailbox")]
    NoSuchMailbox,
    #[error("mailbox already exists")]
    AlreadyExists,
    #[error("mailbox has children; delete them first")]
    HasChildren,
    #[error("INBOX cannot be deleted")]
    Inbox,
    #[error("invalid mailbox name")]
    InvalidName,
    #[error("account is over its quota")]
    OverQuota,
}

/// How STORE changes a message's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Replace,
    Add,
    Remove,
}

/// INBOX is case-insensitive (RFC 9051 section 5.1); every other name is
/// kept as given.
pub fn canonical_mailbox(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name.to_string()
    }
}

/// A name a client may create: no wildcards or line breaks (they would be
/// unlistable), no empty hierarchy levels.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['*', '%', '\r', '\n', '\0'])
        && name.split(DELIMITER).all(|level| !level.is_empty())
}

fn is_inferior(name: &str, of: &str) -> bool {
    name.len() > of.len() && name.starts_with(of) && name[of.len()..].starts_with(DELIMITER)
}

/// The superior names of `name` ("a/b/c" gives "a", "a/b"), outermost first.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices(DELIMITER).map(move |(i, _)| &name[..i])
}

fn push_flag(flags: &mut Vec<String>, flag: &str) {
    if !flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
        flags.push(flag.to_string());
    }
}

/// A sorted copy, for binary searches over UID lists of any length.
fn sorted(uids: &[u32]) -> Vec<u32> {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct StoredAccount {
    user: String,
    password: String,
    /// `mailboxes[0]` is INBOX and always exists.
    mailboxes: Vec<Mailbox>,
    subscriptions: Vec<String>,
}

impl StoredAccount {
    fn mailbox(&self, name: &str) -> Option<&Mailbox> {
        let name = canonical_mailbox(name);
        self.mailboxes.iter().find(|m| m.name == name)
    }

    fn mailbox_mut(&mut self, name: &str) -> Option<&mut Mailbox> {
        let name = canonical_mailbox(name);
        self.mailboxes.iter_mut().find(|m| m.name == name)
    }

    /// The mailbox, if it still is the one a session selected.
    fn selected_mut(&mut self, name: &str, uid_validity: u32) -> Option<&mut Mailbox> {
        self.mailbox_mut(name).filter(|m| m.uid_validity == uid_validity)
    }

    fn inbox_mut(&mut self) -> &mut Mailbox {
        if self.mailboxes.is_empty() {
            // Never happens (INBOX is created with the account and cannot be
            // deleted), but an empty INBOX is the right answer if it did.
            self.mailboxes.push(Mailbox::new("INBOX".into(), 1));
        }
        &mut self.mailboxes[0]
    }

    fn octets(&self) -> usize {
        self.mailboxes
            .iter()
            .flat_map(|m| &m.messages)
            .map(Message::size)
            .sum()
    }

    fn snapshot(&self) -> Account {
        Account {
            user: self.user.clone(),
            password: self.password.clone(),
            messages: self
                .mailboxes
                .first()
                .map(|m| m.messages.clone())
                .unwrap_or_default(),
            mailboxes: self.mailboxes.iter().map(|m| m.name.clone()).collect(),
        }
    }
}

struct Inner {
    /// Insertion order matters: "the first account" is the one faults such
    /// as `commands-before-login` act on.
    accounts: Vec<StoredAccount>,
    next_uid: u64,
    next_uid_validity: u32,
}

impl Default for Inner {
    fn default() -> Self {
        // Seeded from the clock so a restarted server (whose in-memory UIDs
        // start over) never repeats a UIDVALIDITY a client may have cached.
        let seed = u32::try_from(now_secs()).unwrap_or(u32::MAX / 2).max(1);
        Inner {
            accounts: Vec::new(),
            next_uid: 0,
            next_uid_validity: seed,
        }
    }
}

impl Inner {
    fn account(&self, user: &str) -> Result<&StoredAccount, MailboxError> {
        self.accounts
            .iter()
            .find(|a| a.user == user)
            .ok_or(MailboxError::NoSuchAccount)
    }

    fn account_mut(&mut self, user: &str) -> Result<&mut StoredAccount, MailboxError> {
        self.accounts
            .iter_mut()
            .find(|a| a.user == user)
            .ok_or(MailboxError::NoSuchAccount)
    }

    fn uid_validity(&mut self) -> u32 {
        let v = self.next_uid_validity;
        self.next_uid_validity = self.next_uid_validity.checked_add(1).unwrap_or(1);
        v
    }

    /// A message for `mailbox` with fresh POP3 and IMAP UIDs; the caller
    /// pushes it.
    fn new_message(&mut self, bytes: Arc<[u8]>, uid_next: &mut u32, date: (i64, i32)) -> Message {
        self.next_uid += 1;
        let imap_uid = *uid_next;
        *uid_next = uid_next.saturating_add(1);
        Message {
            uid: format!("mc-{:06}", self.next_uid),
            data: bytes,
            imap_uid,
            flags: Vec::new(),
            internal_date: date.0,
            internal_zone: date.1,
            recent: true,
        }
    }

    /// Appends to a mailbox of `user`; returns the new message's IMAP UID.
    fn push(
        &mut self,
        user: &str,
        mailbox: &str,
        bytes: Arc<[u8]>,
        date: (i64, i32),
    ) -> Result<&mut Message, MailboxError> {
        let mut uid_next = self
            .account(user)?
            .mailbox(mailbox)
            .ok_or(MailboxError::NoSuchMailbox)?
            .uid_next;
        let message = self.new_message(bytes, &mut uid_next, date);
        let target = self
            .account_mut(user)?
            .mailbox_mut(mailbox)
            .ok_or(MailboxError::NoSuchMailbox)?;
        target.uid_next = uid_next;
        target.messages.push(message);
        target.messages.last_mut().ok_or(MailboxError::NoSuchMailbox)
    }
}

/// Maildrops and mailboxes of all accounts behind one mutex; every
/// operation is short and never held across an await.
pub struct Store {
    inner: Mutex<Inner>,
    /// Bumped after every change, so IDLE can wait for one instead of polling.
    changes: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        let accounts: Vec<Account> = inner.accounts.iter().map(StoredAccount::snapshot).collect();
        f.debug_struct("Store").field("accounts", &accounts).finish()
    }
}

impl Store {
    /// An empty store with no accounts.
    pub fn new() -> Store {
        Store::default()
    }

    /// The demo store: every user of [`super::fixture::FIXTURE_USERS`] with the
    /// fixture maildrop of [`super::fixture::messages`] as INBOX, received at
    /// the fixed [`super::fixture::received`] times.
    pub fn fixture() -> Store {
        let store = Store::new();
        for (user, password) in super::fixture::FIXTURE_USERS {
            store.add_account(user, password);
            let mut inner = store.lock();
            for (bytes, at) in super::fixture::messages()
                .into_iter()
                .zip(super::fixture::received())
            {
                inner.push(user, "INBOX", bytes.into(), (at, 0)).ok();
            }
        }
        store
    }

    /// A poisoned lock only means another session panicked mid-operation;
    /// every operation leaves the data consistent, so keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees a new value after every change to the store.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Creates the account (with an empty INBOX), or changes its password if
    /// it already exists (its mail is kept).
    pub fn add_account(&self, user: &str, password: &str) {
        let mut inner = self.lock();
        if let Ok(account) = inner.account_mut(user) {
            account.password = password.to_string();
            return;
        }
        let uid_validity = inner.uid_validity();
        inner.accounts.push(StoredAccount {
            user: user.to_string(),
            password: password.to_string(),
            mailboxes: vec![Mailbox::new("INBOX".into(), uid_validity)],
            subscriptions: vec!["INBOX".into()],
        });
    }

    /// Appends a message to INBOX (stored verbatim: give it CRLF line
    /// endings) and returns its new POP3 UID.
    pub fn add_message(&self, user: &str, bytes: impl Into<Vec<u8>>) -> Result<String, ServerError> {
        let mut inner = self.lock();
        let uid = inner
            .push(user, "INBOX", bytes.into().into(), (now_secs(), 0))
            .map(|m| m.uid.clone())
            .map_err(|_| ServerError::NoSuchAccount(user.to_string()))?;
        drop(inner);
        self.changed();
        Ok(uid)
    }

    /// Replaces the whole INBOX; returns the new POP3 UIDs in order. IMAP
    /// UIDs go on ascending, so IMAP sessions see expunges and new mail.
    pub fn set_messages<B: Into<Vec<u8>>>(
        &self,
        user: &str,
        messages: impl IntoIterator<Item = B>,
    ) -> Result<Vec<String>, ServerError> {
        let mut inner = self.lock();
        let no_account = || ServerError::NoSuchAccount(user.to_string());
        inner
            .account_mut(user)
            .map_err(|_| no_account())?
            .inbox_mut()
            .messages
            .clear();
        let mut uids = Vec::new();
        for bytes in messages {
            let m = inner
                .push(user, "INBOX", bytes.into().into(), (now_secs(), 0))
                .map_err(|_| no_account())?;
            uids.push(m.uid.clone());
        }
        drop(inner);
        self.changed();
        Ok(uids)
    }

    /// A snapshot of INBOX, or `None` for an unknown user.
    pub fn messages(&self, user: &str) -> Option<Vec<Message>> {
        let inner = self.lock();
        let account = inner.account(user).ok()?;
        Some(
            account
                .mailboxes
                .first()
                .map(|m| m.messages.clone())
                .unwrap_or_default(),
        )
    }

    /// A snapshot of the account, or `None` for an unknown user.
    pub fn account(&self, user: &str) -> Option<Account> {
        let inner = self.lock();
        inner.account(user).ok().map(StoredAccount::snapshot)
    }

    pub fn account_password(&self, user: &str) -> Option<String> {
        let inner = self.lock();
        inner.account(user).ok().map(|a| a.password.clone())
    }

    /// User names in creation order.
    pub fn users(&self) -> Vec<String> {
        let inner = self.lock();
        inner.accounts.iter().map(|a| a.user.clone()).collect()
    }

    /// The first account created, if any.
    pub fn first_user(&self) -> Option<String> {
        let inner = self.lock();
        inner.accounts.first().map(|a| a.user.clone())
    }

    /// Removes the INBOX messages with these POP3 UIDs; UIDs already gone
    /// (removed by a concurrent session) are ignored. Returns how many were
    /// removed.
    pub fn delete_messages(&self, user: &str, uids: &[&str]) -> usize {
        let mut inner = self.lock();
        let Ok(account) = inner.account_mut(user) else {
            return 0;
        };
        let inbox = account.inbox_mut();
        let before = inbox.messages.len();
        inbox.messages.retain(|m| !uids.contains(&m.uid.as_str()));
        let removed = before - inbox.messages.len();
        drop(inner);
        if removed > 0 {
            self.changed();
        }
        removed
    }

    /// Every mailbox name of the user, INBOX first, the rest sorted.
    pub fn mailbox_names(&self, user: &str) -> Vec<String> {
        let inner = self.lock();
        let Ok(account) = inner.account(user) else {
            return Vec::new();
        };
        let mut names: Vec<String> = account.mailboxes.iter().map(|m| m.name.clone()).collect();
        if names.len() > 1 {
            names[1..].sort();
        }
        names
    }

    /// A snapshot of one mailbox.
    pub fn mailbox(&self, user: &str, name: &str) -> Option<Mailbox> {
        let inner = self.lock();
        inner.account(user).ok()?.mailbox(name).cloned()
    }

    /// Creates a mailbox and any missing superior names (RFC 9051 section
    /// 6.3.4); a trailing delimiter is ignored.
    pub fn create_mailbox(&self, user: &str, name: &str) -> Result<(), MailboxError> {
        let name = canonical_mailbox(name.strip_suffix(DELIMITER).unwrap_or(name));
        if !valid_name(&name) {
            return Err(MailboxError::InvalidName);
        }
        let mut inner = self.lock();
        if inner.account(user)?.mailbox(&name).is_some() {
            return Err(MailboxError::AlreadyExists);
        }
        let missing: Vec<String> = {
            let account = inner.account(user)?;
            ancestors(&name)
                .chain(std::iter::once(name.as_str()))
                .filter(|n| account.mailbox(n).is_none())
                .map(str::to_string)
                .collect()
        };
        for n in missing {
            let v = inner.uid_validity();
            inner.account_mut(user)?.mailboxes.push(Mailbox::new(n, v));
        }
        drop(inner);
        self.changed();
        Ok(())
    }

    /// Deletes a mailbox and its messages. INBOX cannot be deleted, and
    /// neither can a mailbox with inferiors (so no name is ever left
    /// without its superiors).
    pub fn delete_mailbox(&self, user: &str, name: &str) -> Result<(), MailboxError> {
        let name = canonical_mailbox(name);
        if name == "INBOX" {
            return Err(MailboxError::Inbox);
        }
        let mut inner = self.lock();
        let account = inner.account_mut(user)?;
        if account.mailbox(&name).is_none() {
            return Err(MailboxError::NoSuchMailbox);
        }
        if account.mailboxes.iter().any(|m| is_inferior(&m.name, &name)) {
            return Err(MailboxError::HasChildren);
        }
        account.mailboxes.retain(|m| m.name != name);
        drop(inner);
        self.changed();
        Ok(())
    }

    /// Renames a mailbox with its inferiors (RFC 9051 section 6.3.6);
    /// renaming INBOX moves its messages to the new mailbox and leaves
    /// INBOX empty.
    pub fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<(), MailboxError> {
        let from = canonical_mailbox(from);
        let to = canonical_mailbox(to.strip_suffix(DELIMITER).unwrap_or(to));
        if !valid_name(&to) || to == "INBOX" || is_inferior(&to, &from) {
            return Err(if to == "INBOX" {
                MailboxError::AlreadyExists
            } else {
                MailboxError::InvalidName
            });
        }
        let mut inner = self.lock();
        let account = inner.account(user)?;
        if account.mailbox(&from).is_none() {
            return Err(MailboxError::NoSuchMailbox);
        }
        if account.mailbox(&to).is_some() {
            return Err(MailboxError::AlreadyExists);
        }
        if from == "INBOX" {
            let v = inner.uid_validity();
            let account = inner.account_mut(user)?;
            let inbox = account.inbox_mut();
            let mut moved = Mailbox::new(to.clone(), v);
            moved.messages = std::mem::take(&mut inbox.messages);
            for m in &mut moved.messages {
                m.imap_uid = moved.uid_next;
                moved.uid_next = moved.uid_next.saturating_add(1);
            }
            account.mailboxes.push(moved);
        } else {
            let account = inner.account_mut(user)?;
            for m in &mut account.mailboxes {
                if m.name == from || is_inferior(&m.name, &from) {
                    m.name = format!("{to}{}", &m.name[from.len()..]);
                }
            }
        }
        // Superiors of the new name that do not exist yet.
        let missing: Vec<String> = {
            let account = inner.account(user)?;
            ancestors(&to)
                .filter(|n| account.mailbox(n).is_none())
                .map(str::to_string)
                .collect()
        };
        for n in missing {
            let v = inner.uid_validity();
            inner.account_mut(user)?.mailboxes.push(Mailbox::new(n, v));
        }
        drop(inner);
        self.changed();
        Ok(())
    }

    /// The subscribed names (which need not exist any more).
    pub fn subscriptions(&self, user: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .account(user)
            .map(|a| a.subscriptions.clone())
            .unwrap_or_default()
    }

    /// SUBSCRIBE (the mailbox must exist) or UNSUBSCRIBE.
    pub fn set_subscribed(&self, user: &str, name: &str, subscribed: bool) -> Result<(), MailboxError> {
        let name = canonical_mailbox(name);
        let mut inner = self.lock();
        let account = inner.account_mut(user)?;
        let present = account.subscriptions.iter().position(|s| *s == name);
        match (subscribed, present) {
            (true, None) => {
                if account.mailbox(&name).is_none() {
                    return Err(MailboxError::NoSuchMailbox);
                }
                account.subscriptions.push(name);
            }
            (false, Some(i)) => {
                account.subscriptions.remove(i);
            }
            _ => {}
        }
        Ok(())
    }

    /// IMAP APPEND: stores the message with `flags` and INTERNALDATE
    /// `date` (now when `None`); returns (UIDVALIDITY, UID) for APPENDUID.
    pub fn append(
        &self,
        user: &str,
        mailbox: &str,
        bytes: impl Into<Vec<u8>>,
        flags: &[String],
        date: Option<(i64, i32)>,
    ) -> Result<(u32, u32), MailboxError> {
        let bytes: Vec<u8> = bytes.into();
        let mut inner = self.lock();
        let account = inner.account(user)?;
        let uid_validity = account
            .mailbox(mailbox)
            .ok_or(MailboxError::NoSuchMailbox)?
            .uid_validity;
        if account.octets().saturating_add(bytes.len()) > ACCOUNT_QUOTA {
            return Err(MailboxError::OverQuota);
        }
        let message = inner.push(user, mailbox, bytes.into(), date.unwrap_or((now_secs(), 0)))?;
        for f in flags {
            push_flag(&mut message.flags, f);
        }
        let uid = message.imap_uid;
        drop(inner);
        self.changed();
        Ok((uid_validity, uid))
    }

    /// A snapshot of a mailbox for an IMAP session and the UIDs of its
    /// `\Recent` messages; with `claim_recent` (SELECT, not EXAMINE) the
    /// session takes those flags so no other session reports them.
    pub fn open_mailbox(
        &self,
        user: &str,
        name: &str,
        claim_recent: bool,
    ) -> Result<(Mailbox, Vec<u32>), MailboxError> {
        let mut inner = self.lock();
        let mailbox = inner
            .account_mut(user)?
            .mailbox_mut(name)
            .ok_or(MailboxError::NoSuchMailbox)?;
        let mut recent = Vec::new();
        for m in mailbox.messages.iter_mut().filter(|m| m.recent) {
            m.recent = !claim_recent;
            recent.push(m.imap_uid);
        }
        Ok((mailbox.clone(), recent))
    }

    /// Changes the flags of the messages with these UIDs (those gone are
    /// skipped); returns each found message's UID and flags afterwards.
    pub fn store_flags(
        &self,
        user: &str,
        mailbox: &str,
        uid_validity: u32,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
    ) -> Vec<(u32, Vec<String>)> {
        let mut inner = self.lock();
        let Some(mailbox) = inner
            .account_mut(user)
            .ok()
            .and_then(|a| a.selected_mut(mailbox, uid_validity))
        else {
            return Vec::new();
        };
        let mut result = Vec::new();
        let mut any = false;
        let wanted = sorted(uids);
        for m in mailbox
            .messages
            .iter_mut()
            .filter(|m| wanted.binary_search(&m.imap_uid).is_ok())
        {
            let before = m.flags.clone();
            match change {
                FlagChange::Replace => {
                    m.flags.clear();
                    flags.iter().for_each(|f| push_flag(&mut m.flags, f));
                }
                FlagChange::Add => flags.iter().for_each(|f| push_flag(&mut m.flags, f)),
                FlagChange::Remove => m
                    .flags
                    .retain(|f| !flags.iter().any(|x| x.eq_ignore_ascii_case(f))),
            }
            any |= before != m.flags;
            result.push((m.imap_uid, m.flags.clone()));
        }
        drop(inner);
        if any {
            self.changed();
        }
        result
    }

    /// Removes the messages flagged `\Deleted` (only those in `only`, when
    /// given: UID EXPUNGE); returns their UIDs.
    pub fn expunge(&self, user: &str, mailbox: &str, uid_validity: u32, only: Option<&[u32]>) -> Vec<u32> {
        let only = only.map(sorted);
        let mut inner = self.lock();
        let Some(mailbox) = inner
            .account_mut(user)
            .ok()
            .and_then(|a| a.selected_mut(mailbox, uid_validity))
        else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        mailbox.messages.retain(|m| {
            let go = m.has_flag("\\Deleted")
                && only
                    .as_ref()
                    .is_none_or(|set| set.binary_search(&m.imap_uid).is_ok());
            if go {
                removed.push(m.imap_uid);
            }
            !go
        });
        drop(inner);
        if !removed.is_empty() {
            self.changed();
        }
        removed
    }

    /// Removes the messages with these UIDs whatever their flags (MOVE);
    /// returns how many were removed.
    pub fn remove(&self, user: &str, mailbox: &str, uid_validity: u32, uids: &[u32]) -> usize {
        let mut inner = self.lock();
        let Some(mailbox) = inner
            .account_mut(user)
            .ok()
            .and_then(|a| a.selected_mut(mailbox, uid_validity))
        else {
            return 0;
        };
        let before = mailbox.messages.len();
        let gone = sorted(uids);
        mailbox
            .messages
            .retain(|m| gone.binary_search(&m.imap_uid).is_err());
        let removed = before - mailbox.messages.len();
        drop(inner);
        if removed > 0 {
            self.changed();
        }
        removed
    }

    /// Copies messages (bytes shared, flags and INTERNALDATE kept, `\Recent`
    /// set) in UID order; returns the target's UIDVALIDITY and each
    /// (source UID, new UID) pair for COPYUID.
    pub fn copy(
        &self,
        user: &str,
        from: &str,
        uid_validity: u32,
        uids: &[u32],
        to: &str,
    ) -> Result<(u32, Vec<(u32, u32)>), MailboxError> {
        let wanted = sorted(uids);
        let mut inner = self.lock();
        let account = inner.account_mut(user)?;
        let source: Vec<Message> = account
            .selected_mut(from, uid_validity)
            .ok_or(MailboxError::NoSuchMailbox)?
            .messages
            .iter()
            .filter(|m| wanted.binary_search(&m.imap_uid).is_ok())
            .cloned()
            .collect();
        let target_validity = account
            .mailbox(to)
            .ok_or(MailboxError::NoSuchMailbox)?
            .uid_validity;
        let mut pairs = Vec::new();
        for m in source {
            let copy = inner.push(user, to, Arc::clone(&m.data), (m.internal_date, m.internal_zone))?;
            copy.flags = m.flags.clone();
            pairs.push((m.imap_uid, copy.imap_uid));
        }
        drop(inner);
        if !pairs.is_empty() {
            self.changed();
        }
        Ok((target_validity, pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_unique_and_valid() {
        let store = Store::fixture();
        let mut all = Vec::new();
        for user in store.users() {
            for m in store.messages(&user).unwrap_or_default() {
                assert!(m.uid.len() <= 70);
                assert!(m.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
                all.push(m.uid);
            }
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 8);
    }

    #[test]
    fn delete_by_uid_ignores_missing() {
        let store = Store::new();
        store.add_account("u", "p");
        let a = store.add_message("u", b"a\r\n".to_vec()).unwrap_or_default();
        let b = store.add_message("u", b"b\r\n".to_vec()).unwrap_or_default();
        assert_eq!(store.delete_messages("u", &[&a, "mc-nope"]), 1);
        assert_eq!(store.delete_messages("u", &[&a]), 0);
        let left = store.messages("u").unwrap_or_default();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].uid, b);
        assert!(store.add_message("nobody", b"x".to_vec()).is_err());
        assert_eq!(store.delete_messages("nobody", &[&b]), 0);
    }

    #[test]
    fn account_debug_hides_password() {
        let store = Store::new();
        store.add_account("u", "sekrit");
        let shown = format!("{:?} {:?}", store.account("u"), store);
        assert!(!shown.contains("sekrit"));
        assert_eq!(store.account_password("u").as_deref(), Some("sekrit"));
        store.add_account("u", "other");
        assert_eq!(store.users(), vec!["u".to_string()]);
        assert_eq!(store.account_password("u").as_deref(), Some("other"));
    }

    #[test]
    fn imap_uids_ascend_and_survive_pop3_deletes() {
        let store = Store::fixture();
        let inbox = store.mailbox("alice", "inbox").expect("INBOX");
        let uids: Vec<u32> = inbox.messages.iter().map(|m| m.imap_uid).collect();
        assert_eq!(uids, vec![1, 2, 3, 4]);
        assert_eq!(inbox.uid_next, 5);
        assert!(inbox.messages.iter().all(|m| m.recent && m.flags.is_empty()));
        let first = inbox.messages[0].uid.clone();
        assert_eq!(store.delete_messages("alice", &[&first]), 1);
        store.add_message("alice", b"new\r\n".to_vec()).expect("add");
        let inbox = store.mailbox("alice", "INBOX").expect("INBOX");
        let uids: Vec<u32> = inbox.messages.iter().map(|m| m.imap_uid).collect();
        assert_eq!(uids, vec![2, 3, 4, 5]);
        store.set_messages("alice", [b"x\r\n".to_vec()]).expect("set");
        let inbox = store.mailbox("alice", "INBOX").expect("INBOX");
        assert_eq!(inbox.messages[0].imap_uid, 6);
        let bob = store.mailbox("bob", "INBOX").expect("bob");
        assert_ne!(bob.uid_validity, inbox.uid_validity);
    }

    #[test]
    fn mailboxes_create_rename_delete() {
        let store = Store::fixture();
        let mut changes = store.watch_changes();
        changes.borrow_and_update();
        assert_eq!(store.create_mailbox("alice", "a/b/"), Ok(()));
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(store.mailbox_names("alice"), vec!["INBOX", "a", "a/b"]);
        assert_eq!(
            store.create_mailbox("alice", "a"),
            Err(MailboxError::AlreadyExists)
        );
        assert_eq!(
            store.create_mailbox("alice", "inbox"),
            Err(MailboxError::AlreadyExists)
        );
        assert_eq!(
            store.create_mailbox("alice", "x*"),
            Err(MailboxError::InvalidName)
        );
        assert_eq!(
            store.create_mailbox("alice", "x//y"),
            Err(MailboxError::InvalidName)
        );
        assert_eq!(store.delete_mailbox("alice", "a"), Err(MailboxError::HasChildren));
        assert_eq!(store.delete_mailbox("alice", "INBOX"), Err(MailboxError::Inbox));
        let old = store.mailbox("alice", "a/b").expect("a/b").uid_validity;
        assert_eq!(store.rename_mailbox("alice", "a", "c/d"), Ok(()));
        assert_eq!(store.mailbox_names("alice"), vec!["INBOX", "c", "c/d", "c/d/b"]);
        assert_eq!(store.mailbox("alice", "c/d/b").map(|m| m.uid_validity), Some(old));
        assert_eq!(
            store.rename_mailbox("alice", "c", "c/x"),
            Err(MailboxError::InvalidName)
        );
        assert_eq!(store.delete_mailbox("alice", "c/d/b"), Ok(()));
        assert_eq!(store.create_mailbox("alice", "c/d/b"), Ok(()));
        assert_ne!(store.mailbox("alice", "c/d/b").map(|m| m.uid_validity), Some(old));

        assert_eq!(store.rename_mailbox("alice", "INBOX", "old"), Ok(()));
        assert_eq!(store.messages("alice").map(|m| m.len()), Some(0));
        let old = store.mailbox("alice", "old").expect("old");
        assert_eq!(old.messages.len(), 4);
        assert_eq!(old.uid_next, 5);
        assert_eq!(
            store.set_subscribed("alice", "nope", true),
            Err(MailboxError::NoSuchMailbox)
        );
        assert_eq!(store.set_subscribed("alice", "old", true), Ok(()));
        assert_eq!(store.subscriptions("alice"), vec!["INBOX", "old"]);
    }

    #[test]
    fn flags_copy_and_expunge() {
        let store = Store::fixture();
        store.create_mailbox("alice", "Saved").expect("create");
        let inbox = store.mailbox("alice", "INBOX").expect("INBOX");
        let v = inbox.uid_validity;
        let deleted = vec!["\\Deleted".to_string()];
        let changed = store.store_flags("alice", "INBOX", v, &[1, 3, 99], FlagChange::Add, &deleted);
        assert_eq!(changed.len(), 2);
        let again = store.store_flags("alice", "INBOX", v, &[1], FlagChange::Add, &["\\DELETED".into()]);
        assert_eq!(again, vec![(1, deleted.clone())]);
        assert!(store
            .store_flags("alice", "INBOX", v + 1, &[1], FlagChange::Add, &deleted)
            .is_empty());
        let (target, pairs) = store.copy("alice", "INBOX", v, &[1, 2], "Saved").expect("copy");
        assert_eq!(pairs, vec![(1, 1), (2, 2)]);
        assert_eq!(
            Some(target),
            store.mailbox("alice", "Saved").map(|m| m.uid_validity)
        );
        let saved = store.mailbox("alice", "Saved").expect("Saved");
        assert!(saved.messages[0].has_flag("\\deleted"));
        assert!(Arc::ptr_eq(&saved.messages[0].data, &inbox.messages[0].data));
        assert_eq!(store.expunge("alice", "INBOX", v, Some(&[3])), vec![3]);
        assert_eq!(store.expunge("alice", "INBOX", v, None), vec![1]);
        assert_eq!(store.messages("alice").map(|m| m.len()), Some(2));
        let (_, peeked) = store.open_mailbox("alice", "INBOX", false).expect("open");
        assert_eq!(peeked, vec![2, 4]);
        let (_, claimed) = store.open_mailbox("alice", "INBOX", true).expect("open");
        assert_eq!(claimed, vec![2, 4]);
        let (_, claimed) = store.open_mailbox("alice", "INBOX", true).expect("open");
        assert!(claimed.is_empty());
        assert_eq!(store.remove("alice", "INBOX", v, &[2]), 1);
        let (v2, uid) = store
            .append(
                "alice",
                "INBOX",
                b"x\r\n".to_vec(),
                &["\\Seen".into()],
                Some((0, 60)),
            )
            .expect("append");
        assert_eq!((v2, uid), (v, 5));
        assert_eq!(
            store.append("alice", "nope", b"x".to_vec(), &[], None),
            Err(MailboxError::NoSuchMailbox)
        );
        let big = vec![b'x'; ACCOUNT_QUOTA];
        assert_eq!(
            store.append("alice", "INBOX", big, &[], None),
            Err(MailboxError::OverQuota)
        );
    }
}
