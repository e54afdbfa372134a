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
//! - Each key's token bucket (`bucket`: one atomic per key) and counters:
//!   [`Auth::admit`] takes a count, one for a single POST, so a batch can
//!   take its records; `--key-rate-per-s`/`--key-burst` for keys that set
//!   no limit of their own.
//! - The failed-authentication budget of each client address
//!   (`failures`: a fixed table), past which a failure is a 429 and a
//!   closed connection.
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

mod bucket;
mod failures;
mod key_id;
mod keys_file;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bucket::{Bucket, retry_after_secs};
use failures::Failures;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub use key_id::KeyId;
pub use keys_file::{Entry, digest_hex, parse};

use crate::config::Config;
use crate::limits::{API_KEY_BYTES_MAX, API_KEYS_MAX};

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
    /// 429: the key's token bucket is empty; nothing was written.
    #[error("this API key is over its rate limit; retry after {retry_after_secs} s")]
    RateLimited {
        /// Whole seconds until the usage would be taken, rounded up.
        retry_after_secs: u64,
    },
    /// 429: this address failed to authenticate too often; the connection
    /// is closed.
    #[error("too many failed authentications from this address; retry after {retry_after_secs} s")]
    TooManyFailures {
        /// Whole seconds until a failure is answered 401 again.
        retry_after_secs: u64,
    },
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
    /// `Retry-After` of a 429.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AuthError::RateLimited { retry_after_secs }
            | AuthError::TooManyFailures { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Whether the request's credentials failed (a 401), which the
    /// address's failure budget counts.
    fn is_failure(&self) -> bool {
        matches!(
            self,
            AuthError::Missing | AuthError::WrongScheme | AuthError::UnknownKey
        )
    }

    /// The `WWW-Authenticate` challenge of a 401.
    pub fn challenge(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::WrongScheme => CHALLENGE,
            _ => CHALLENGE_INVALID,
        }
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

/// What a loaded key counts and limits; kept across a reload for a key
/// whose id and limit stay.
#[derive(Debug)]
struct KeyState {
    /// The key's token bucket.
    bucket: Bucket,
    /// Usage requests this key authenticated (`busyapi_key_requests_total`).
    requests: AtomicU64,
    /// Of those, refused 429 by the bucket (`busyapi_key_rate_limited_total`).
    limited: AtomicU64,
}

/// A key's counters as `/metrics` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCounts {
    /// The key's id: the `key` label.
    pub id: KeyId,
    /// Usage requests it authenticated.
    pub requests: u64,
    /// Of those, refused by its rate limit.
    pub limited: u64,
}

/// A key a request proved: its id and where its state is in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The key's id, stored as the usage's source.
    pub id: KeyId,
    index: usize,
}

/// One loaded key set; swapped whole on reload, never changed in place.
#[derive(Debug, Default)]
pub struct Keys {
    entries: Vec<Entry>,
    /// One per entry, in the same order.
    states: Vec<Arc<KeyState>>,
}

impl Keys {
    /// `entries` with their buckets: kept from `old` for a key whose id and
    /// limit are the same, else new and full.
    fn new(entries: Vec<Entry>, default: KeyLimit, old: &Keys) -> Keys {
        let states = entries
            .iter()
            .map(|e| {
                let limit = e.limit.unwrap_or(default);
                let kept = old
                    .entries
                    .iter()
                    .zip(&old.states)
                    .find(|(o, s)| o.id == e.id && s.bucket.limit == limit);
                match kept {
                    Some((_, state)) => state.clone(),
                    None => Arc::new(KeyState {
                        bucket: Bucket::new(limit),
                        requests: AtomicU64::new(0),
                        limited: AtomicU64::new(0),
                    }),
                }
            })
            .collect();
        Keys { entries, states }
    }

