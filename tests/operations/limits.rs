//! Slow and surplus clients: a client trickling its head or its body gets
//! 408 and is closed when its phase's timeout runs out, without slowing
//! anyone else down; an idle keep-alive connection is closed quietly; past
//! `--max-connections` a connection gets 503 and is closed, and a freed
//! slot is used again.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};

use super::*;
use common::{Opts, USAGE};

/// Connections in the slowloris attack, and how often each sends a byte.
const SLOW_CLIENTS: usize = 50;
const TRICKLE_GAP: Duration = Duration::from_millis(200);
/// The header timeout the attack runs into.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long throughput is measured, before and during the attack.
const MEASURE: Duration = Duration::from_millis(2000);
/// The share of its usual throughput an honest client keeps under attack.
/// The attack costs the server a read every few milliseconds; the margin
/// is for the two cores being shared with other test processes.
const THROUGHPUT_SHARE_MIN: f64 = 0.4;
/// Latest a timed-out client may be answered and closed, past its timeout.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1500);

/// Sequential POSTs on one keep-alive connection for `how_long`; returns
/// how many were acknowledged.
fn posts_during(addr: SocketAddr, how_long: Duration) -> u64 {
    let mut c = Http::connect(addr);
    let until = Instant::now() + how_long;
    let mut n = 0;
    while Instant::now() < until {
        c.post_json(USAGE);
        assert_eq!(c.response().status, 201);
        n += 1;
    }
    n
}

/// Sends `start`, then one byte of `trickle` every `gap` until a response
/// arrives; returns it with the time from `start` to it, after checking
/// that the server then closed the connection.
fn trickle_until_answered(
    addr: SocketAddr,
    start: &[u8],
    trickle: u8,
    gap: Duration,
) -> (Response, Duration) {
    let mut c = Http::connect(addr);
    c.stream.set_nodelay(true).expect("nodelay");
    c.stream.set_read_timeout(Some(gap)).expect("timeout");
    c.send(start);
    let started = Instant::now();
    let r = loop {
        if let Some(r) = c.try_response() {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no response to a trickling client"
        );
        // After the server closed, this write may fail: the loop then
        // ends with the response read above or the assert.
        let _ = c.stream.write_all(&[trickle]);
    };
    let took = started.elapsed();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(c.closed(), "the connection stayed open after {}", r.status);
    (r, took)
}

/// A 408 that closes the connection, `timeout` (but not much more) after
/// the client began.
fn assert_timed_out(r: &Response, took: Duration, timeout: Duration) {
    assert_error(r, 408, "request not received in time");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        took + Duration::from_millis(100) >= timeout,
        "408 after {took:?}, before the {timeout:?} timeout"
    );
    assert!(
        took <= timeout + TIMEOUT_SLACK,
        "408 only after {took:?} with a {timeout:?} timeout"
    );
}

#[test]
fn slowloris_clients_get_408_and_are_closed_while_an_honest_client_keeps_its_pace() {
    let s = Server::start(Opts::default().arg(&format!(
        "--header-read-timeout-ms {}",
        HEADER_TIMEOUT.as_millis()
    )));
    let addr = s.addr;
    let before = posts_during(addr, MEASURE);
    assert!(
        before > 20,
        "only {before} POSTs in {MEASURE:?} without attack"
    );

    let attack_until = Instant::now() + MEASURE + Duration::from_millis(300);
    let ready = Arc::new(Barrier::new(SLOW_CLIENTS + 1));
    let attackers: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let head = b"POST /api/usages HTTP/1.1\r\nHost: t\r\nX-Slow: ";
                let mut rounds = Vec::new();
                ready.wait();
                // Each attacker comes back as soon as it is thrown out.
                while Instant::now() < attack_until {
                    rounds.push(trickle_until_answered(addr, head, b'a', TRICKLE_GAP));
                }
                rounds
            })
        })
        .collect();
    ready.wait();
    let during = posts_during(addr, MEASURE);
    let rounds: Vec<(Response, Duration)> = attackers
        .into_iter()
        .flat_map(|a| a.join().expect("an attacker"))
        .collect();
    assert!(rounds.len() >= SLOW_CLIENTS);
    for (r, took) in &rounds {
        assert_timed_out(r, *took, HEADER_TIMEOUT);
    }
    let share = during as f64 / before as f64;
    eprintln!(
        "honest client: {before} POSTs before, {during} during {} slowloris rounds",
        rounds.len()
    );
    assert!(
        share >= THROUGHPUT_SHARE_MIN,
        "under attack the honest client did {during} POSTs in {MEASURE:?}, against {before} before"
    );
    assert!(metric(&s, "busyapi_connections_timed_out_total") >= rounds.len() as f64);
}

