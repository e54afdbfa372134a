//! The ordered stop: SIGTERM turns readiness off at once, keeps serving
//! for `--shutdown-drain-ms`, lets the flusher deliver for up to
//! `--shutdown-grace-secs` and exits 0; what MongoDB could not take stays
//! in the WAL for the next start. A second signal exits at once, with 130.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use common::{Opts, USAGE, load, shared_mongo};

/// Exit status after a second signal (128 + SIGINT, as shells report it).
const FORCED_EXIT_CODE: i32 = 130;

/// POSTs `n` usages on one connection; returns their ids.
fn post_n(s: &Server, n: usize) -> Vec<u64> {
    let mut c = s.connect();
    (0..n)
        .map(|_| {
            c.post_json(USAGE);
            c.response().id()
        })
        .collect()
}

/// The WAL segment files in `dir`.
fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("the data directory")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count()
}

#[test]
fn sigterm_sent_the_moment_listening_is_logged_runs_the_ordered_stop_and_exits_0_instead_of_dying_by_the_signal()
 {
    // `Server::start` returns as soon as the "listening on" line is read:
    // each signal lands right after it, with nothing answered before. A
    // handler installed only after that line leaves a gap of microseconds,
    // so several servers are tried (each stop takes about 2 s, in parallel).
    const SERVERS: usize = 5;
    let mut servers: Vec<Server> = (0..SERVERS)
        .map(|_| {
            let s = Server::start(Opts::default().arg("--shutdown-grace-secs 0"));
            s.signal(libc::SIGTERM);
            s
        })
        .collect();
    for s in &mut servers {
        let status = s.wait(Duration::from_secs(30));
        assert_eq!(
            (status.code(), status.signal()),
            (Some(0), None),
            "an early SIGTERM was not the ordered stop; log:\n{}",
            s.logs()
        );
        wait_for(
            Duration::from_secs(10),
            "the ordered stop's log lines",
            || {
                let logs = s.logs();
                logs.contains("received SIGTERM; shutting down") && logs.contains("msg=\"stopped;")
            },
        );
    }
}

#[test]
fn during_the_shutdown_drain_readyz_is_503_at_once_while_healthz_and_posts_are_still_served() {
    const DRAIN: Duration = Duration::from_millis(3000);
    let mut s = Server::start(Opts::default().arg(&format!(
        "--shutdown-drain-ms {} --shutdown-grace-secs 0",
        DRAIN.as_millis()
    )));
    let mut kept = s.connect();
    kept.post_json(USAGE);
    assert_ne!(kept.response().header("connection"), Some("close"));

    s.signal(libc::SIGTERM);
    let signalled = Instant::now();
    // The signal is handled on its own thread: poll, but briefly.
    wait_for(DRAIN / 3, "/readyz to turn 503 at once", || {
        s.get("/readyz").status == 503
    });
    assert_unavailable(&s.get("/readyz"), "shutting down");
    assert_eq!(s.get("/healthz").status, 200);
    let fresh = s.post(USAGE);
    assert_eq!(fresh.status, 201, "{}", fresh.text());
    assert_eq!(fresh.header("connection"), Some("close"));
    // The kept connection is served once more, and told it ends.
    kept.post_json(USAGE);
    let last = kept.response();
    assert_eq!(last.status, 201, "{}", last.text());
    assert_eq!(last.header("connection"), Some("close"));
    assert!(kept.closed(), "keep-alive went on during the shutdown");
    assert!(
        signalled.elapsed() < DRAIN,
        "the checks outlasted the drain; they prove nothing"
    );
    assert!(s.is_running(), "busyapi exited during the drain");

    let status = s.wait(Duration::from_secs(30));
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited {:?} after SIGTERM, before the drain ended",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", s.logs());
}

#[test]
fn a_keep_alive_response_sent_just_before_sigterm_is_honoured_the_next_request_is_served_then_closed()
 {
    // The failpoint holds the first connection's coroutine right after it
    // wrote its keep-alive 201, so SIGTERM lands before its next read: the
    // moment a client reusing the connection races the shutdown.
    const PAUSE: Duration = Duration::from_millis(1500);
    let mut s = Server::start(
        Opts::default()
            .arg("--shutdown-drain-ms 8000 --shutdown-grace-secs 0")
            .env(
                "FAILPOINTS",
                &format!("http::after_response=1*sleep({})", PAUSE.as_millis()),
            ),
    );
    let mut kept = s.connect();
    kept.post_json(USAGE);
    let first = kept.response();
    let answered = Instant::now();
    assert_eq!(first.status, 201, "{}", first.text());
    assert_ne!(first.header("connection"), Some("close"));

    s.signal(libc::SIGTERM);
    wait_for(Duration::from_secs(5), "/readyz to turn 503", || {
        s.get("/readyz").status == 503
    });
    std::thread::sleep(PAUSE.saturating_sub(answered.elapsed()) + Duration::from_millis(300));
    kept.post_json(USAGE);
    let next = kept
        .try_response()
        .expect("the keep-alive connection was closed under its client after a keep-alive 201");
    assert_eq!(next.status, 201, "{}", next.text());
    assert_eq!(next.header("connection"), Some("close"));
    assert!(kept.closed(), "keep-alive went on during the shutdown");
    assert!(s.is_running(), "busyapi exited during the drain");
}

