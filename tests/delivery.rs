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
//!
//! | module           | what it covers                                          |
//! |------------------|---------------------------------------------------------|
//! | [`documents`]    | the stored document: its id, fields and BSON dates      |
//! | [`crashes`]      | SIGKILLs, a crash after an insert, segments left behind |
//! | [`outages`]      | MongoDB unreachable, down at start, killed mid-stream;  |
//! |                  | index before inserts; a refusal is no outage            |
//! | [`batching`]     | a lone request goes at once, a burst in capped batches  |
//! | [`batches`]      | batch POSTs stored once each, retried after a SIGKILL   |
//! |                  | between fsync and 201, or after a batch torn on disk    |
//! | [`dead_letters`] | a usage MongoDB refuses for good (a validator, another  |
//! |                  | unique index) is dead-lettered once; delivery goes on   |
//! | [`event_ids`]    | one document per `(patientId, eventId)` across retries, |
//! |                  | nodes and a SIGKILL; none without an eventId is merged  |
mod common;

#[path = "delivery/batches.rs"]
mod batches;
#[path = "delivery/batching.rs"]
mod batching;
#[path = "delivery/crashes.rs"]
mod crashes;
#[path = "delivery/dead_letters.rs"]
mod dead_letters;
#[path = "delivery/documents.rs"]
mod documents;
#[path = "delivery/event_ids.rs"]
mod event_ids;
#[path = "delivery/outages.rs"]
mod outages;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use mongodb::bson::{Bson, Document, doc};
use mongodb::sync::Collection;

use common::{Server, post_request, stored_ids};

/// Size of a WAL segment header; records follow it.
const SEGMENT_HEADER_BYTES: usize = 40;
/// A record frame starts with `len: u32` and `crc: u32`.
const FRAME_HEADER_BYTES: usize = 8;

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

/// A server delivering into database `db` of the shared dev MongoDB, whose
/// usages collection has a unique index on `patientId`: a second usage of
/// one patient is a document MongoDB refuses (code 11000, not on `_id`).
fn server_with_unique_patient_ids(db: &str) -> (Collection<Document>, Server) {
    let mongo = common::shared_mongo();
    let coll = common::fresh_usages(mongo, db);
    common::unique_patient_ids(&coll);
    let server = Server::start(common::Opts::default().mongo(mongo.uri(), db));
    (coll, server)
}

fn stat(server: &Server, key: &str) -> serde_json::Value {
    server.stats()[key].clone()
}

fn backlog(server: &Server) -> u64 {
    server.stat("walBacklogRecords")
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
        let mut req = Vec::new();
        for i in ids.len()..ids.len() + k {
            let body = format!(r#"{{"patientId": "b{i}", "timestamp": {i}, "medication": "m"}}"#);
            req.extend(post_request(&body));
        }
        c.send(&req);
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
