//! API key secrets: held in memory only, never printed, named by a fingerprint.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// An API key. `Debug` and `Display` show only its fingerprint, so a key that
/// slips into a log line or error message does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wrap a key's value (as read from its variable or file).
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        ApiKey(value.into())
    }

    /// The key itself, for the one place that needs it: the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// First 8 hex digits of the key's SHA-256: enough for an operator to tell
    /// keys apart, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..4])
    }

    /// Replace every occurrence of the key in `text` (provider error bodies can
    /// echo the key back).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 || !text.contains(&*self.0) {
            return text.to_owned();
        }
        text.replace(&*self.0, &format!("[key {}]", self.fingerprint()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[key {}]", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_key() {
        let key = ApiKey::new("sk-very-secret-value");
        assert!(!format!("{key:?}").contains("secret"));
        assert!(!format!("{key}").contains("secret"));
        assert_eq!(key.fingerprint().len(), 8);
    }

    #[test]
    fn redact_removes_every_occurrence() {
        let key = ApiKey::new("AIzaFAKE123");
        let text = "API key AIzaFAKE123 not valid (AIzaFAKE123)";
        let redacted = key.redact(text);
        assert!(!redacted.contains("AIzaFAKE123"));
        assert!(redacted.contains(&key.fingerprint()));
    }
}
