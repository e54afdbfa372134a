//! API keys: every refusal is a 401 with a Bearer challenge and writes
//! nothing; a known key's id is stored with its usage; SIGHUP revokes and
//! adds keys on open connections; a broken file keeps the old keys; keys
//! made by `busyapi-admin keys new` work; no key ever reaches the log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mongodb::bson::{Document, doc};

use super::*;
use common::{shared_mongo, wait_for};

const KEY_A: &str = "key-a-0123456789abcdefghijklmnopqrstuvwxyz";
const KEY_B: &str = "key-b-0123456789abcdefghijklmnopqrstuvwxyz";
const CHALLENGE: &str = r#"Bearer realm="busyapi""#;
const CHALLENGE_INVALID: &str = r#"Bearer realm="busyapi", error="invalid_token""#;

/// The `[[key]]` table of `key` under `id`, as `busyapi-admin keys new`
/// prints it.
pub(crate) fn entry(id: &str, key: &str) -> String {
    format!(
        "[[key]]\nid = \"{id}\"\nsha256 = \"{}\"\n",
        busyapi::http::auth::digest_of(key.as_bytes())
    )
}

/// A keys file in a directory of its own.
pub(crate) fn keys_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    fs::write(&path, text).expect("write the keys file");
    (dir, path)
}

/// With keys required the public address serves no `/api/stats` or
/// `/metrics`: the tests read them on an admin address of their own.
const ADMIN: &str = "--admin-listen 127.0.0.1:0";

/// A server that requires the keys of `path`.
pub(crate) fn with_keys(path: &Path) -> Opts {
    Opts::default().arg(&format!("--api-keys-file {} {ADMIN}", path.display()))
}

/// A usage POST with `authorization` as its `Authorization` value, if any.
pub(crate) fn post_with(authorization: Option<&str>, body: &str) -> Vec<u8> {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "POST /api/usages HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(crate) fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn assert_refused(r: &Response, challenge: &str) {
    assert_error(r, 401, "");
    assert_eq!(
        r.header("www-authenticate"),
        Some(challenge),
        "{}",
        r.text()
    );
}

#[test]
fn no_key_a_wrong_scheme_and_an_unknown_key_get_401_with_a_challenge_and_nothing_is_written() {
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    let s = Server::start(with_keys(&path));
    let mut c = s.connect();
    for (authorization, challenge, needle) in [
        (None, CHALLENGE, "Authorization: Bearer"),
        (Some("Basic YTpi"), CHALLENGE, "Bearer"),
        (
            Some("Bearer not-a-key"),
            CHALLENGE_INVALID,
            "unknown API key",
        ),
        (Some("Bearer"), CHALLENGE_INVALID, "unknown API key"),
    ] {
        c.send(&post_with(authorization, USAGE));
        let r = c.response();
        assert_refused(&r, challenge);
        assert!(
            r.error().contains(needle),
            "{authorization:?}: {}",
            r.text()
        );
    }
    assert_eq!(s.written(), (0, 0), "nothing was written");
    let counted = r#"busyapi_http_requests_total{route="/api/usages",status="401"}"#;
    assert_eq!(
        Scrape::of(&s).value(counted),
        4.0,
        "401s have their own label"
    );
    // The refused bodies were read whole: the same connection goes on.
    c.send(&post_with(Some(&bearer(KEY_A)), USAGE));
    assert_eq!(c.response().status, 201);
    assert_eq!(s.written().0, 1);
}

#[test]
fn a_refusal_before_100_continue_closes_without_waiting_for_the_body() {
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    let s = Server::start(with_keys(&path));
    let mut c = s.connect();
    c.send(
        format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            USAGE.len()
        )
        .as_bytes(),
    );
    assert_refused(&c.response(), CHALLENGE);
    assert!(
        c.closed(),
        "the body's framing was never read: the connection ends"
    );
    assert_eq!(s.written(), (0, 0));
}

#[test]
fn health_and_readiness_never_need_a_key() {
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    let s = Server::start(with_keys(&path));
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);
}

#[test]
fn with_keys_required_the_public_address_serves_only_usages_and_the_probes() {
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    // No admin address: the operational paths are served nowhere.
    let s = Server::start(Opts::default().arg(&format!("--api-keys-file {}", path.display())));
    for path in ["/metrics", "/api/stats", "/", "/openapi.json"] {
        assert_eq!(s.get(path).status, 404, "{path} on the public address");
    }
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);
    let mut c = s.connect();
    c.send(&post_with(Some(&bearer(KEY_A)), USAGE));
    assert_eq!(c.response().status, 201);
    assert!(
        s.logs().contains("--admin-listen is not set"),
        "no warning that the operational paths are not served:\n{}",
        s.logs()
    );
}

