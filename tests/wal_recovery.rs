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
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busyapi::limits::SEQ_MAX;
use busyapi::wal::checkpoint;
use busyapi::wal::record::{self, Decoded};
use busyapi::wal::segment::{self, HEADER_BYTES, QUARANTINE_DIR};
use mongodb::bson::{Document, doc};
use mongodb::sync::Client;

use common::{Mongo, Opts, Server, load, shared_mongo, wait_for};

/// Time allowed for a few dozen records to reach the dev MongoDB, or for a
/// few thousand after the kill loop; generous because other suites share
/// the two cores.
const DELIVERY: Duration = Duration::from_secs(60);
/// Time allowed for the dev MongoDB to answer one query.
const MONGO_ANSWER: Duration = Duration::from_secs(20);
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

/// SIGTERM, and the stop must be clean. busyapi announces "listening" a
/// moment before it installs its SIGTERM handler; one answered request first
/// keeps the signal out of that gap.
fn stop(server: &mut Server) {
    assert_eq!(server.get("/healthz").status, 200);
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

/// Every intact record of a segment file as (byte range, id), found the way
/// recovery finds them: decode, and past damage resynchronise on the next
/// record with a higher id.
fn record_spans(bytes: &[u8]) -> Vec<(Range<usize>, u64)> {
    let mut spans = Vec::new();
    let (mut pos, mut last) = (HEADER_BYTES as usize, 0);
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Decoded::Record(r, n) if r.id > last => {
                spans.push((pos..pos + n, r.id));
                last = r.id;
                pos += n;
            }
            _ => match record::resync(&bytes[pos..], last) {
                Some(skip) => pos += skip,
                None => break,
            },
        }
    }
    spans
}

fn segment_bytes(dir: &Path, no: u64) -> Vec<u8> {
    fs::read(segment::path_of(dir, no)).expect("read a segment")
}

/// Where segment `no`'s last intact record ends. (Segments are
/// preallocated: the file's length says nothing about the log's end.)
fn logical_end(dir: &Path, no: u64) -> usize {
    record_spans(&segment_bytes(dir, no))
        .last()
        .map_or(HEADER_BYTES as usize, |(span, _)| span.end)
}

/// The ids of every intact record in the data directory, in log order.
fn wal_ids(dir: &Path) -> Vec<u64> {
    segment::list(dir)
        .expect("list segments")
        .into_iter()
        .flat_map(|no| record_spans(&segment_bytes(dir, no)))
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
    fs::write(segment::path_of(dir, no), bytes).expect("rewrite a segment");
}

/// Every `_id` in `db.usages`, sorted. Tests poll with one client each: a
/// client per poll leaves connections and monitors behind, and the dev
/// MongoDB slows down under them. The driver has no client-side timeout, so
/// the query runs on its own thread and a MongoDB that stopped answering
/// fails the test instead of hanging it.
fn stored_ids(client: &Client, db: &str) -> Vec<u64> {
    let (client, db) = (client.clone(), db.to_owned());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ids: Vec<u64> = client
            .database(&db)
            .collection::<Document>("usages")
            .find(doc! {})
            .projection(doc! {"_id": 1})
            .run()
            .expect("find")
            .map(|d| d.expect("doc").get_i64("_id").expect("_id is an Int64") as u64)
            .collect();
        let _ = tx.send(ids);
    });
    let mut ids = rx
        .recv_timeout(MONGO_ANSWER)
        .expect("the dev MongoDB stopped answering a find");
    ids.sort_unstable();
    ids
}

/// Serialises the tests that run busyapi against the shared dev MongoDB.
/// Seen under gdb: SecantusDB can spin for good inside WiredTiger in
/// `createIndexes` (busyapi creates its index at start) while another
/// client bulk-inserts, so two of these tests must not overlap.
fn mongo_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Milliseconds drawn from `seed`, which the test prints, so the kill
/// moments differ from run to run and a failing run can be told apart.
fn random_ms(seed: &mut u64, range: Range<u64>) -> u64 {
    // xorshift64: enough to spread kill moments, no dependency needed.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    range.start + *seed % (range.end - range.start)
}

// ---------------------------------------------------------------- ids