#[test]
fn a_body_trickling_in_slower_than_the_body_timeout_gets_408_and_is_closed() {
    const BODY_TIMEOUT: Duration = Duration::from_millis(500);
    let s = Server::start(Opts::default().arg(&format!(
        "--body-read-timeout-ms {}",
        BODY_TIMEOUT.as_millis()
    )));
    let head = b"POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    let (r, took) = trickle_until_answered(s.addr, head, b' ', Duration::from_millis(100));
    assert_timed_out(&r, took, BODY_TIMEOUT);
    assert_eq!(s.written(), (0, 0), "a timed-out body was written");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_quietly_after_the_idle_timeout_and_not_before() {
    const IDLE_TIMEOUT: Duration = Duration::from_millis(500);
    let s = Server::start(
        Opts::default().arg(&format!("--idle-timeout-ms {}", IDLE_TIMEOUT.as_millis())),
    );
    let mut c = s.connect();
    c.post_json(USAGE);
    assert_ne!(c.response().header("connection"), Some("close"));
    // In use more often than the timeout: open for several timeouts.
    let in_use = Instant::now();
    while in_use.elapsed() < 3 * IDLE_TIMEOUT {
        std::thread::sleep(IDLE_TIMEOUT / 2);
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let idle = Instant::now();
    assert!(
        c.closed(),
        "the idle connection got bytes instead of a close"
    );
    let took = idle.elapsed();
    assert!(
        took + Duration::from_millis(50) >= IDLE_TIMEOUT,
        "closed after {took:?} idle, before the {IDLE_TIMEOUT:?} timeout"
    );
    assert!(
        took <= IDLE_TIMEOUT + TIMEOUT_SLACK,
        "still open {took:?} idle with a {IDLE_TIMEOUT:?} timeout"
    );
    assert!(metric(&s, "busyapi_connections_timed_out_total") >= 1.0);
}

#[test]
fn past_max_connections_a_connection_gets_503_and_is_closed_and_a_freed_slot_is_reused() {
    const MAX: usize = 5;
    let s = Server::start(Opts::default().arg(&format!("--max-connections {MAX}")));
    let healthz = |c: &mut Http| {
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        c.response()
    };
    let mut open: Vec<Http> = (0..MAX)
        .map(|i| {
            let mut c = s.connect();
            assert_eq!(healthz(&mut c).status, 200, "connection {i}");
            c
        })
        .collect();
    // One surplus client waits to be spoken to, one sends its request at
    // once, as real clients do: both are told why.
    for sends_first in [false, true] {
        let mut surplus = s.connect();
        if sends_first {
            let _ = surplus.stream.write_all(&post_request(USAGE));
        }
        let r = surplus.response();
        assert_unavailable(&r, "too many open connections");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(surplus.closed(), "the surplus connection stayed open");
    }
    open[0].send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let scrape = Scrape {
        text: open[0].response().text(),
    };
    assert_eq!(scrape.value("busyapi_connections_open"), MAX as f64);
    assert_eq!(scrape.value("busyapi_connections_refused_total"), 2.0);
    assert_eq!(
        scrape.value("busyapi_records_acknowledged_total"),
        0.0,
        "the surplus client's usage was written"
    );

    drop(open.pop());
    let mut reused = None;
    wait_for(Duration::from_secs(10), "a freed slot to be reused", || {
        let mut c = s.connect();
        let _ = c
            .stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        // A refused connection may also be reset under the request.
        let served = c.try_response().is_some_and(|r| r.status == 200);
        if served {
            reused = Some(c);
        }
        served
    });
    let mut reused = reused.expect("a connection in the freed slot");
    reused.post_json(USAGE);
    assert_eq!(reused.response().status, 201);
    for c in &mut open {
        assert_eq!(healthz(c).status, 200, "a connection under the cap");
    }
}

/// Sets the running server's soft open-file limit to `n` (the hard limit
/// stays: lowering it could not be undone without CAP_SYS_RESOURCE).
fn set_open_file_limit(s: &Server, n: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit on our own child; the kernel writes only `old`.
    let rc = unsafe { libc::prlimit(s.pid(), libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: n.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; the kernel only reads `lim`.
    let rc = unsafe { libc::prlimit(s.pid(), libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(s: &Server) -> u64 {
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .expect("the server's fd directory")
        .count() as u64
}

#[test]
fn out_of_file_descriptors_the_accept_loop_pauses_and_open_connections_keep_being_served() {
    // Enough keep-alive connections to have some on each worker: the
    // accept loop runs on one of them.
    const KEPT: usize = 6;
    const WAITING: usize = 20;
    let s = Server::start(Opts::default());
    let mut kept: Vec<Http> = (0..KEPT).map(|_| s.connect()).collect();
    for c in &mut kept {
        c.post_json(USAGE);
        assert_eq!(c.response().status, 201);
    }
    // Room for one more descriptor: the accept after it fails with EMFILE.
    set_open_file_limit(&s, open_fds(&s) + 1);
    let mut waiting: Vec<Http> = (0..WAITING).map(|_| s.connect()).collect();
    wait_for(Duration::from_secs(10), "a failed accept", || {
        s.logs().contains("accept failed")
    });
    for (i, c) in kept.iter_mut().enumerate() {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.post_json(USAGE);
        let r = c
            .try_response()
            .unwrap_or_else(|| panic!("kept connection {i} got no answer while accept fails"));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    kept[0].send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let scrape = Scrape {
        text: kept[0].response().text(),
    };
    assert!(scrape.value("busyapi_accept_errors_total") >= 1.0);

    set_open_file_limit(&s, 4096);
    let last = waiting.last_mut().expect("a waiting connection");
    last.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        last.response().status,
        200,
        "a queued connection after the limit rose"
    );
    s.wait_for_log("accepting connections again");
}

#[test]
fn an_open_file_limit_below_max_connections_lowers_the_cap_so_surplus_clients_get_503() {
    const LIMIT: u64 = 300;
    // busyapi::limits::FD_RESERVE descriptors stay for the WAL and MongoDB.
    const CAP: usize = (LIMIT - busyapi::limits::FD_RESERVE) as usize;
    let s = Server::start(Opts::default().open_file_limit(LIMIT));
    assert!(
        s.logs()
            .contains(&format!("--max-connections lowered from 10000 to {CAP}")),
        "{}",
        s.logs()
    );
    let mut open = Vec::new();
    for i in 0..CAP {
        let mut c = s.connect();
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 200, "connection {i} of {CAP}");
        open.push(c);
    }
    let mut surplus = s.connect();
    surplus.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_unavailable(&surplus.response(), "too many open connections");
    open[0].post_json(USAGE);
    assert_eq!(open[0].response().status, 201);
}