#[test]
fn a_valid_key_gets_201_and_its_id_is_stored_as_the_usage_s_source() {
    let mongo = shared_mongo();
    let db = "http_contract_auth_source";
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    let s = Server::start(with_keys(&path).mongo(mongo.uri(), db));
    let mut c = s.connect();
    c.send(&post_with(Some(&bearer(KEY_A)), USAGE));
    let r = c.response();
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for(Duration::from_secs(30), "the usage in MongoDB", || {
        mongo.count(db) == 1
    });
    let stored = mongo
        .client()
        .database(db)
        .collection::<Document>("usages")
        .find_one(doc! {"_id": r.id() as i64})
        .run()
        .expect("find")
        .expect("stored");
    assert_eq!(stored.get_str("source"), Ok("app-a"), "{stored}");
}

#[test]
fn sighup_revokes_a_removed_key_and_admits_an_added_one_on_the_same_connection() {
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    let s = Server::start(with_keys(&path));
    let mut c = s.connect();
    c.send(&post_with(Some(&bearer(KEY_A)), USAGE));
    assert_eq!(c.response().status, 201);
    fs::write(&path, entry("app-b", KEY_B)).expect("rewrite the keys file");
    s.signal(libc::SIGHUP);
    s.wait_for_log("reloaded 1 API key(s)");
    let written = s.written();
    c.send(&post_with(Some(&bearer(KEY_A)), USAGE));
    assert_refused(&c.response(), CHALLENGE_INVALID);
    assert_eq!(s.written(), written, "the revoked key wrote nothing");
    c.send(&post_with(Some(&bearer(KEY_B)), USAGE));
    assert_eq!(
        c.response().status,
        201,
        "the connection survived the reload"
    );
}

#[test]
fn a_keys_file_that_does_not_parse_on_sighup_keeps_the_old_keys_and_logs_why() {
    let (_dir, path) = keys_file(&entry("app-a", KEY_A));
    let s = Server::start(with_keys(&path));
    // An operator pasted the key itself where its digest belongs.
    fs::write(
        &path,
        format!("[[key]]\nid = \"app-b\"\nsha256 = \"{KEY_B}\"\n"),
    )
    .expect("rewrite the keys file");
    s.signal(libc::SIGHUP);
    s.wait_for_log("keeping the 1 API key(s) loaded before");
    assert!(s.logs().contains("64 hexadecimal digits"), "{}", s.logs());
    let r = {
        let mut c = s.connect();
        c.send(&post_with(Some(&bearer(KEY_A)), USAGE));
        c.response()
    };
    assert_eq!(r.status, 201, "the old key still works: {}", r.text());
    let logs = s.logs();
    assert!(!logs.contains(KEY_A) && !logs.contains(KEY_B), "{logs}");
}

#[test]
fn a_key_from_busyapi_admin_keys_new_works_once_its_line_is_in_the_file_and_never_reaches_the_log()
{
    let out = Command::new(env!("CARGO_BIN_EXE_busyapi-admin"))
        .args(["keys", "new", "--id", "fleet-7"])
        .output()
        .expect("run busyapi-admin");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let (key, table) = stdout
        .split_once("\n\n")
        .expect("the key, a blank line, the entry");
    assert!(key.len() >= 43, "256 bits of base64url: {key:?}");
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url without padding: {key:?}"
    );
    assert!(!table.contains(key), "the file holds the digest only");
    let (_dir, path) = keys_file(table);
    let s = Server::start(with_keys(&path));
    let mut c = s.connect();
    c.send(&post_with(Some(&bearer(key)), USAGE));
    assert_eq!(c.response().status, 201);
    c.send(&post_with(Some(&bearer(&key[1..])), USAGE));
    assert_eq!(c.response().status, 401);
    s.signal(libc::SIGHUP);
    s.wait_for_log("reloaded 1 API key(s)");
    let logs = s.logs();
    assert!(!logs.contains(key), "{logs}");
    assert!(
        logs.contains("auth required: 1 API key(s) loaded"),
        "{logs}"
    );
}

#[test]
fn without_a_keys_file_the_server_runs_open_and_says_so_in_one_warning_line() {
    let s = Server::start(Opts::default());
    let logs = s.logs();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("AUTH IS OFF")).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("level=WARN"), "{}", warnings[0]);
    assert_eq!(s.post(USAGE).status, 201, "open, as before keys existed");
}

#[test]
fn auth_required_without_keys_and_a_bad_keys_file_at_start_exit_2_naming_the_flag() {
    let (_dir, bad) = keys_file("[[key]]\nid = \"a b\"\n");
    for (args, needle) in [
        (vec!["--auth", "required"], "--auth"),
        (
            vec!["--api-keys-file", bad.to_str().expect("UTF-8")],
            "--api-keys-file",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_busyapi"))
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--data-dir", "/nonexistent/x"])
            .output()
            .expect("run busyapi");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