#[test]
fn ids_are_positive_and_strictly_increasing_within_a_run() {
    let (_tmp, dir) = data_dir();
    let server = Server::start(offline(&dir));
    let sequential = post_many(&server, 50);
    assert!(sequential[0] > 0, "ids start above zero");
    assert_strictly_increasing(&sequential, "ids of one connection");

    let halt = Arc::new(AtomicBool::new(false));
    let concurrent = load(server.addr, 6, halt.clone());
    wait_for(
        Duration::from_secs(20),
        "300 concurrent acknowledgements",
        || server.stats()["acknowledged"].as_u64() >= Some(350),
    );
    halt.store(true, Ordering::Relaxed);
    let mut concurrent = concurrent.join().expect("load");
    assert_all_above(
        &concurrent,
        sequential[49],
        "concurrent POSTs after sequential ones",
    );
    concurrent.sort_unstable();
    assert_strictly_increasing(&concurrent, "ids of concurrent connections, sorted");
    assert_strictly_increasing(&wal_ids(&dir), "ids along the log");
}

#[test]
fn ids_keep_increasing_across_a_graceful_restart() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let before = post_many(&server, 20);
    stop(&mut server);
    server.restart();
    let after = post_many(&server, 20);
    assert_all_above(&after, before[19], "after a graceful restart");
    assert_strictly_increasing(&after, "ids after the restart");
    assert_eq!(wal_ids(&dir), [before, after].concat());
}

#[test]
fn ids_keep_increasing_across_a_sigkill_restart() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let before = post_many(&server, 20);
    server.kill9();
    server.restart();
    let after = post_many(&server, 20);
    assert_all_above(&after, before[19], "after a SIGKILL restart");
    assert_strictly_increasing(&after, "ids after the restart");
    assert_eq!(wal_ids(&dir), [before, after].concat());
}

/// Two runs against MongoDB: the first delivers its records; the second
/// passes the first's segment, so the flusher releases it, then delivers
/// records of its own. Left behind: the checkpoint, pointing past every
/// record of the newest segment, and that segment. Returns every id.
fn deliver_and_release(dir: &Path, db: &str, client: &Client) -> Vec<u64> {
    let mut server = Server::start(online(dir, db));
    let first = post_many(&server, 20);
    wait_for(DELIVERY, "the first run's records in MongoDB", || {
        stored_ids(client, db) == first
    });
    stop(&mut server);
    let mut server = Server::start(online(dir, db));
    wait_for(DELIVERY, "the delivered segment to be released", || {
        segment::list(dir).expect("list").len() == 1
    });
    let all = [first, post_many(&server, 20)].concat();
    wait_for(DELIVERY, "the second run's records in MongoDB", || {
        stored_ids(client, db) == all
    });
    stop(&mut server);
    let newest = newest_segment(dir);
    let ckpt = checkpoint::load(dir).expect("load").expect("a checkpoint");
    assert_eq!(segment::list(dir).expect("list"), [newest]);
    assert_eq!(
        (ckpt.segment_no, ckpt.offset, ckpt.last_seq),
        (newest, logical_end(dir, newest) as u64, all[39] & SEQ_MAX),
        "the graceful stop stores a checkpoint past every delivered record"
    );
    all
}

#[test]
fn ids_stay_above_delivered_ones_and_new_records_reach_mongodb_when_only_the_checkpoint_is_left() {
    let db = "wal_recovery_only_checkpoint";
    let (_tmp, dir) = data_dir();
    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let delivered = deliver_and_release(&dir, db, &client);
    // Every record is in MongoDB, so losing the segment files loses nothing:
    // the checkpoint alone remembers how far ids went, and it points into a
    // segment number that no longer exists.
    for no in segment::list(&dir).expect("list") {
        fs::remove_file(segment::path_of(&dir, no)).expect("remove a segment");
    }
    // A run while MongoDB is out of reach leaves that checkpoint in place
    // and its own records in the WAL...
    let mut server = Server::start(offline(&dir));
    let waiting = post_many(&server, 5);
    assert_all_above(&waiting, delivered[39], "with only the checkpoint left");
    stop(&mut server);
    // ...and the next run, with MongoDB back, must deliver them all.
    let server = Server::start(online(&dir, db));
    let new = post_many(&server, 2);
    assert_all_above(&new, waiting[4], "after the run without MongoDB");
    let all = [delivered, waiting, new].concat();
    wait_for(DELIVERY, "every later record in MongoDB", || {
        stored_ids(&client, db) == all
    });
}

