//! Limits per API key: a key past its token bucket gets 429 with
//! `Retry-After` at once and nothing is written, then recovers; `/metrics`
//! counts each key's requests and 429s; an address that keeps failing to
//! authenticate is told to wait, and its connection closed.
//!
//! Requests that must meet a full bucket are pipelined in one write: they
//! are decoded (and take their tokens) within microseconds, however slow
//! the machine, so no refill can slip in between.

use std::fs;

use super::auth::{bearer, entry, keys_file, post_with, with_keys};
use super::*;

const SLOW: &str = "slow-key-0123456789abcdefghijklmnopqrstuvwxyz";
const PLAIN: &str = "plain-key-0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` usage POSTs with `key`, back to back.
fn pipelined(key: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|_| post_with(Some(&bearer(key)), USAGE))
        .collect()
}

fn limited_keys() -> String {
    format!(
        "{}rate_per_s = 1\nburst = 2\n{}",
        entry("slow", SLOW),
        entry("plain", PLAIN)
    )
}

#[test]
fn a_key_past_its_burst_gets_429_with_retry_after_writes_nothing_and_recovers() {
    let (_dir, path) = keys_file(&limited_keys());
    let s = Server::start(with_keys(&path).arg("--key-rate-per-s 1 --key-burst 1"));
    let mut c = s.connect();
    c.send(&pipelined(SLOW, 3));
    let statuses: Vec<u16> = (0..3).map(|_| c.response().status).collect();
    assert_eq!(statuses[..2], [201, 201], "the burst");
    c.send(&pipelined(SLOW, 1));
    let r = c.response();
    assert_error(&r, 429, "rate limit");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(s.written().0, 2, "nothing written for the 429s");
    // The other key, without a limit of its own, has the flags' defaults.
    c.send(&pipelined(PLAIN, 2));
    assert_eq!([c.response().status, c.response().status], [201, 429]);
    // After Retry-After (and a margin for a loaded machine) the key is
    // served again, on the same connection.
    std::thread::sleep(Duration::from_millis(wait * 1000 + 500));
    c.send(&pipelined(SLOW, 1));
    assert_eq!(c.response().status, 201, "recovered");
    let m = Scrape::of(&s);
    assert_eq!(m.value(r#"busyapi_key_requests_total{key="slow"}"#), 5.0);
    assert_eq!(
        m.value(r#"busyapi_key_rate_limited_total{key="slow"}"#),
        2.0
    );
    assert_eq!(
        m.value(r#"busyapi_key_rate_limited_total{key="plain"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"busyapi_http_requests_total{route="/api/usages",status="429"}"#),
        3.0
    );
}

#[test]
fn a_key_removed_by_a_reload_leaves_the_metrics() {
    let (_dir, path) = keys_file(&limited_keys());
    let s = Server::start(with_keys(&path));
    assert!(Scrape::of(&s).try_value(r#"busyapi_key_requests_total{key="plain"}"#) == Some(0.0));
    fs::write(&path, entry("slow", SLOW)).expect("rewrite the keys file");
    s.signal(libc::SIGHUP);
    s.wait_for_log("reloaded 1 API key(s)");
    let m = Scrape::of(&s);
    assert_eq!(
        m.try_value(r#"busyapi_key_requests_total{key="plain"}"#),
        None
    );
    assert_eq!(m.value(r#"busyapi_key_requests_total{key="slow"}"#), 0.0);
}

#[test]
fn an_address_that_keeps_failing_gets_429_and_a_closed_connection_while_valid_keys_still_pass() {
    let (_dir, path) = keys_file(&limited_keys());
    let s = Server::start(with_keys(&path));
    let burst = busyapi::limits::AUTH_FAILURE_BURST as usize;
    let mut c = s.connect();
    c.send(&pipelined("a-guess", burst + 1));
    for i in 0..burst {
        assert_eq!(c.response().status, 401, "failure {i} is within the budget");
    }
    let r = c.response();
    assert_error(&r, 429, "failed authentications");
    assert!(r.header("retry-after").is_some(), "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed(), "each further guess needs a new connection");
    let mut c = s.connect();
    c.send(&pipelined("another-guess", 1));
    assert_eq!(
        c.response().status,
        429,
        "the address is still over its budget"
    );
    let mut c = s.connect();
    c.send(&pipelined(PLAIN, 1));
    assert_eq!(
        c.response().status,
        201,
        "a valid key from that address passes"
    );
    assert_eq!(s.written().0, 1);
}

/// A JSON array of `n` usages, POSTed with `key`.
fn batch_with(key: &str, n: usize) -> Vec<u8> {
    let body = format!("[{}]", vec![USAGE; n].join(","));
    post_with(Some(&bearer(key)), &body)
}

#[test]
fn a_batch_takes_one_token_per_usage_and_one_over_the_bucket_is_refused_whole() {
    let keys = format!("{}rate_per_s = 1\nburst = 5\n", entry("slow", SLOW));
    let (_dir, path) = keys_file(&keys);
    let s = Server::start(with_keys(&path));
    let mut c = s.connect();
    // Three usages take three of the five tokens; a batch of three more
    // finds two and is refused whole; a batch of two then fits.
    c.send(
        &[
            batch_with(SLOW, 3),
            batch_with(SLOW, 3),
            batch_with(SLOW, 2),
        ]
        .concat(),
    );
    let first = c.response();
    assert_eq!(first.status, 201, "{}", first.text());
    let refused = c.response();
    assert_error(&refused, 429, "rate limit");
    assert!(refused.header("retry-after").is_some(), "Retry-After");
    assert_eq!(c.response().status, 201, "the two left fit");
    assert_eq!(s.written().0, 5, "nothing of the refused batch was written");
}