    /// The index of the entry whose digest is `digest`, found in constant
    /// time over the whole set (see the module doc).
    fn find(&self, digest: &[u8; 32]) -> Option<usize> {
        debug_assert!(self.entries.len() <= API_KEYS_MAX);
        let mut index = 0u64;
        let mut found = subtle::Choice::from(0);
        for (i, e) in self.entries.iter().enumerate() {
            let equal = e.digest.ct_eq(digest);
            index.conditional_assign(&(i as u64), equal);
            found |= equal;
        }
        bool::from(found).then_some(index as usize)
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
    /// The limit of keys whose entry sets none (`--key-rate-per-s`,
    /// `--key-burst`).
    default_limit: KeyLimit,
    /// The buckets' clock starts here.
    epoch: Instant,
    /// Failed authentications per client address.
    failures: Failures,
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
                "AUTH IS OFF: anyone who can reach {} can write usages; give --api-keys-file (and --auth required) to require API keys",
                config.listen
            ),
            // `Config::check_relations` refuses `required` without a file.
            (AuthMode::Required, None) => {}
        }
        let default_limit = KeyLimit {
            rate_per_s: config.key_rate_per_s,
            burst: config.key_burst,
        };
        Ok(Auth::new(mode, path, keys, default_limit))
    }

    /// An `Auth` with these keys (tests and `start`).
    pub fn new(
        mode: AuthMode,
        path: Option<PathBuf>,
        keys: Vec<Entry>,
        default_limit: KeyLimit,
    ) -> Auth {
        Auth {
            mode,
            path,
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Keys::new(keys, default_limit, &Keys::default()))),
            default_limit,
            epoch: Instant::now(),
            failures: Failures::default(),
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
                let mut current = self.current.lock();
                *current = Arc::new(Keys::new(keys, self.default_limit, &current));
                drop(current);
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

    /// The key that `authorization` (the header's value) proves, or `None`
    /// when auth is off. A failure from `peer` past its address's budget
    /// is [`AuthError::TooManyFailures`] instead of a 401.
    /// `peer` is asked only on a failure (it is a system call).
    pub fn check(
        &self,
        view: &mut View,
        authorization: Option<&[u8]>,
        peer: impl FnOnce() -> Option<IpAddr>,
    ) -> Result<Option<Verified>, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(None);
        }
        if view.generation != self.generation.load(Ordering::Acquire) {
            *view = self.view();
        }
        let verdict = find(&view.keys, authorization);
        match verdict {
            Err(e) if e.is_failure() => match peer() {
                Some(ip) => match self.failures.failed(ip, self.now_ns()) {
                    Ok(()) => Err(e),
                    Err(wait_ns) => Err(AuthError::TooManyFailures {
                        retry_after_secs: retry_after_secs(wait_ns),
                    }),
                },
                None => Err(e),
            },
            verdict => verdict.map(Some),
        }
    }

    /// Takes `count` usages from the bucket of the key `who` (one for a
    /// single POST; a batch takes its records), counting them for
    /// `/metrics`; over the limit, [`AuthError::RateLimited`] and nothing
    /// is taken.
    pub fn admit(&self, view: &View, who: &Verified, count: u64) -> Result<(), AuthError> {
        let state = &view.keys.states[who.index];
        state.requests.fetch_add(1, Ordering::Relaxed);
        state.bucket.take(count, self.now_ns()).map_err(|wait_ns| {
            state.limited.fetch_add(1, Ordering::Relaxed);
            AuthError::RateLimited {
                retry_after_secs: retry_after_secs(wait_ns),
            }
        })
    }

    /// Every loaded key's counters, in file order.
    pub fn counts(&self) -> Vec<KeyCounts> {
        let keys = self.current.lock().clone();
        keys.entries
            .iter()
            .zip(&keys.states)
            .map(|(e, s)| KeyCounts {
                id: e.id,
                requests: s.requests.load(Ordering::Relaxed),
                limited: s.limited.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The keys file, if one was given.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The loaded key `authorization` names.
fn find(keys: &Keys, authorization: Option<&[u8]>) -> Result<Verified, AuthError> {
    let token = bearer(authorization.ok_or(AuthError::Missing)?)?;
    if token.is_empty() || token.len() > API_KEY_BYTES_MAX {
        return Err(AuthError::UnknownKey);
    }
    let digest: [u8; 32] = Sha256::digest(token).into();
    let index = keys.find(&digest).ok_or(AuthError::UnknownKey)?;
    Ok(Verified {
        id: keys.entries[index].id,
        index,
    })
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
mod tests;
