//! The WAL quota (`--wal-max-bytes`): once the undelivered backlog reaches
//! it, a POST is refused at once with 503 and Retry-After, nothing is
//! written, memory stays put however hard clients push, and 201s come back
//! by themselves once MongoDB has taken enough of the backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use common::{Opts, USAGE};

/// Longest a refusal at the quota may take; it needs no disk and no
/// MongoDB, so anything near this means it waited for something.
const REFUSAL_MAX: Duration = Duration::from_secs(1);
/// How long clients hammer the full server.
const HAMMER: Duration = Duration::from_secs(3);
/// Hammering connections, and requests each pipelines per write.
const HAMMER_CONNS: usize = 4;
const HAMMER_PIPELINE: usize = 32;
/// Resident memory the server may gain while refusing, after warm-up.
/// Every refusal is answered from per-connection buffers; what the clients
/// send is many times this.
const RSS_GROWTH_KIB_MAX: u64 = 16 * 1024;

fn quota_server(opts: Opts) -> Server {
    Server::start(opts.arg(&format!("--wal-max-bytes {QUOTA_BYTES}")))
}

/// What one hammering connection saw.
struct Hammered {
    requests: u64,
    bytes_sent: u64,
    slowest_round: Duration,
}

/// Pipelines POSTs at the full server until `stop`; every answer must be
/// the quota's 503.
fn hammer(s: &Server, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Hammered> {
    let addr = s.addr;
    std::thread::spawn(move || {
        let mut c = Http::connect(addr);
        let bodies: Vec<String> = (0..HAMMER_PIPELINE as u64).map(big_usage).collect();
        let raw: Vec<u8> = bodies.iter().flat_map(|b| post_request(b)).collect();
        let mut seen = Hammered {
            requests: 0,
            bytes_sent: 0,
            slowest_round: Duration::ZERO,
        };
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            c.send(&raw);
            for _ in 0..HAMMER_PIPELINE {
                assert_unavailable(&c.response(), "over its quota");
            }
            seen.slowest_round = seen.slowest_round.max(started.elapsed());
            seen.requests += HAMMER_PIPELINE as u64;
            seen.bytes_sent += raw.len() as u64;
        }
        seen
    })
}

#[test]
fn at_the_quota_a_post_gets_503_at_once_nothing_is_written_and_memory_stays_bounded() {
    let s = quota_server(Opts::default());
    let acked = fill_to_quota(&s);
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the quota"
    );
    assert!(s.stat("walBacklogBytes") >= QUOTA_BYTES, "{}", s.stats());
    assert_unavailable(&s.get("/readyz"), "over its quota");
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.stats()["ready"], false);
    let before = s.written();

    for _ in 0..20 {
        let started = Instant::now();
        let r = s.post(USAGE);
        let took = started.elapsed();
        assert_unavailable(&r, "over its quota");
        assert!(took < REFUSAL_MAX, "a refusal at the quota took {took:?}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..HAMMER_CONNS)
        .map(|_| hammer(&s, stop.clone()))
        .collect();
    // The first moments grow buffers to their working size.
    std::thread::sleep(Duration::from_millis(500));
    let baseline_kib = s.rss_kib();
    let mut peak_kib = baseline_kib;
    let until = Instant::now() + HAMMER;
    while Instant::now() < until {
        peak_kib = peak_kib.max(s.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Hammered> = clients
        .into_iter()
        .map(|h| h.join().expect("a hammering client"))
        .collect();
    let requests: u64 = seen.iter().map(|h| h.requests).sum();
    let sent_kib = seen.iter().map(|h| h.bytes_sent).sum::<u64>() / 1024;
    let slowest = seen.iter().map(|h| h.slowest_round).max().expect("clients");
    eprintln!(
        "{requests} refusals ({sent_kib} KiB), slowest round {slowest:?}, VmRSS {baseline_kib} -> {peak_kib} KiB"
    );
    assert!(requests > 1000, "only {requests} refusals in {HAMMER:?}");
    assert!(
        slowest < REFUSAL_MAX,
        "a round of {HAMMER_PIPELINE} refusals took {slowest:?}"
    );
    assert!(
        peak_kib - baseline_kib < RSS_GROWTH_KIB_MAX,
        "VmRSS grew from {baseline_kib} KiB to {peak_kib} KiB while refusing \
         {requests} requests ({sent_kib} KiB)"
    );
    assert_eq!(s.written(), before, "a refused usage was written");
    assert!(s.stat("walBacklogBytes") >= QUOTA_BYTES);
}

#[test]
fn once_mongodb_is_back_and_the_backlog_drains_201s_resume_by_themselves() {
    const DB: &str = "operations_quota_resume";
    let mut mongo = mongo_down_with(DB);
    let s = quota_server(Opts::default().mongo(mongo.uri(), DB));
    let mut acked = fill_to_quota(&s);
    assert_unavailable(&s.post(USAGE), "over its quota");
    assert_unavailable(&s.get("/readyz"), "over its quota");

    mongo.restart();
    wait_for(DELIVERY, "a POST to be acknowledged again", || {
        let r = s.post(USAGE);
        if r.status == 201 {
            acked.push(r.id());
            return true;
        }
        assert_unavailable(&r, "over its quota");
        false
    });
    let ready = s.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    wait_drained(&s);
    assert_stored_exactly(&mongo, DB, &acked);
}