#[test]
fn sigterm_under_load_exits_0_with_every_acknowledged_usage_in_mongodb_exactly_once() {
    const DB: &str = "operations_sigterm_load";
    let mongo = shared_mongo();
    fresh_usages(mongo, DB);
    let mut s = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(s.addr, 6, stop.clone());
    wait_for(Duration::from_secs(30), "some usages under load", || {
        s.stat("acknowledged") >= 500
    });
    let status = s.terminate(DELIVERY);
    stop.store(true, Ordering::Relaxed);
    let acked = clients.join().expect("load");
    assert_eq!(status.code(), Some(0), "{}", s.logs());
    assert!(acked.len() >= 500, "only {} acknowledged", acked.len());
    assert_stored_exactly(mongo, DB, &acked);
    wait_for(Duration::from_secs(10), "the last log line", || {
        s.logs().contains("stopped; 0 record(s) remain in the WAL")
    });
}

#[test]
fn with_mongodb_down_sigterm_exits_0_within_the_grace_and_a_restart_delivers_the_backlog() {
    const DB: &str = "operations_sigterm_mongo_down";
    const GRACE: Duration = Duration::from_secs(2);
    const USAGES: usize = 30;
    let mut mongo = mongo_down_with(DB);
    let mut s = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg(&format!("--shutdown-grace-secs {}", GRACE.as_secs())),
    );
    let acked = post_n(&s, USAGES);
    let signalled = Instant::now();
    let status = s.terminate(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", s.logs());
    // The grace, plus one MongoDB attempt already under way.
    assert!(
        took < GRACE + Duration::from_secs(4),
        "exiting took {took:?} with a grace of {GRACE:?}; log:\n{}",
        s.logs()
    );
    wait_for(Duration::from_secs(10), "the last log line", || {
        s.logs()
            .contains(&format!("stopped; {USAGES} record(s) remain in the WAL"))
    });
    assert!(segment_files(&s.data_dir) >= 1, "the WAL is gone");

    mongo.restart();
    s.restart();
    wait_drained(&s);
    assert_stored_exactly(&mongo, DB, &acked);
}

#[test]
fn a_second_signal_exits_at_once_with_130_and_a_restart_still_delivers_everything() {
    const DB: &str = "operations_second_signal";
    const USAGES: usize = 30;
    let mut mongo = mongo_down_with(DB);
    let mut s = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg("--shutdown-grace-secs 60"),
    );
    let acked = post_n(&s, USAGES);
    s.signal(libc::SIGTERM);
    // The stop sequence is now waiting for MongoDB to take the backlog.
    wait_for(
        Duration::from_secs(30),
        "the flusher's grace to begin",
        || s.logs().contains("for up to 60 s"),
    );
    assert!(s.is_running());
    let signalled = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the second signal took {took:?} to end the process"
    );
    assert_eq!(
        (status.code(), status.signal()),
        (Some(FORCED_EXIT_CODE), None),
        "{}",
        s.logs()
    );

    mongo.restart();
    s.restart();
    wait_drained(&s);
    assert_stored_exactly(&mongo, DB, &acked);
}

#[test]
fn sigterm_exits_0_within_the_grace_while_mongodb_never_answers_the_index_build() {
    const GRACE: Duration = Duration::from_secs(1);
    // The stop may take the grace, the coordinator's wait for stuck senders
    // and the probe's last server selection; minutes would mean a hang.
    const STOP_MAX: Duration = Duration::from_secs(15);
    let mongo = shared_mongo();
    let upstream = ([127, 0, 0, 1], mongo.port).into();
    let (proxy, rec) = common::stalling_proxy(upstream, "createIndexes");
    let mut s = Server::start(
        Opts::default()
            .mongo(
                format!("mongodb://{proxy}/?directConnection=true"),
                "operations_index_never_built",
            )
            .arg(&format!("--shutdown-grace-secs {}", GRACE.as_secs())),
    );
    let acked = post_n(&s, 5);
    assert_eq!(acked.len(), 5);
    wait_for(
        Duration::from_secs(30),
        "the index build to be sent",
        || {
            common::app_commands(&rec)
                .iter()
                .any(|(_, c)| c.contains_key("createIndexes"))
        },
    );
    let signalled = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait(Duration::from_secs(60));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", s.logs());
    assert!(took < STOP_MAX, "the stop took {took:?}:\n{}", s.logs());
    assert!(
        s.logs().contains("stopped; 5 record(s) remain in the WAL"),
        "{}",
        s.logs()
    );
}
