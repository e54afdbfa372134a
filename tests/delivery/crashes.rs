//! Crashes and restarts: SIGKILLs under load at random moments, a crash
//! between MongoDB's confirmation and the checkpoint (whose replay is told
//! apart from a real duplicate key), and restart after restart that must not
//! leave delivered segment files behind.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use common::{Opts, USAGE, fresh_usages, load, metric, shared_mongo, wait_drained, wait_for};

/// xorshift64 for kill timings, seeded from the clock; the seed is printed.
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let seed = now_ms() as u64 | 1;
        eprintln!("random seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn acknowledged_usages_survive_repeated_sigkills_under_load_exactly_once() {
    const DB: &str = "delivery_sigkill";
    const KILLS: usize = 4;
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(Opts::default().mongo(mongo.uri(), DB).data_dir(&data));
    let mut rng = Rng::from_clock();
    let (mut acked, mut in_wal) = (Vec::new(), BTreeSet::new());
    for round in 0..KILLS {
        if round > 0 {
            server.restart();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(server.addr, 6, stop.clone());
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let round_acked = clients.join().expect("load");
        assert!(
            !round_acked.is_empty(),
            "round {round} acknowledged nothing"
        );
        acked.extend(round_acked);
        in_wal.extend(wal_ids(&data));
    }
    server.restart();
    wait_drained(&server);
    assert_exactly_once(&coll, &acked, &in_wal);
}

#[test]
fn a_crash_right_after_a_confirmed_insert_is_replayed_without_duplicates() {
    const DB: &str = "delivery_after_insert";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = Opts::default().mongo(mongo.uri(), DB).data_dir(&data);

    let mut crashing = Server::start(
        opts.clone()
            .env("FAILPOINTS", "flusher::after_insert=return"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(crashing.addr, 4, stop.clone());
    let status = crashing.wait(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let acked = clients.join().expect("load");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", crashing.logs());
    wait_for(Duration::from_secs(10), "the failpoint's message", || {
        crashing.logs().contains("failpoint flusher::after_insert")
    });
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the crash"
    );

    // MongoDB has the confirmed batch (and possibly one more that was in
    // flight); the checkpoint does not: wait until MongoDB has settled.
    let mut before = u64::MAX;
    wait_for(Duration::from_secs(30), "MongoDB to settle", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = coll.count_documents(doc! {}).run().expect("count");
        std::mem::replace(&mut before, now) == now
    });
    assert!(before > 0, "the failpoint fired before anything was stored");
    let in_wal = wal_ids(&data);

    let server = Server::start(opts);
    wait_drained(&server);
    assert_exactly_once(&coll, &acked, &in_wal);
    assert_eq!(
        metric(&server, "busyapi_records_replayed_duplicate_total"),
        before as f64,
        "every document stored before the crash is replayed once, as a duplicate"
    );
    assert_eq!(
        metric(&server, "busyapi_id_collisions_total"),
        0.0,
        "a replay was reported as an id collision"
    );
}

#[test]
fn a_duplicate_key_on_another_unique_index_is_not_mistaken_for_a_replay() {
    const DB: &str = "delivery_unique_index";
    let (coll, server) = server_with_unique_patient_ids(DB);
    let first = server.post(USAGE).id();
    let second = server.post(USAGE).id();
    wait_drained(&server);
    // MongoDB stored the first and refused the second (same patientId): the
    // second is not in MongoDB's usages, so it must not count as delivered
    // there; it is in the dead-letter collection instead.
    assert_eq!(stored_ids(&coll), [first]);
    assert_eq!(
        metric(&server, "busyapi_records_replayed_duplicate_total"),
        0.0,
        "usage {second} was taken for a replay"
    );
    let dead = common::dead_letters(common::shared_mongo(), DB);
    assert_eq!(
        stored_ids(&dead),
        [second],
        "usage {second} left the WAL undelivered"
    );
}

#[test]
fn delivered_segments_are_deleted_so_restarts_do_not_pile_up_wal_files() {
    const DB: &str = "delivery_segments";
    const RUNS: usize = 6;
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(Opts::default().mongo(mongo.uri(), DB).data_dir(&data));
    let mut acked = Vec::new();
    for run in 0..RUNS {
        if run > 0 {
            server.restart();
            wait_for(
                Duration::from_secs(30),
                "the delivered, sealed segment to go",
                || segments(&data).len() == 1,
            );
        }
        acked.extend(post_burst(&server, 200));
        wait_drained(&server);
        let segs = segments(&data);
        let &(active, len) = segs.last().expect("a segment");
        let last_id = *acked.iter().max().expect("ids");
        // Node 0: an id is its sequence number.
        wait_for(
            Duration::from_secs(10),
            "the checkpoint to pass the delivered records",
            || checkpoint(&data) == Some((active, len, last_id)),
        );
        assert_eq!(segs.len(), 1, "run {run}: {segs:?}");
        assert_eq!(stat(&server, "walSegments"), 1);
        if run % 2 == 0 {
            server.kill9();
        } else {
            assert!(server.terminate(Duration::from_secs(30)).success());
        }
    }
    assert_eq!(segments(&data).len(), 1);
    acked.sort_unstable();
    assert_eq!(stored_ids(&coll), acked);
}
