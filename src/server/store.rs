//! The in-memory maildrop store shared by all sessions (and, later, by the
//! IMAP and SMTP servers).
//!
//! Sessions take a snapshot of a maildrop at login and commit deletions by
//! UID, so concurrent sessions never delete the wrong message and no
//! maildrop lock is needed.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::ServerError;

/// One stored message. Cloning is cheap: the bytes are shared, so a RETR of
/// a large message never copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique within the store and stable for the message's lifetime;
    /// printable ASCII 0x21-0x7E, at most 70 octets (RFC 1939 UIDL rules).
    pub uid: String,
    /// The exact octets, with CRLF line endings.
    pub data: Arc<[u8]>,
}

impl Message {
    /// Size in octets, as LIST and STAT report it.
    pub fn size(&self) -> usize {
        self.data.len()
    }
}

/// A user and their maildrop.
#[derive(Clone)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub messages: Vec<Message>,
}

impl fmt::Debug for Account {
    /// Hand-written so a debug print never reveals the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("messages", &self.messages.len())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// Insertion order matters: "the first account" is the one faults such
    /// as `commands-before-login` act on.
    accounts: Vec<Account>,
    next_uid: u64,
}

impl Inner {
    fn account_mut(&mut self, user: &str) -> Result<&mut Account, ServerError> {
        self.accounts
            .iter_mut()
            .find(|a| a.user == user)
            .ok_or_else(|| ServerError::NoSuchAccount(user.to_string()))
    }

    fn new_message(&mut self, bytes: Vec<u8>) -> Message {
        self.next_uid += 1;
        Message {
            uid: format!("mc-{:06}", self.next_uid),
            data: bytes.into(),
        }
    }
}

/// Maildrops of all accounts behind one mutex; every operation is short and
/// never held across an await.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Store")
            .field("accounts", &inner.accounts)
            .finish()
    }
}

impl Store {
    /// An empty store with no accounts.
    pub fn new() -> Store {
        Store::default()
    }

    /// The demo store: every user of [`super::fixture::FIXTURE_USERS`] with the
    /// fixture maildrop of [`super::fixture::messages`].
    pub fn fixture() -> Store {
        let store = Store::new();
        for (user, password) in super::fixture::FIXTURE_USERS {
            store.add_account(user, password);
            store.set_messages(user, super::fixture::messages()).ok();
        }
        store
    }

    /// A poisoned lock only means another session panicked mid-operation;
    /// every operation leaves the data consistent, so keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates the account, or changes its password if it already exists
    /// (its maildrop is kept).
    pub fn add_account(&self, user: &str, password: &str) {
        let mut inner = self.lock();
        match inner.accounts.iter_mut().find(|a| a.user == user) {
            Some(account) => account.password = password.to_string(),
            None => inner.accounts.push(Account {
                user: user.to_string(),
                password: password.to_string(),
                messages: Vec::new(),
            }),
        }
    }

    /// Appends a message (stored verbatim: give it CRLF line endings) and
    /// returns its new UID.
    pub fn add_message(&self, user: &str, bytes: impl Into<Vec<u8>>) -> Result<String, ServerError> {
        let mut inner = self.lock();
        inner.account_mut(user)?;
        let message = inner.new_message(bytes.into());
        let uid = message.uid.clone();
        inner.account_mut(user)?.messages.push(message);
        Ok(uid)
    }

    /// Replaces the whole maildrop; returns the new UIDs in order.
    pub fn set_messages<B: Into<Vec<u8>>>(
        &self,
        user: &str,
        messages: impl IntoIterator<Item = B>,
    ) -> Result<Vec<String>, ServerError> {
        let mut inner = self.lock();
        inner.account_mut(user)?;
        let fresh: Vec<Message> = messages
            .into_iter()
            .map(|b| inner.new_message(b.into()))
            .collect();
        let uids = fresh.iter().map(|m| m.uid.clone()).collect();
        inner.account_mut(user)?.messages = fresh;
        Ok(uids)
    }

    /// A snapshot of the maildrop, or `None` for an unknown user.
    pub fn messages(&self, user: &str) -> Option<Vec<Message>> {
        let inner = self.lock();
        inner
            .accounts
            .iter()
            .find(|a| a.user == user)
            .map(|a| a.messages.clone())
    }

    /// A snapshot of the account, or `None` for an unknown user.
    pub fn account(&self, user: &str) -> Option<Account> {
        let inner = self.lock();
        inner.accounts.iter().find(|a| a.user == user).cloned()
    }

    pub fn account_password(&self, user: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .accounts
            .iter()
            .find(|a| a.user == user)
            .map(|a| a.password.clone())
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

    /// Removes the messages with these UIDs; UIDs already gone (removed by a
    /// concurrent session) are ignored. Returns how many were removed.
    pub fn delete_messages(&self, user: &str, uids: &[&str]) -> usize {
        let mut inner = self.lock();
        let Ok(account) = inner.account_mut(user) else {
            return 0;
        };
        let before = account.messages.len();
        account.messages.retain(|m| !uids.contains(&m.uid.as_str()));
        before - account.messages.len()
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
}
