//! `busyapi-admin keys new --id NAME`: a fresh API key and its entry for
//! the `--api-keys-file`.
//!
//! The key is [`API_KEY_RANDOM_BYTES`] bytes from the operating system's
//! random source (`getrandom`), in base64url without padding, so it goes
//! into a header as it is. Only its SHA-256 digest goes into the file:
//! the key is printed once, here, and stored nowhere.
//!
//! Output: the key alone on the first line of stdout, a blank line, then
//! the `[[key]]` table to append to the file. What to do with them goes to
//! stderr, so stdout can be captured as it is.

use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use busyapi::http::auth::{KeyId, digest_of};
use busyapi::limits::API_KEY_RANDOM_BYTES;

/// `busyapi-admin keys ...`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Print a fresh random API key and the [[key]] entry for
    /// --api-keys-file (which holds only its SHA-256).
    New {
        /// The key's id: 1 to 64 of A-Z a-z 0-9 . _ - (logged, and stored as
        /// each usage's source).
        #[arg(long)]
        id: String,
    },
}

/// What a `keys` command prints: `stdout` as it is, `advice` for stderr.
/// `main.rs` does the printing.
pub struct Printed {
    /// The key, a blank line, and its `[[key]]` table.
    pub stdout: String,
    /// What to do with them.
    pub advice: &'static str,
}

/// Why a `keys` command printed no key, and its exit status.
pub struct Failed {
    /// The message for stderr.
    pub message: String,
    /// 2 for a bad argument, 1 otherwise.
    pub code: ExitCode,
}

/// What the operator does with a new key.
const ADVICE: &str = "The first line is the key: give it to the client (Authorization: Bearer <key>); it is shown only now.\n\
     Append the [[key]] table to the --api-keys-file, then send busyapi SIGHUP.";

/// Runs a `keys` command.
pub fn run(cmd: &KeysCmd) -> Result<Printed, Failed> {
    let KeysCmd::New { id } = cmd;
    let Some(id) = KeyId::new(id) else {
        return Err(Failed {
            message: format!("error: --id: {}", KeyId::rule()),
            code: ExitCode::from(2),
        });
    };
    let mut random = [0u8; API_KEY_RANDOM_BYTES];
    if let Err(e) = getrandom::fill(&mut random) {
        return Err(Failed {
            message: format!("error: the system's random source failed: {e}"),
            code: ExitCode::FAILURE,
        });
    }
    let key = URL_SAFE_NO_PAD.encode(random);
    Ok(Printed {
        stdout: format!("{key}\n\n{}\n", entry(id, &key)),
        advice: ADVICE,
    })
}

/// The `[[key]]` table of `key` under `id`.
fn entry(id: KeyId, key: &str) -> String {
    format!(
        "[[key]]\nid = \"{id}\"\nsha256 = \"{}\"",
        digest_of(key.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_parses_as_a_keys_file_holding_the_key_s_digest() {
        let id = KeyId::new("app-1").expect("id");
        let keys = busyapi::http::auth::parse(&entry(id, "k")).expect("a keys file");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].id, id);
        assert_eq!(
            busyapi::http::auth::digest_hex(&digest_of(b"k")),
            Some(keys[0].digest)
        );
    }
}
