//! WAL recovery, black-box: the real binary over real sockets, stopped by
//! SIGTERM or SIGKILL, its data directory damaged between runs the way disks
//! and crashes damage files, then started again.
//!
//! What must hold after every restart:
//! - the server starts (recovery never refuses, never crash-loops);
//! - every acknowledged id whose record was not itself damaged is still in
//!   the WAL, exactly once, in id order (read back here with busyapi's own
//!   decoder, `busyapi::wal::record`);
//! - new ids are above every id the data directory still knows of, even when
//!   the only memory of them is the checkpoint or an empty segment header;
//! - cut or skipped bytes are in `quarantine/` unless they were all zeros.
//!
//! Servers without a MongoDB get an address nobody listens on, so nothing
//! they take is delivered; `--shutdown-grace-secs 0` lets them stop soon.
//!
//! | module      | what it covers                                            |
//! |-------------|-----------------------------------------------------------|
//! | [`ids`]     | ids increase within a run, across restarts, past delivery |
//! | [`crashes`] | SIGKILLs under load; a second process on the same dir     |
//! | [`damage`]  | torn tails, zeros, flipped bits, damaged and torn headers |
//! | [`quarantine`] | copies are durable before the bytes they keep are cut |
//! | [`fresh_dir`] | a new data directory (or a torn first segment) starts above the node's ids in MongoDB |
//! | [`upgrade`] | a version-1 WAL (the fixture) is delivered exactly once by today's binary |
mod common;

#[path = "wal_recovery/crashes.rs"]
mod crashes;
#[path = "wal_recovery/damage.rs"]
mod damage;
#[path = "wal_recovery/fresh_dir.rs"]
mod fresh_dir;
#[path = "wal_recovery/ids.rs"]
mod ids;
#[path = "wal_recovery/quarantine.rs"]
mod quarantine;
#[path = "wal_recovery/upgrade.rs"]
mod upgrade;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use busyapi::wal::segment::{self, HEADER_BYTES, QUARANTINE_DIR};
use mongodb::bson::doc;
use mongodb::sync::Client;

use common::{
    DELIVERY, Opts, Server, record_spans, segment_bytes, shared_mongo, stored_ids, usages,
    write_segment,
};

/// Time allowed for a server to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

/// A data directory of its own, removed when the test ends.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    (tmp, dir)
}

/// A server that cannot reach any MongoDB: its WAL only grows.
fn offline(dir: &Path) -> Opts {
    Opts::default().data_dir(dir).arg("--shutdown-grace-secs 0")
}

/// A server that delivers to the shared dev MongoDB, database `db`.
fn online(dir: &Path, db: &str) -> Opts {
    Opts::default()
        .data_dir(dir)
        .mongo(shared_mongo().uri(), db)
        .arg("--shutdown-grace-secs 20")
}

/// SIGTERM, and the stop must be clean.
fn stop(server: &mut Server) {
    let status = server.terminate(STOP);
    assert!(status.success(), "exit {status:?}; log:\n{}", server.logs());
}

/// POSTs `n` distinct usages one after another on one keep-alive connection.
fn post_many(server: &Server, n: usize) -> Vec<u64> {
    let mut c = server.connect();
    (0..n)
        .map(|i| {
            c.post_json(&format!(
                r#"{{"patientId": "seq-{i}", "timestamp": {i}, "medication": "Albuterol"}}"#
            ));
            c.response().id()
        })
        .collect()
}

fn assert_strictly_increasing(ids: &[u64], what: &str) {
    if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
        panic!("{what} are not strictly increasing: {} then {}", w[0], w[1]);
    }
}

fn assert_all_above(ids: &[u64], floor: u64, what: &str) {
    if let Some(id) = ids.iter().find(|&&id| id <= floor) {
        panic!("{what}: id {id} is not above {floor}, an id handed out before");
    }
}

/// Where segment `no`'s last intact record ends. (Segments are
/// preallocated: the file's length says nothing about the log's end.)
fn logical_end(dir: &Path, no: u64) -> usize {
    record_spans(&segment_bytes(dir, no), |r| r.id.raw())
        .last()
        .map_or(HEADER_BYTES as usize, |(span, _)| span.end)
}

/// The ids of every intact record in the data directory, in log order.
fn wal_ids(dir: &Path) -> Vec<u64> {
    segment::list(dir)
        .expect("list segments")
        .into_iter()
        .flat_map(|no| record_spans(&segment_bytes(dir, no), |r| r.id.raw()))
        .map(|(_, id)| id)
        .collect()
}

/// The quarantine directory's files, by name, with their bytes.
fn quarantined(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir.join(QUARANTINE_DIR))
        .expect("read quarantine/")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).expect("read a quarantined file"))
        })
        .collect();
    files.sort();
    files
}

fn newest_segment(dir: &Path) -> u64 {
    *segment::list(dir)
        .expect("list segments")
        .last()
        .expect("at least one segment")
}

fn rewrite(dir: &Path, no: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = segment_bytes(dir, no);
    edit(&mut bytes);
    write_segment(dir, no, &bytes);
}

/// Serialises the tests that run busyapi against the shared dev MongoDB.
/// Seen under gdb: SecantusDB can spin for good inside WiredTiger in
/// `createIndexes` (busyapi creates its index at start) while another
/// client bulk-inserts, so two of these tests must not overlap.
fn mongo_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