#[test]
fn ids_stay_above_delivered_ones_when_the_checkpoint_is_damaged_and_only_an_empty_segment_is_left()
{
    let db = "wal_recovery_empty_segment";
    let (_tmp, dir) = data_dir();
    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let delivered = deliver_and_release(&dir, db, &client);
    // A third run passes the second's segment and releases it; what is left
    // is its own segment, holding no record: only its header's base seq
    // remembers the ids.
    let mut server = Server::start(online(&dir, db));
    let own = newest_segment(&dir);
    wait_for(DELIVERY, "the second run's segment to be released", || {
        segment::list(&dir).expect("list") == [own]
    });
    stop(&mut server);
    assert!(
        record_spans(&segment_bytes(&dir, own)).is_empty(),
        "the remaining segment holds no record"
    );
    let ckpt_path = dir.join("checkpoint");
    let mut ckpt = fs::read(&ckpt_path).expect("read the checkpoint");
    ckpt[26] ^= 0x40; // inside last_seq: the CRC no longer matches
    fs::write(&ckpt_path, ckpt).expect("damage the checkpoint");
    assert_eq!(checkpoint::load(&dir).expect("load"), None);

    let server = Server::start(online(&dir, db));
    let new = post_many(&server, 5);
    assert_all_above(&new, delivered[39], "with only an empty segment left");
    let all = [delivered, new].concat();
    wait_for(DELIVERY, "the new records in MongoDB", || {
        stored_ids(&client, db) == all
    });
}

// ---------------------------------------------------------------- SIGKILL

#[test]
fn every_acknowledged_id_survives_repeated_sigkills_under_load_and_reaches_mongodb_once() {
    let (_tmp, dir) = data_dir();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments seeded with {seed}");
    let mut server = Server::start(offline(&dir));
    let mut acked: Vec<u64> = Vec::new();
    for round in 0..5 {
        let halt = Arc::new(AtomicBool::new(false));
        let clients = load(server.addr, 8, halt.clone());
        let acknowledged_before = server.stats()["acknowledged"].as_u64();
        wait_for(
            Duration::from_secs(20),
            "the load to be acknowledged",
            || server.stats()["acknowledged"].as_u64() > acknowledged_before,
        );
        std::thread::sleep(Duration::from_millis(random_ms(&mut seed, 0..400)));
        server.kill9();
        halt.store(true, Ordering::Relaxed);
        let mut ids = clients.join().expect("load");
        assert!(!ids.is_empty(), "round {round}: nothing acknowledged");
        let floor = wal_ids(&dir)
            .last()
            .copied()
            .unwrap_or(0)
            .max(acked.iter().copied().max().unwrap_or(0));
        ids.sort_unstable();
        assert_strictly_increasing(&ids, "ids acknowledged in one run, sorted");

        server.restart();
        let in_wal = wal_ids(&dir);
        assert_strictly_increasing(&in_wal, "ids along the log");
        let in_wal_set: BTreeSet<u64> = in_wal.iter().copied().collect();
        let missing: Vec<u64> = acked
            .iter()
            .chain(&ids)
            .copied()
            .filter(|id| !in_wal_set.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged id(s) lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let new = post_many(&server, 1);
        assert_all_above(&new, floor, "the first id after a SIGKILL");
        acked.extend(ids.into_iter().chain(new));
    }
    stop(&mut server);

    let db = "wal_recovery_sigkills";
    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let in_wal = wal_ids(&dir);
    let server = Server::start(online(&dir, db));
    let mut stored = Vec::new();
    wait_for(DELIVERY, "every record of the WAL in MongoDB", || {
        stored = stored_ids(&client, db);
        stored.len() >= in_wal.len()
    });
    assert_eq!(stored, in_wal, "MongoDB holds each WAL record once");
    drop(server);
    let stored: BTreeSet<u64> = stored.into_iter().collect();
    assert!(
        acked.iter().all(|id| stored.contains(id)),
        "every acknowledged id is in MongoDB"
    );
}

// ---------------------------------------------------------------- damage

#[test]
fn a_torn_tail_is_cut_and_quarantined_and_the_server_starts_and_serves_higher_ids() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let acked = post_many(&server, 10);
    stop(&mut server);

    let no = newest_segment(&dir);
    let spans = record_spans(&segment_bytes(&dir, no));
    assert_eq!(spans.iter().map(|(_, id)| *id).collect::<Vec<_>>(), acked);
    let last = spans[9].0.clone();
    let garbage = [0xa5u8; 100];
    let mut cut = Vec::new();
    rewrite(&dir, no, |bytes| {
        bytes.truncate(last.start + last.len() / 2);
        bytes.extend_from_slice(&garbage);
        cut = bytes[last.start..].to_vec();
    });

    let mut floor = acked[8];
    for restart in 0..2 {
        server.restart();
        assert_eq!(
            quarantined(&dir),
            [(format!("{no:020}-{}.bin", last.start), cut.clone())],
            "restart {restart}: the cut bytes, once"
        );
        assert_eq!(
            segment_bytes(&dir, no).len(),
            last.start,
            "cut at the last intact record"
        );
        let new = post_many(&server, 3);
        assert_all_above(&new, floor, "after a torn tail");
        floor = new[2];
        stop(&mut server);
    }
    assert_eq!(
        wal_ids(&dir)[..9],
        acked[..9],
        "every intact record is kept"
    );
}

