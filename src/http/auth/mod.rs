//! API keys: who may write usages. It sits on the `http` step, on the
//! request head: a usage POST is checked here before its body is parsed
//! or staged, and the key id it proves travels with the usage into the
//! WAL (its `source`).
//!
//! # What it owns
//! - The keys loaded from `--api-keys-file` (`keys_file`: the format and
//!   its checks), swapped whole on SIGHUP ([`Auth::reload`]).
//! - The check of `Authorization: Bearer <key>` ([`Auth::check`]) and its
//!   refusals ([`AuthError`], which [`super::ApiError::status`] maps).
//! - [`KeyId`], the one definition of a key's name.
//!
//! # Why digests, and why this comparison
//! The file holds SHA-256 digests, never keys: it can be backed up, copied
//! into a config repository or read by a support engineer without giving
//! anyone a key. Keys are 256 random bits (`busyapi-admin keys new`), so a
//! plain hash suffices; a slow password hash would only cost every request.
//!
//! A presented key is hashed once, and its digest compared with *every*
//! loaded digest with [`subtle`]'s constant-time equality, folding the
//! results without an early exit. The time taken then depends on the number
//! of keys only, not on which key matched nor on how many leading bytes of
//! a digest agree; and since what is compared is a digest, even a leak of
//! the comparison would reveal nothing of a key. With at most
//! [`API_KEYS_MAX`] keys the scan is a few microseconds at worst.
//!
//! # Modes
//! `--auth required` (the default when a keys file is given) refuses a
//! usage without a known key with 401; `--auth off` (the default without
//! one) takes usages from anyone, as before keys existed, and says so at
//! start in one warning line. `/healthz` and `/readyz`, and the read-only
//! operational paths, never ask for a key.
//!
//! # Reload
//! Connections keep a [`View`]: the key set they last saw and its
//! generation. Each check compares that generation with the current one (a
//! read of an atomic that changes only on SIGHUP, so no core writes the
//! line it shares) and takes the new set when it moved: a reload reaches
//! every open connection at its next request, and drops none.

mod keys_file;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub use keys_file::{Entry, digest_hex, parse};

use crate::config::Config;
use crate::limits::{API_KEY_BYTES_MAX, API_KEYS_MAX, KEY_ID_BYTES_MAX};

/// Whether usages need a key (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A usage POST needs `Authorization: Bearer <key>` with a key of
    /// `--api-keys-file`.
    Required,
    /// Anyone who can reach the port may write usages.
    Off,
}

/// Why a request was refused, or a keys file was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: no `Authorization` header.
    #[error("this endpoint needs Authorization: Bearer <API key>")]
    Missing,
    /// 401: an `Authorization` header of another scheme (`Basic`...).
    #[error("only the Bearer scheme is accepted")]
    WrongScheme,
    /// 401: a bearer token that is no loaded key (unknown, revoked, or
    /// malformed).
    #[error("unknown API key")]
    UnknownKey,
    /// The keys file could not be read, or did not pass its checks; never
    /// a request's error. The reason never quotes the file's values.
    #[error("--api-keys-file {path}: {reason}")]
    KeysFile {
        /// The file as given.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// `WWW-Authenticate` when no bearer credentials came (RFC 6750 §3).
pub const CHALLENGE: &str = "Bearer realm=\"busyapi\"";
/// `WWW-Authenticate` for a token that is no key (RFC 6750 §3.1).
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"busyapi\", error=\"invalid_token\"";

impl AuthError {
    /// The `WWW-Authenticate` challenge of a 401.
    pub fn challenge(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::WrongScheme => CHALLENGE,
            _ => CHALLENGE_INVALID,
        }
    }
}

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

/// A key's own token bucket, as its file entry sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimit {
    /// Tokens added per second.
    pub rate_per_s: u64,
    /// Tokens the bucket holds at most.
    pub burst: u64,
}

/// One loaded key set; swapped whole on reload, never changed in place.
#[derive(Debug, Default)]
pub struct Keys {
    entries: Vec<Entry>,
}

impl Keys {
    /// The entry whose digest is `digest`, found in constant time over the
    /// whole set (see the module doc).
    fn find(&self, digest: &[u8; 32]) -> Option<&Entry> {
        debug_assert!(self.entries.len() <= API_KEYS_MAX);
        let mut index = 0u64;
        let mut found = subtle::Choice::from(0);
        for (i, e) in self.entries.iter().enumerate() {
            let equal = e.digest.ct_eq(digest);
            index.conditional_assign(&(i as u64), equal);
            found |= equal;
        }
        bool::from(found).then(|| &self.entries[index as usize])
    }

    /// Keys in the set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// A connection's copy of the key set, refreshed when a reload moved the
/// generation.
pub struct View {
    generation: u64,
    keys: Arc<Keys>,
}

/// The key check and the loaded keys, shared by every connection.
pub struct Auth {
    /// Whether usages need a key.
    mode: AuthMode,
    /// The keys file, re-read on reload; `None` without `--api-keys-file`.
    path: Option<PathBuf>,
    /// Moves on every successful reload; read on every check.
    generation: AtomicU64,
    /// The current set; locked only by a reload and by a connection whose
    /// view is out of date.
    current: Mutex<Arc<Keys>>,
}

impl Auth {
    /// The mode and keys `config` asks for, the keys file read and checked.
    /// Logs what it loaded, or one warning line when usages need no key.
    pub fn start(config: &Config) -> Result<Auth, AuthError> {
        let path = config.api_keys_file.clone();
        let keys = match &path {
            Some(p) => keys_file::read(p)?,
            None => Vec::new(),
        };
        let mode = config.auth_mode();
        match (mode, &path) {
            (AuthMode::Required, Some(p)) => log::info!(
                "auth required: {} API key(s) loaded from {}",
                keys.len(),
                p.display()
            ),
            (AuthMode::Off, _) => log::warn!(
                "AUTH IS OFF: anyone who can reach {} can write usages; give --api-keys-file to require API keys",
                config.listen
            ),
            // `Config::check_relations` refuses `required` without a file.
            (AuthMode::Required, None) => {}
        }
        Ok(Auth::new(mode, path, keys))
    }

