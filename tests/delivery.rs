//! Delivery to MongoDB, end to end: the real binary, the real dev MongoDB
//! (SecantusDB), real SIGKILLs and real outages; no mocks.
//!
//! Exactly once is checked against three sets: the ids acknowledged with a
//! 201, the ids stored in MongoDB, and the ids of the intact records in the
//! WAL, read here from the byte format documented in `src/wal/mod.rs` (not
//! with busyapi's own decoder) right after each kill. A record can be in the
//! WAL without its 201 having reached the client (the kill came between the
//! fsync and the reply): it must be delivered all the same. So:
//! acknowledged ⊆ stored = in the WAL, and no id is stored twice.
//!
//! Each test has its own database (or its own MongoDB when it stops it) and
//! its own data directory.
mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::IndexModel;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::sync::Collection;

use common::{Mongo, Opts, Server, USAGE, load, shared_mongo, wait_for};

/// Time for a backlog to reach MongoDB: the dev server stores ~13-16K
/// documents a second, and other suites may share the two cores.
const DELIVERY: Duration = Duration::from_secs(120);
/// Size of a WAL segment header; records follow it.
const SEGMENT_HEADER_BYTES: usize = 40;
/// A record frame starts with `len: u32` and `crc: u32`.
const FRAME_HEADER_BYTES: usize = 8;

// ---------------------------------------------------------------- helpers

/// Creates the (empty) collection before busyapi first writes to it.
///
/// The dev MongoDB (SecantusDB 0.7.0b3) can deadlock, for good, when an
/// `insert` and a `createIndexes` create the same collection at the same
/// moment; busyapi's sender and index threads do just that when they both
/// see MongoDB come back. A real mongod handles the race; here it would only
/// hang the test, so every test starts from an existing collection.
fn fresh_usages(mongo: &Mongo, db: &str) -> Collection<Document> {
    let database = mongo.client().database(db);
    database
        .create_collection("usages")
        .run()
        .expect("create the collection");
    database.collection("usages")
}

/// Every `_id` stored, in order, as the ids the API hands out.
fn stored_ids(coll: &Collection<Document>) -> Vec<u64> {
    let mut ids: Vec<u64> = coll
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .run()
        .expect("find")
        .map(|d| match d.expect("doc").get("_id") {
            Some(Bson::Int64(id)) => *id as u64,
            other => panic!("_id is not an Int64: {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Asserts acknowledged ⊆ stored = `in_wal`, each id stored once.
fn assert_exactly_once(coll: &Collection<Document>, acked: &[u64], in_wal: &BTreeSet<u64>) {
    let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(acked_set.len(), acked.len(), "an id was acknowledged twice");
    let ids = stored_ids(coll);
    let stored: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(stored.len(), ids.len(), "an id is stored twice");
    let count = coll.count_documents(doc! {}).run().expect("count");
    assert_eq!(count, ids.len() as u64, "documents without a distinct id");
    let lost: Vec<_> = acked_set.difference(&stored).take(10).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in MongoDB (first 10 of {} acknowledged): {lost:?}",
        acked.len()
    );
    let foreign: Vec<_> = stored.difference(in_wal).take(10).collect();
    assert!(
        foreign.is_empty(),
        "stored but never in the WAL: {foreign:?}"
    );
    let undelivered: Vec<_> = in_wal.difference(&stored).take(10).collect();
    assert!(
        undelivered.is_empty(),
        "intact WAL records never delivered: {undelivered:?}"
    );
}

fn stat(server: &Server, key: &str) -> serde_json::Value {
    server.stats()[key].clone()
}

fn backlog(server: &Server) -> u64 {
    stat(server, "walBacklogRecords")
        .as_u64()
        .expect("walBacklogRecords")
}

/// Waits for the backlog to reach MongoDB; on a timeout, shows the log.
fn wait_drained(server: &Server) {
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(DELIVERY, "the WAL backlog to reach MongoDB", || {
            backlog(server) == 0
        })
    }));
    if let Err(e) = waited {
        eprintln!("busyapi's log:\n{}", server.logs());
        std::panic::resume_unwind(e);
    }
}

