//! The HTTP contract of busyapi, black-box: the real binary, real sockets,
//! raw bytes.
//!
//! A refusal is checked three ways: its status, a JSON `{"error": ...}` whose
//! text says what was wrong, and that nothing was written (`acknowledged`
//! and `lastId` in `/api/stats` stay put, and the next good usage gets the
//! next id). Only the test that reads stored instants back needs MongoDB;
//! the others run against a dead port, where the WAL still acknowledges.
//!
//! | module         | what it covers                                        |
//! |----------------|-------------------------------------------------------|
//! | [`usages`]     | 201s, the accepted forms, every 400 about the body    |
//! | [`auth`]       | API keys: 401s, SIGHUP reloads, the stored source     |
//! | [`key_limits`] | 429s per key, per-key metrics, failed-auth limiting   |
//! | [`refusals`]   | framing 400s, 404, 405, 408, 413, 415, 431, 501, 505  |
//! | [`batches`]    | JSON arrays and NDJSON: ids in order, all or nothing  |
//! | [`http11`]     | keep-alive, close, pipelining, chunked, 100-continue  |
//! | [`hostile`]    | garbage, noise, torn requests: the server lives on    |
//! | [`rfc_details`]| Host, Transfer-Encoding lists, 414, absolute form, ...|
//! | [`memory`]     | silent pipelining clients hold bounded memory each    |
//! | [`operations`] | /healthz, /readyz, HEAD, /metrics, /api/stats         |
//! | [`openapi`]    | /openapi.json is the repository's, names every route  |
mod common;

#[path = "http_contract/auth.rs"]
mod auth;
#[path = "http_contract/batches.rs"]
mod batches;
#[path = "http_contract/hostile.rs"]
mod hostile;
#[path = "http_contract/http11.rs"]
mod http11;
#[path = "http_contract/key_limits.rs"]
mod key_limits;
#[path = "http_contract/memory.rs"]
mod memory;
#[path = "http_contract/openapi.rs"]
mod openapi;
#[path = "http_contract/operations.rs"]
mod operations;
#[path = "http_contract/refusals.rs"]
mod refusals;
#[path = "http_contract/rfc_details.rs"]
mod rfc_details;
#[path = "http_contract/usages.rs"]
mod usages;

use std::time::Duration;

use common::{Http, Opts, Response, Scrape, Server, USAGE, assert_error};

/// Ids must stay exact in a JavaScript number.
const ID_MAX: u64 = 1 << 53;
/// The default body cap.
const BODY_BYTES_MAX: usize = 16 * 1024;
/// The default body cap of a batch (`--batch-max-bytes`).
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Between writes that the server must see as separate reads. Nothing
/// observable marks that it has read a fragment, so there is nothing to
/// wait for; the pause only makes coalescing unlikely.
const WRITE_GAP: Duration = Duration::from_millis(2);

/// A usage body from three JSON values as they go on the wire.
fn usage(patient: &str, timestamp: &str, medication: &str) -> String {
    format!(r#"{{"patientId": {patient}, "timestamp": {timestamp}, "medication": {medication}}}"#)
}

/// `USAGE` padded with JSON whitespace to exactly `len` bytes.
fn usage_of_len(len: usize) -> String {
    format!("{USAGE:len$}")
}

/// A request with `headers` (each ending in CRLF) and `body`, framed by
/// Content-Length.
fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

fn post_with(headers: &str, body: &[u8]) -> Vec<u8> {
    request("POST", "/api/usages", headers, body)
}

fn post_json(body: &[u8]) -> Vec<u8> {
    post_with("Content-Type: application/json\r\n", body)
}

/// A chunked JSON POST to /api/usages; `chunks` is the raw chunked body.
fn post_chunked(chunks: &str) -> Vec<u8> {
    let head = "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n";
    format!("{head}Transfer-Encoding: chunked\r\n\r\n{chunks}").into_bytes()
}

/// `body` as one chunk and the last chunk.
fn one_chunk(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

/// `n` distinct filler headers.
fn extra_headers(n: usize) -> String {
    (0..n).map(|i| format!("X-Extra-{i}: v\r\n")).collect()
}

/// Sends `raw` on a fresh connection and reads one response.
fn exchange(s: &Server, raw: &[u8]) -> Response {
    let mut c = s.connect();
    c.send(raw);
    c.response()
}

/// A refusal after which the server closes, because the framing of what
/// follows is unknown.
fn assert_error_and_close(c: &mut Http, status: u16, needle: &str) {
    let r = c.response();
    assert_error(&r, status, needle);
    assert_eq!(r.header("connection"), Some("close"), "{needle}");
    assert!(
        c.closed(),
        "the connection stayed open after {status} ({needle})"
    );
}

/// Sends `raw` on a fresh connection and expects a refusal that closes it.
fn assert_refused(s: &Server, raw: &[u8], status: u16, needle: &str) {
    let mut c = s.connect();
    c.send(raw);
    assert_error_and_close(&mut c, status, needle);
}

/// On a fresh server: nothing was written, and the next good usage gets
/// the first id.
fn assert_nothing_written(s: &Server) {
    assert_eq!(s.written(), (0, 0), "a refused request was written");
    assert_eq!(
        s.post(USAGE).id(),
        1,
        "the first good usage did not get the first id"
    );
}

/// Writes `bytes` in pieces of `piece` bytes, pausing between them.
fn send_in_pieces(c: &mut Http, bytes: &[u8], piece: usize) {
    c.stream.set_nodelay(true).expect("nodelay");
    for part in bytes.chunks(piece) {
        c.send(part);
        std::thread::sleep(WRITE_GAP);
    }
}

/// The process is alive, has not panicked, and still takes usages.
fn assert_still_serving(s: &mut Server) {
    assert!(s.is_running(), "busyapi died; log:\n{}", s.logs());
    assert!(
        !s.logs().contains("panicked"),
        "busyapi panicked; log:\n{}",
        s.logs()
    );
    let last = s.written().1;
    assert_eq!(s.post(USAGE).id(), last + 1);
}

fn start() -> Server {
    Server::start(Opts::default())
}
