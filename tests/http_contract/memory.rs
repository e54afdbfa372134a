//! What a connection may hold is bounded in bytes: clients that pipeline
//! and never read cost the server a bounded resident set each, decoding
//! waits for a client to take its answers, and the server keeps answering
//! everyone else.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// Clients that pipeline and never read.
const CONNECTIONS: usize = 200;
/// Requests each pipelines: `GET /`, the status page (11 KiB), so that the
/// responses are far larger than the requests and MongoDB plays no part.
const PIPELINED: usize = 256;
/// The growth of the server's resident set a connection may cause, as the
/// README states it ("Bounded memory per connection").
const RSS_KIB_PER_CONNECTION_MAX: u64 = 100;
/// How long the server's progress must stand still to count as settled.
const SETTLED: Duration = Duration::from_millis(1_000);
/// What the resident set moves by while nothing happens: the WAL's spare
/// segment being filled, each `/metrics` scrape's own allocations.
const RSS_NOISE_KIB: u64 = 512;
/// The longest the server may take to settle.
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Status pages served so far.
fn pages_served(s: &Server) -> f64 {
    let series = r#"busyapi_http_requests_total{route="/",status="200"}"#;
    Scrape::of(s).try_value(series).unwrap_or(0.0)
}

/// Waits until, for [`SETTLED`], no page is served and the resident set
/// moves by [`RSS_NOISE_KIB`] at most: the server did all it will do for
/// the silent clients.
fn wait_settled(s: &Server) -> (f64, u64) {
    let until = Instant::now() + SETTLE_MAX;
    let mut last = (pages_served(s), s.rss_kib());
    loop {
        std::thread::sleep(SETTLED);
        let now = (pages_served(s), s.rss_kib());
        if now.0 == last.0 && now.1.abs_diff(last.1) <= RSS_NOISE_KIB {
            return now;
        }
        assert!(
            Instant::now() < until,
            "still moving after {SETTLE_MAX:?}: {now:?}"
        );
        last = now;
    }
}

/// Opens `n` connections that each send `batch` and read nothing.
fn silent_clients(s: &Server, n: usize, batch: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).expect("connect");
            c.write_all(batch).expect("pipeline");
            c
        })
        .collect()
}

/// The server's resident set once it is warm: worker threads, their
/// allocator arenas and the status page have been used.
fn warm_baseline_kib(s: &Server) -> u64 {
    for _ in 0..8 {
        assert_eq!(s.get("/").status, 200);
    }
    assert_eq!(s.post(USAGE).id(), 1);
    wait_settled(s).1
}

/// `n` pipelined `GET /`.
fn status_pages(n: usize) -> Vec<u8> {
    "GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(n).into_bytes()
}

#[test]
fn connections_that_pipeline_and_never_read_hold_a_bounded_memory_and_others_get_201s() {
    let s = start();
    let before_kib = warm_baseline_kib(&s);
    let silent = silent_clients(&s, CONNECTIONS, &status_pages(PIPELINED));
    let (served, after_kib) = wait_settled(&s);
    let bystander = s.post(USAGE);
    assert_eq!(bystander.id(), 2, "a bystander was not served");
    let grown_kib = after_kib.saturating_sub(before_kib);
    eprintln!(
        "RSS {before_kib} KiB -> {after_kib} KiB: {} KiB per connection; {served} pages served",
        grown_kib / CONNECTIONS as u64
    );
    assert!(
        grown_kib < RSS_KIB_PER_CONNECTION_MAX * CONNECTIONS as u64,
        "{CONNECTIONS} silent pipelining connections grew the server by {grown_kib} KiB"
    );
    drop(silent);
}

#[test]
fn a_client_that_stops_reading_stops_the_decoding_of_its_requests_until_it_reads() {
    // Far more answers than the kernel's socket buffers hold (22 MiB a
    // connection), so the server's writes block.
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 2048;
    let s = start();
    let before_kib = warm_baseline_kib(&s);
    let silent = silent_clients(&s, CLIENTS, &status_pages(REQUESTS));
    let (served, after_kib) = wait_settled(&s);
    assert!(
        served < (CLIENTS * REQUESTS) as f64,
        "every request was answered into full sockets"
    );
    let grown_kib = after_kib.saturating_sub(before_kib);
    assert!(
        grown_kib < RSS_KIB_PER_CONNECTION_MAX * CLIENTS as u64 + RSS_NOISE_KIB,
        "{CLIENTS} blocked connections hold {grown_kib} KiB"
    );
    // Reading, a client gets every answer, in order: decoding resumed.
    let mut reader = Http::from_stream(silent[0].try_clone().expect("clone"));
    for i in 0..REQUESTS {
        let r = reader.response();
        assert_eq!(r.status, 200, "response {i}");
    }
}

#[test]
fn buffers_grown_for_one_large_body_are_given_back_once_the_connection_is_idle() {
    const CLIENTS: usize = 50;
    const BODY_BYTES: usize = 512 * 1024;
    let s = Server::start(Opts::default().arg(&format!("--max-body-bytes {BODY_BYTES}")));
    let before_kib = warm_baseline_kib(&s);
    let body = format!("{USAGE}{}", " ".repeat(BODY_BYTES - USAGE.len()));
    let idle: Vec<Http> = (0..CLIENTS)
        .map(|i| {
            let mut c = s.connect();
            c.send(&post_json(body.as_bytes()));
            assert_eq!(c.response().id(), i as u64 + 2);
            c
        })
        .collect();
    // Each connection stays open, idle, after its large round.
    let (_, after_kib) = wait_settled(&s);
    let grown_kib = after_kib.saturating_sub(before_kib);
    eprintln!(
        "RSS {before_kib} KiB -> {after_kib} KiB: {} KiB per idle connection",
        grown_kib / CLIENTS as u64
    );
    assert!(
        grown_kib < RSS_KIB_PER_CONNECTION_MAX * CLIENTS as u64 + RSS_NOISE_KIB,
        "{CLIENTS} idle connections that each took a {BODY_BYTES}-byte body hold {grown_kib} KiB"
    );
    drop(idle);
}