#[test]
fn zeros_after_the_last_record_are_cut_without_a_quarantine_file() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let acked = post_many(&server, 10);
    server.kill9();

    let no = newest_segment(&dir);
    let len = logical_end(&dir, no);
    rewrite(&dir, no, |bytes| {
        bytes.truncate(len);
        bytes.resize(len + 8192, 0);
    });
    server.restart();
    assert_eq!(segment_bytes(&dir, no).len(), len, "the zeros are cut");
    assert_eq!(quarantined(&dir), [], "zeros are not worth quarantining");
    let new = post_many(&server, 3);
    assert_all_above(&new, acked[9], "after a zero-filled tail");
    assert_eq!(wal_ids(&dir), [acked, new].concat());
}

#[test]
fn a_damaged_record_in_a_sealed_segment_is_quarantined_and_later_records_reach_mongodb() {
    let db = "wal_recovery_damaged_record";
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let acked = post_many(&server, 10);
    stop(&mut server);
    server.restart();
    let later = post_many(&server, 5);
    stop(&mut server);
    drop(server);

    let no = segment::list(&dir).expect("list")[0];
    let spans = record_spans(&segment_bytes(&dir, no));
    let third = spans[2].0.clone();
    assert_eq!(spans[2].1, acked[2]);
    let mut damaged = Vec::new();
    rewrite(&dir, no, |bytes| {
        bytes[third.start + 20] ^= 0x08; // inside receivedAt
        damaged = bytes[third.clone()].to_vec();
    });

    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let server = Server::start(online(&dir, db));
    let new = post_many(&server, 3);
    assert_all_above(&new, later[4], "after a damaged record");
    let mut expected = [acked, later, new].concat();
    let lost = expected.remove(2);
    wait_for(DELIVERY, "every intact record in MongoDB", || {
        stored_ids(&client, db) == expected
    });
    assert_eq!(
        quarantined(&dir),
        [(format!("{no:020}-{}.bin", third.start), damaged)],
        "the damaged record's bytes (id {lost}) are in quarantine"
    );
}

#[test]
fn a_segment_with_a_damaged_header_gets_a_new_one_and_keeps_its_records() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let first = post_many(&server, 5);
    stop(&mut server);
    server.restart();
    let second = post_many(&server, 5);
    stop(&mut server);

    let no = segment::list(&dir).expect("list")[0];
    let mut original = Vec::new();
    rewrite(&dir, no, |bytes| {
        bytes[20] ^= 0x01; // the segment number: the header CRC fails
        original = bytes[..HEADER_BYTES as usize].to_vec();
    });
    server.restart();
    assert_eq!(
        quarantined(&dir),
        [(format!("{no:020}-0.bin"), original)],
        "the old header is kept for an operator"
    );
    assert!(segment::list(&dir).expect("list").contains(&no));
    let mut all = first.clone();
    all.extend(&second);
    assert_eq!(wal_ids(&dir), all, "the records behind the header are kept");
    let new = post_many(&server, 3);
    assert_all_above(&new, first[4].max(second[4]), "after a damaged header");
    stop(&mut server);
    server.restart();
    assert_eq!(
        quarantined(&dir).len(),
        1,
        "a second start finds nothing new"
    );
}