    /// An `Auth` with these keys (tests and `start`).
    pub fn new(mode: AuthMode, path: Option<PathBuf>, keys: Vec<Entry>) -> Auth {
        Auth {
            mode,
            path,
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Keys { entries: keys })),
        }
    }

    /// Re-reads the keys file (on SIGHUP). A file that does not pass keeps
    /// the keys loaded before, and the log says why.
    pub fn reload(&self) {
        let Some(path) = &self.path else {
            log::info!("SIGHUP: no --api-keys-file to reload");
            return;
        };
        match keys_file::read(path) {
            Ok(keys) => {
                let n = keys.len();
                *self.current.lock() = Arc::new(Keys { entries: keys });
                self.generation.fetch_add(1, Ordering::Release);
                log::info!("reloaded {n} API key(s) from {}", path.display());
            }
            Err(e) => log::warn!(
                "{e}; keeping the {} API key(s) loaded before",
                self.current.lock().len()
            ),
        }
    }

    /// The current key set, for a new connection.
    pub fn view(&self) -> View {
        let generation = self.generation.load(Ordering::Acquire);
        View {
            generation,
            keys: self.current.lock().clone(),
        }
    }

    /// The key id that `authorization` (the header's value) proves, or
    /// `None` when auth is off.
    pub fn check(
        &self,
        view: &mut View,
        authorization: Option<&[u8]>,
    ) -> Result<Option<KeyId>, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(None);
        }
        if view.generation != self.generation.load(Ordering::Acquire) {
            *view = self.view();
        }
        let token = bearer(authorization.ok_or(AuthError::Missing)?)?;
        if token.is_empty() || token.len() > API_KEY_BYTES_MAX {
            return Err(AuthError::UnknownKey);
        }
        let digest: [u8; 32] = Sha256::digest(token).into();
        match view.keys.find(&digest) {
            Some(e) => Ok(Some(e.id)),
            None => Err(AuthError::UnknownKey),
        }
    }

    /// The keys file, if one was given.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The token of a `Bearer` credential (RFC 6750 §2.1: the scheme is
/// case-insensitive, then one or more spaces).
fn bearer(value: &[u8]) -> Result<&[u8], AuthError> {
    let scheme_end = value.iter().position(|&c| c == b' ').unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Err(if value.is_empty() {
            AuthError::Missing
        } else {
            AuthError::WrongScheme
        });
    }
    let token = value[scheme_end..].trim_ascii();
    Ok(token)
}

/// The SHA-256 digest of `key`, in lowercase hex: what a keys file holds.
pub fn digest_of(key: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(key).into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(keys: &[(&str, &str)]) -> Auth {
        let entries = keys
            .iter()
            .map(|(id, key)| Entry {
                id: KeyId::new(id).expect("id"),
                digest: digest_hex(&digest_of(key.as_bytes())).expect("hex"),
                limit: None,
            })
            .collect();
        Auth::new(AuthMode::Required, None, entries)
    }

    #[test]
    fn a_known_bearer_key_proves_its_id_and_anything_else_is_refused() {
        let a = auth(&[("one", "key-1"), ("two", "key-2")]);
        let mut v = a.view();
        let check = |v: &mut View, h: Option<&[u8]>| a.check(v, h);
        assert_eq!(
            check(&mut v, Some(b"Bearer key-2")).map(|k| k.map(|k| k.to_string())),
            Ok(Some("two".into()))
        );
        assert!(check(&mut v, Some(b"bearer   key-1")).is_ok());
        assert_eq!(check(&mut v, None), Err(AuthError::Missing));
        assert_eq!(check(&mut v, Some(b"")), Err(AuthError::Missing));
        assert_eq!(
            check(&mut v, Some(b"Basic a2V5LTE=")),
            Err(AuthError::WrongScheme)
        );
        assert_eq!(
            check(&mut v, Some(b"Bearerkey-1")),
            Err(AuthError::WrongScheme)
        );
        for bad in [&b"Bearer key-3"[..], b"Bearer ", b"Bearer key-1x"] {
            assert_eq!(check(&mut v, Some(bad)), Err(AuthError::UnknownKey));
        }
        let long = [b"Bearer ".as_slice(), &[b'k'; API_KEY_BYTES_MAX + 1]].concat();
        assert_eq!(check(&mut v, Some(&long)), Err(AuthError::UnknownKey));
    }

    #[test]
    fn with_auth_off_every_request_passes_without_a_key_id() {
        let a = Auth::new(AuthMode::Off, None, Vec::new());
        assert_eq!(a.check(&mut a.view(), None), Ok(None));
    }

    #[test]
    fn key_ids_take_only_their_charset_within_their_bound() {
        assert!(KeyId::new("app-1.fleet_B").is_some());
        for bad in ["", "a b", "é", "a/b", &"x".repeat(KEY_ID_BYTES_MAX + 1)] {
            assert!(KeyId::new(bad).is_none(), "{bad:?}");
        }
        assert!(KeyId::new(&"x".repeat(KEY_ID_BYTES_MAX)).is_some());
        assert!(KeyId::rule().contains(&KEY_ID_BYTES_MAX.to_string()));
    }

    #[test]
    fn a_digest_is_sha_256_in_hex() {
        assert_eq!(
            digest_of(b"test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
