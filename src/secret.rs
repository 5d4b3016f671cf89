//! Secrets as a type: a password can be used, never printed.
//!
//! `Secret` has no `Display` and a `Debug` that prints nothing useful, so it
//! cannot leak through `{}` or `{:?}`. Text that may contain a secret anyway
//! (a transcript line, a server's echo) goes through one [`Redactor`].

use std::fmt;
use std::sync::Arc;

/// A secret value (password, digest, AUTH blob). Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The only way to get at the value: grep for `expose` to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

/// What replaces a secret in every output.
pub const MASK: &str = "********";

/// Replaces every known secret value in text with [`MASK`].
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a value; empty values and very short ones (which would mask ordinary text) are ignored.
    pub fn add(&mut self, secret: &Secret) {
        if secret.expose().len() >= 3 && !self.secrets.contains(secret) {
            self.secrets.push(secret.clone());
            // Longest first, so a secret containing another is masked whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.expose()) {
                out = out.replace(s.expose(), MASK);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn redactor_masks_all_occurrences() {
        let mut r = Redactor::new();
        r.add(&Secret::new("hunter2"));
        r.add(&Secret::new("hunter2-long"));
        assert_eq!(r.redact("PASS hunter2-long hunter2"), "PASS ******** ********");
    }
}