/// The value of one series of `/metrics`, e.g. `name_count` or
/// `name_total{kind="write"}`.
fn metric(server: &Server, series: &str) -> f64 {
    let text = server.get("/metrics").text();
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Warn lines saying MongoDB cannot be reached.
fn outage_warnings(server: &Server) -> usize {
    server
        .logs()
        .lines()
        .filter(|l| l.contains("level=WARN") && l.contains("MongoDB is unreachable"))
        .count()
}

/// POSTs `n` usages pipelined on one connection, 100 per write.
fn post_burst(server: &Server, n: usize) -> Vec<u64> {
    let mut c = server.connect();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let k = (n - ids.len()).min(100);
        let mut req = String::new();
        for i in ids.len()..ids.len() + k {
            let body = format!(r#"{{"patientId": "b{i}", "timestamp": {i}, "medication": "m"}}"#);
            req.push_str(&format!(
                "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        c.send(req.as_bytes());
        for _ in 0..k {
            ids.push(c.response().id());
        }
    }
    ids
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Segment files `(number, end of the last intact record)`, oldest first.
/// (Files are preallocated, so their length says nothing.)
fn segments(dir: &Path) -> Vec<(u64, u64)> {
    let mut segs: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().into_string().ok()?;
            let no = name.strip_suffix(".wal")?.parse().ok()?;
            // A running server may delete the file meanwhile.
            let bytes = std::fs::read(e.path()).ok()?;
            Some((no, walk(&bytes).0 as u64))
        })
        .collect();
    segs.sort_unstable();
    segs
}

/// Walks a segment's frames (length and CRC must check out): the end of the
/// last intact one and the ids of all of them.
fn walk(bytes: &[u8]) -> (usize, Vec<u64>) {
    let mut ids = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos + FRAME_HEADER_BYTES <= bytes.len() {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let (len, crc) = (word(pos) as usize, word(pos + 4));
        let Some(payload) = bytes.get(pos + FRAME_HEADER_BYTES..pos + FRAME_HEADER_BYTES + len)
        else {
            break;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[pos..pos + 4]);
        h.update(payload);
        if len < 8 || h.finalize() != crc {
            break;
        }
        ids.push(u64::from_le_bytes(payload[..8].try_into().expect("8")));
        pos += FRAME_HEADER_BYTES + len;
    }
    (pos, ids)
}

/// Ids of the intact records (length and CRC check out) in every segment.
fn wal_ids(dir: &Path) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for (no, _) in segments(dir) {
        let bytes = std::fs::read(dir.join(format!("{no:020}.wal"))).expect("segment");
        ids.extend(walk(&bytes).1);
    }
    ids
}

/// The delivery checkpoint as `(segment, offset, last_seq)`, if stored.
fn checkpoint(dir: &Path) -> Option<(u64, u64, u64)> {
    let b = std::fs::read(dir.join("checkpoint")).ok()?;
    assert_eq!((b.len(), &b[..8]), (40, &b"BUSYCKP1"[..]), "checkpoint");
    let crc = u32::from_le_bytes(b[32..36].try_into().expect("4"));
    assert_eq!(crc, crc32fast::hash(&b[..32]), "checkpoint CRC");
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    Some((word(8), word(16), word(24)))
}

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

// ---------------------------------------------------------------- documents

#[test]
fn a_posted_usage_is_stored_under_its_id_with_its_fields_and_bson_dates() {
    const DB: &str = "delivery_fields";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let before_ms = now_ms();
    let text_id = server.post(USAGE).id();
    let number_id = server
        .post(r#"{"patientId": 4242, "timestamp": "2016-11-01T09:11:51.250-05:00", "medication": "Fluticasone 110 mcg"}"#)
        .id();
    let after_ms = now_ms();
    wait_for(DELIVERY, "both usages in MongoDB", || {
        coll.count_documents(doc! {}).run().expect("count") == 2
    });
    for (id, patient, medication, timestamp_ms) in [
        (text_id, "100", "Albuterol", 1_478_009_511_000),
        (number_id, "4242", "Fluticasone 110 mcg", 1_478_009_511_250),
    ] {
        let d = coll
            .find_one(doc! {"_id": id as i64})
            .run()
            .expect("find")
            .unwrap_or_else(|| panic!("no document with _id {id}"));
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["_id", "patientId", "timestamp", "medication", "receivedAt"]
        );
        assert_eq!(d.get("_id"), Some(&Bson::Int64(id as i64)));
        assert_eq!(d.get("patientId"), Some(&Bson::String(patient.into())));
        assert_eq!(d.get("medication"), Some(&Bson::String(medication.into())));
        assert_eq!(
            d.get("timestamp"),
            Some(&Bson::DateTime(DateTime::from_millis(timestamp_ms)))
        );
        match d.get("receivedAt") {
            Some(Bson::DateTime(t)) => assert!(
                (before_ms - 1000..=after_ms + 1000).contains(&t.timestamp_millis()),
                "receivedAt {t} is not between {before_ms} and {after_ms} (ms)"
            ),
            other => panic!("receivedAt is not a date: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- crashes

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
}

#[test]
fn a_duplicate_key_on_another_unique_index_is_not_mistaken_for_a_replay() {
    const DB: &str = "delivery_unique_index";
    const WRITE_ERRORS: &str = r#"busyapi_mongo_errors_total{kind="write"}"#;
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let unique = IndexOptions::builder().unique(true).build();
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"patientId": 1})
            .options(unique)
            .build(),
    )
    .run()
    .expect("a unique index on patientId");
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let first = server.post(USAGE).id();
    let second = server.post(USAGE).id();
    wait_for(
        Duration::from_secs(60),
        "the second usage to be settled",
        || backlog(&server) == 0 || metric(&server, WRITE_ERRORS) >= 2.0,
    );
    // MongoDB stored the first and refused the second (same patientId): the
    // second is not in MongoDB, so it must not count as delivered, nor leave
    // the WAL.
    assert_eq!(stored_ids(&coll), [first]);
    assert_eq!(
        metric(&server, "busyapi_records_replayed_duplicate_total"),
        0.0,
        "usage {second} was taken for a replay"
    );
    assert!(
        backlog(&server) >= 1,
        "usage {second} left the WAL undelivered"
    );
}

// ---------------------------------------------------------------- outages

#[test]
fn usages_are_acknowledged_and_the_server_stays_ready_while_mongodb_is_unreachable() {
    let server = Server::start(Opts::default());
    let mut acked = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        acked.extend(post_burst(&server, 20));
        assert_eq!(server.get("/readyz").status, 200, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        Duration::from_secs(30),
        "the flusher to keep retrying",
        || stat(&server, "mongoErrors").as_u64() >= Some(2),
    );
    let s = server.stats();
    assert_eq!(s["mongoUp"], false);
    assert_eq!(s["ready"], true);
    assert_eq!(s["acknowledged"], acked.len());
    assert_eq!(s["walBacklogRecords"], acked.len());
    assert_eq!(outage_warnings(&server), 1, "{}", server.logs());
}

#[test]
fn with_mongodb_down_at_start_usages_are_acknowledged_and_drain_once_it_is_up() {
    const DB: &str = "delivery_down_at_start";
    let mut mongo = Mongo::start();
    let coll = fresh_usages(&mongo, DB);
    mongo.kill();
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let mut acked = post_burst(&server, 50);
    wait_for(Duration::from_secs(60), "three failed attempts", || {
        stat(&server, "mongoErrors").as_u64() >= Some(3)
    });
    acked.extend(post_burst(&server, 50));
    assert_eq!(stat(&server, "mongoUp"), false);
    assert_eq!(backlog(&server), 100);

    mongo.restart();
    wait_drained(&server);
    assert_eq!(stat(&server, "mongoUp"), true);
    acked.sort_unstable();
    assert_eq!(stored_ids(&coll), acked);
    let logs = server.logs();
    assert_eq!(
        outage_warnings(&server),
        1,
        "one warning, not one per retry:\n{logs}"
    );
    assert_eq!(
        logs.matches("MongoDB is reachable again").count(),
        1,
        "{logs}"
    );
}

#[test]
fn mongodb_killed_mid_stream_under_load_loses_nothing_and_duplicates_nothing() {
    const DB: &str = "delivery_mid_stream";
    let mut mongo = Mongo::start();
    let coll = fresh_usages(&mongo, DB);
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(server.addr, 4, stop.clone());
    wait_for(Duration::from_secs(60), "deliveries under way", || {
        stat(&server, "flushed").as_u64() >= Some(500)
    });
    mongo.kill();
    wait_for(
        Duration::from_secs(30),
        "the flusher to see the outage",
        || stat(&server, "mongoUp") == false,
    );
    let during = stat(&server, "acknowledged").as_u64();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        stat(&server, "acknowledged").as_u64() > during,
        "acknowledged during the outage"
    );
    mongo.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acked = clients.join().expect("load");

    wait_drained(&server);
    assert_eq!(stat(&server, "mongoUp"), true);
    // The server was never killed: the WAL holds exactly what was acknowledged.
    let in_wal = acked.iter().copied().collect();
    assert_exactly_once(&coll, &acked, &in_wal);
    assert_eq!(outage_warnings(&server), 1, "{}", server.logs());
}

// ---------------------------------------------------------------- the WAL's size

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

// ---------------------------------------------------------------- batching

#[test]
fn a_lone_request_reaches_mongodb_quickly_instead_of_waiting_for_a_full_batch() {
    const DB: &str = "delivery_trickle";
    const REQUESTS: usize = 5;
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let server = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg("--flush-interval-ms 50"),
    );
    let mut latencies = Vec::new();
    for _ in 0..REQUESTS {
        let id = server.post(USAGE).id() as i64;
        let acked_at = Instant::now();
        wait_for(Duration::from_secs(10), "the lone usage in MongoDB", || {
            coll.find_one(doc! {"_id": id})
                .run()
                .expect("find")
                .is_some()
        });
        latencies.push(acked_at.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort_unstable();
    assert!(
        latencies[REQUESTS / 2] < Duration::from_secs(2),
        "{latencies:?}"
    );
    // Each went out alone, in a batch of one.
    assert_eq!(
        metric(&server, "busyapi_flush_batch_records_count"),
        REQUESTS as f64
    );
    assert_eq!(
        metric(&server, "busyapi_flush_batch_records_sum"),
        REQUESTS as f64
    );
}

#[test]
fn a_burst_reaches_mongodb_in_batches_of_at_most_flush_max_records() {
    const DB: &str = "delivery_batches";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let server = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg("--flush-max-records 10"),
    );
    let mut acked = post_burst(&server, 1000);
    wait_drained(&server);
    acked.sort_unstable();
    assert_eq!(stored_ids(&coll), acked);
    let batches = metric(&server, "busyapi_flush_batch_records_count");
    assert!(batches >= 100.0, "{batches} batches");
    assert_eq!(metric(&server, "busyapi_flush_batch_records_sum"), 1000.0);
}
