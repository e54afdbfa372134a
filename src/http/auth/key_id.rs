//! [`KeyId`]: the one definition of an API key's name.

use std::fmt;

use crate::limits::KEY_ID_BYTES_MAX;

/// A key's name: 1 to [`KEY_ID_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`, so it
/// is safe in a log line, a metric label and a stored document. Fixed size
/// and `Copy`: a request carries it to the WAL without an allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId {
    bytes: [u8; KEY_ID_BYTES_MAX],
    len: u8,
}

impl KeyId {
    /// `s` as a key id, if it follows the rule ([`KeyId::rule`]).
    pub fn new(s: &str) -> Option<KeyId> {
        let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
        if s.is_empty() || s.len() > KEY_ID_BYTES_MAX || !s.bytes().all(ok) {
            return None;
        }
        let mut bytes = [0; KEY_ID_BYTES_MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(KeyId {
            bytes,
            len: s.len() as u8,
        })
    }

    /// What a key id must be, worded for an error.
    pub fn rule() -> String {
        format!("'id' must be 1 to {KEY_ID_BYTES_MAX} characters of A-Z a-z 0-9 . _ -")
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Checked ASCII at construction.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}
