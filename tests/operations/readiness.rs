//! `/healthz` says the process is alive; `/readyz` says whether to send it
//! traffic. A WAL that cannot be written makes it unready until an append
//! succeeds again; MongoDB being down does not (the WAL absorbs it). The
//! backlog quota and shutdown are covered in their own modules.

use super::*;
use common::{Opts, USAGE};

/// Failed appends the failpoint injects before the WAL works again.
const FAILED_APPENDS: usize = 3;

#[test]
fn while_the_wal_cannot_be_written_posts_and_readyz_get_503_until_an_append_succeeds() {
    let s = Server::start(
        Opts::default().env("FAILPOINTS", &format!("wal::write={FAILED_APPENDS}*return")),
    );
    for attempt in 0..FAILED_APPENDS {
        let r = s.post(USAGE);
        assert_unavailable(&r, "cannot be written");
        let ready = s.get("/readyz");
        assert_unavailable(&ready, "cannot be written");
        assert_eq!(s.get("/healthz").status, 200, "after failure {attempt}");
        let scrape = Scrape::of(&s);
        assert_eq!(scrape.value("busyapi_wal_writable"), 0.0);
        assert_eq!(scrape.value("busyapi_ready"), 0.0);
        assert_eq!(s.written(), (0, 0), "a refused usage was written");
    }
    // The failpoint is used up: the next append works, and so does the WAL.
    assert_eq!(s.post(USAGE).id(), 1, "{}", s.logs());
    let ready = s.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    let scrape = Scrape::of(&s);
    assert_eq!(scrape.value("busyapi_wal_writable"), 1.0);
    assert_eq!(scrape.value("busyapi_ready"), 1.0);
    assert_eq!(s.written(), (1, 1));
    let append_errors = || {
        s.logs()
            .lines()
            .filter(|l| l.contains("level=ERROR") && l.contains("WAL append failed"))
            .count()
    };
    wait_for(
        Duration::from_secs(10),
        "the failed append's log line",
        || append_errors() > 0,
    );
    assert_eq!(
        append_errors(),
        1,
        "the failed appends are logged once, not once each:\n{}",
        s.logs()
    );
}

#[test]
fn mongodb_down_alone_keeps_the_server_ready_and_healthy() {
    let s = Server::start(Opts::default());
    // busyapi has tried MongoDB and knows it is down (the gauge starts at 0
    // anyway, so it alone would prove nothing).
    wait_for(Duration::from_secs(30), "MongoDB to be known down", || {
        s.logs().contains("MongoDB is unreachable")
    });
    assert_eq!(metric(&s, "busyapi_mongo_up"), 0.0);
    assert_eq!(s.stats()["mongoUp"], false);
    for _ in 0..10 {
        assert_eq!(s.post(USAGE).status, 201);
    }
    let ready = s.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.stats()["readiness"], "ready");
}

#[test]
fn a_segment_whose_header_could_not_be_written_is_created_afresh_at_the_next_attempt() {
    // Pipelined bursts: one WAL commit each, so 1 MiB fills in seconds.
    const BURST: usize = 200;
    const BURSTS_MAX: usize = 1_000;
    // No spare segment (preparing one fails), so a roll creates the file
    // itself; the roll's header write fails once (the start's succeeds).
    let s = Server::start(Opts::default().arg("--wal-segment-bytes 1MiB").env(
        "FAILPOINTS",
        "wal::spare=return;wal::segment_header=1*off->1*return",
    ));
    let mut c = s.connect();
    let burst: Vec<u8> = (0..BURST)
        .flat_map(|_| common::post_request(USAGE))
        .collect();
    let mut send_burst = || -> Vec<u16> {
        c.send(&burst);
        (0..BURST).map(|_| c.response().status).collect()
    };
    let mut refused_at = None;
    for n in 0..BURSTS_MAX {
        let statuses = send_burst();
        assert!(statuses.iter().all(|&st| st == 201 || st == 503));
        if statuses.contains(&503) {
            refused_at = Some(n);
            break;
        }
    }
    assert!(refused_at.is_some(), "no roll within {BURSTS_MAX} bursts");
    s.wait_for_log("write a segment header");
    // The next commit rolls again; the half-made file must not be in the way.
    let statuses = send_burst();
    assert!(
        statuses.iter().all(|&st| st == 201),
        "still refused after the failed roll: {statuses:?}\n{}",
        s.logs()
    );
}
