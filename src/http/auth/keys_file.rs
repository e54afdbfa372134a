//! The `--api-keys-file`: TOML, one `[[key]]` table per key.
//!
//! ```toml
//! [[key]]
//! id = "inhaler-app"        # 1 to 64 of [A-Za-z0-9._-]; logged, stored as `source`
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! rate_per_s = 50           # optional: this key's own token bucket
//! burst = 100               # optional
//! ```
//!
//! The file holds each key's SHA-256 digest (hex), never the key: a copy
//! of the file, a backup or a log of it gives no one a key. Everything is
//! checked before any of it is used; a file with one bad entry is refused
//! whole, so a reload never half-applies (see [`super::Auth::reload`]).

use std::path::Path;

use super::{AuthError, KeyId, KeyLimit};
use crate::limits::{API_KEYS_MAX, KEY_BURST_MAX, KEY_RATE_PER_S_MAX, KEYS_FILE_BYTES_MAX};

/// One key as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's name: what logs, metrics and stored documents show.
    pub id: KeyId,
    /// SHA-256 of the key's bytes.
    pub digest: [u8; 32],
    /// This key's own rate, if the file sets one; else the defaults.
    pub limit: Option<KeyLimit>,
}

/// Reads and checks the keys file at `path`.
pub fn read(path: &Path) -> Result<Vec<Entry>, AuthError> {
    let err = |reason: String| AuthError::KeysFile {
        path: path.display().to_string(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if size > KEYS_FILE_BYTES_MAX {
        return Err(err(format!(
            "{size} bytes, more than {KEYS_FILE_BYTES_MAX}"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

/// Parses the text of a keys file. The reason of an error never quotes a
/// value: a key pasted into the file by mistake must not reach a log.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not TOML: {}", e.message()))?;
    let mut entries = Vec::new();
    for (name, value) in &table {
        if name != "key" {
            return Err(format!("unknown table '{}'", printable(name)));
        }
        let list = value.as_array().ok_or("'key' must be [[key]] tables")?;
        if list.len() > API_KEYS_MAX {
            return Err(format!("{} keys, more than {API_KEYS_MAX}", list.len()));
        }
        for (i, item) in list.iter().enumerate() {
            let t = item.as_table().ok_or("'key' must be [[key]] tables")?;
            entries.push(entry(t).map_err(|why| format!("key {}: {why}", i + 1))?);
        }
    }
    for (i, e) in entries.iter().enumerate() {
        if entries[..i].iter().any(|o| o.id == e.id) {
            return Err(format!("key {}: id '{}' is used twice", i + 1, e.id));
        }
        if entries[..i].iter().any(|o| o.digest == e.digest) {
            return Err(format!("key {}: its sha256 is used twice", i + 1));
        }
    }
    Ok(entries)
}

fn entry(t: &toml::Table) -> Result<Entry, String> {
    for k in t.keys() {
        if !["id", "sha256", "rate_per_s", "burst"].contains(&k.as_str()) {
            return Err(format!("unknown field '{}'", printable(k)));
        }
    }
    let id = t
        .get("id")
        .and_then(|v| v.as_str())
        .ok_or("'id' (a string) is missing")?;
    let id = KeyId::new(id).ok_or_else(KeyId::rule)?;
    let hex = t
        .get("sha256")
        .and_then(|v| v.as_str())
        .ok_or("'sha256' (a string) is missing")?;
    let digest = digest_hex(hex).ok_or("'sha256' must be 64 hexadecimal digits")?;
    let number = |field: &str, max: u64| -> Result<Option<u64>, String> {
        match t.get(field) {
            None => Ok(None),
            Some(v) => match v.as_integer() {
                Some(n) if (1..=max as i64).contains(&n) => Ok(Some(n as u64)),
                _ => Err(format!("'{field}' must be a whole number from 1 to {max}")),
            },
        }
    };
    let rate = number("rate_per_s", KEY_RATE_PER_S_MAX)?;
    let burst = number("burst", KEY_BURST_MAX)?;
    let limit = match (rate, burst) {
        (None, None) => None,
        (Some(rate_per_s), Some(burst)) => Some(KeyLimit { rate_per_s, burst }),
        _ => return Err("'rate_per_s' and 'burst' go together".into()),
    };
    Ok(Entry { id, digest, limit })
}

/// 64 hex digits (either case) as 32 bytes.
pub fn digest_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// A name from the file as an error may quote it: printable ASCII only,
/// short.
fn printable(s: &str) -> String {
    s.chars()
        .take(32)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_file_of_keys_parses_with_and_without_limits() {
        let text = format!(
            "[[key]]\nid = \"app-1\"\nsha256 = \"{DIGEST}\"\n\n[[key]]\nid = \"fleet.B_2\"\nsha256 = \"{}\"\nrate_per_s = 5\nburst = 10\n",
            DIGEST.to_uppercase().replace('9', "8")
        );
        let keys = parse(&text).expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].id.as_str(), "app-1");
        assert_eq!(keys[0].digest[0], 0x9f);
        assert_eq!(keys[0].limit, None);
        assert_eq!(
            keys[1].limit,
            Some(KeyLimit {
                rate_per_s: 5,
                burst: 10
            })
        );
        assert_eq!(parse(""), Ok(vec![]));
    }

    #[test]
    fn bad_entries_are_refused_whole_and_never_quote_a_value() {
        let key = |body: &str| format!("[[key]]\n{body}\n");
        let ok = format!("id = \"a\"\nsha256 = \"{DIGEST}\"");
        for (text, why) in [
            (key(&format!("id = \"a b\"\nsha256 = \"{DIGEST}\"")), "id"),
            (key(&format!("id = \"\"\nsha256 = \"{DIGEST}\"")), "id"),
            (
                key(&format!(
                    "id = \"{}\"\nsha256 = \"{DIGEST}\"",
                    "x".repeat(65)
                )),
                "id",
            ),
            (key("id = \"a\"\nsha256 = \"secret-key-pasted\""), "sha256"),
            (key("id = \"a\""), "sha256"),
            (key(&format!("{ok}\nrate_per_s = 5")), "together"),
            (
                key(&format!("{ok}\nrate_per_s = 0\nburst = 1")),
                "rate_per_s",
            ),
            (key(&format!("{ok}\nkey = \"x\"")), "unknown field"),
            (format!("{}{}", key(&ok), key(&ok)), "twice"),
            ("[other]\n".to_owned(), "unknown table"),
            ("key = 1\n".to_owned(), "[[key]]"),
            ("[[key]\n".to_owned(), "not TOML"),
        ] {
            let e = parse(&text).expect_err(&text);
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains("secret-key-pasted"), "{e}");
        }
    }
}