#[test]
fn a_segment_torn_at_creation_is_quarantined_and_the_server_still_starts() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let first = post_many(&server, 5);
    stop(&mut server);
    // A crash between creating the next segment and syncing its header.
    let torn_no = segment::list(&dir)
        .expect("list")
        .last()
        .expect("a segment")
        + 1;
    let torn = b"BUSYWAL1\x01\x00\x00".to_vec();
    fs::write(segment::path_of(&dir, torn_no), &torn).expect("write a torn segment");
    server.restart();
    assert_eq!(
        quarantined(&dir),
        [(format!("{torn_no:020}.bad-header"), torn)]
    );
    assert!(!segment::list(&dir).expect("list").contains(&torn_no));
    assert_eq!(wal_ids(&dir), first, "the records before it are untouched");
    let new = post_many(&server, 3);
    assert_all_above(&new, first[4], "after a torn creation");
    stop(&mut server);
}

#[test]
fn every_record_of_the_checkpoints_segment_and_after_reaches_mongodb_when_its_header_was_damaged() {
    let db = "wal_recovery_checkpoint_segment_header";
    let mut mongo = Mongo::start();
    let (_tmp, dir) = data_dir();
    let opts = Opts::default()
        .data_dir(&dir)
        .mongo(mongo.uri(), db)
        .arg("--shutdown-grace-secs 0");
    let mut server = Server::start(opts);
    let delivered = post_many(&server, 20);
    wait_for(DELIVERY, "a checkpoint past the delivered records", || {
        checkpoint::load(&dir)
            .expect("load")
            .is_some_and(|c| c.last_seq == delivered[19] & SEQ_MAX)
    });
    // MongoDB goes away: the rest of this segment and all of the next one
    // wait in the WAL, and the checkpoint stays inside the first segment.
    mongo.kill();
    let undelivered = post_many(&server, 20);
    server.kill9();
    server.restart();
    let waiting = post_many(&server, 5);
    server.kill9();
    let ckpt = checkpoint::load(&dir).expect("load").expect("a checkpoint");
    let first = segment::list(&dir).expect("list")[0];
    assert_eq!(
        ckpt.segment_no, first,
        "the checkpoint is inside the first segment"
    );
    rewrite(&dir, first, |bytes| bytes[30] ^= 0x02); // base seq: the CRC fails
    // Recovery rebuilds the header and keeps the records still waiting there.

    mongo.restart();
    server.restart();
    let new = post_many(&server, 3);
    assert_all_above(
        &new,
        waiting[4],
        "after the checkpoint's segment lost its header",
    );
    let want: BTreeSet<u64> = [delivered, undelivered, waiting, new]
        .concat()
        .into_iter()
        .collect();
    let client = mongo.client();
    wait_for(
        DELIVERY,
        "every record, before and after the damage, in MongoDB",
        || want.is_subset(&stored_ids(&client, db).into_iter().collect()),
    );
    assert!(
        quarantined(&dir)
            .iter()
            .any(|(name, _)| name == &format!("{first:020}-0.bin"))
    );
}

#[test]
fn a_second_process_on_the_same_data_dir_refuses_to_start_and_the_first_keeps_serving() {
    let (_tmp, dir) = data_dir();
    let first = Server::start(offline(&dir));
    let before = post_many(&first, 3);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--mongodb-uri",
            "mongodb://127.0.0.1:9",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run a second busyapi");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second process must not run"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another busyapi process")
            && stderr.contains(&format!("pid {}", first.pid())),
        "it says why, and who holds the directory: {stderr}"
    );
    let after = post_many(&first, 3);
    assert_all_above(&after, before[2], "the first process is untouched");
}
