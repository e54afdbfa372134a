//! Batch POSTs end to end: every usage of an acknowledged batch is stored
//! once, and a batch retried after a crash before its 201 (the records
//! durable, the reply lost; or only some of them on disk) is stored once
//! per event when its usages carry eventIds.

use std::time::Duration;

use super::*;
use common::{Opts, batch_request, fresh_usages, json_array, shared_mongo, wait_drained};

/// How long the failpoint holds the writer between fsync and reply: far
/// longer than the test needs to see the records on disk and kill.
const HELD_MS: u64 = 60_000;

fn usage(patient: &str, i: usize, event: Option<&str>) -> String {
    let event = event.map_or(String::new(), |e| format!(r#", "eventId": "{e}""#));
    format!(r#"{{"patientId": "{patient}", "timestamp": {i}, "medication": "m{i}"{event}}}"#)
}

/// `n` usages of one device's day offline, each with its eventId.
fn day_offline(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| usage("dev", i, Some(&format!("evt-{i}"))))
        .collect()
}

fn post_batch(server: &Server, content_type: &str, body: &str) -> common::Response {
    let mut c = server.connect();
    c.send(&batch_request(content_type, body));
    c.response()
}

fn count(coll: &Collection<Document>) -> u64 {
    coll.count_documents(doc! {}).run().expect("count")
}

/// Each `evt-{i}` for `i < n` is stored exactly once.
fn assert_each_event_once(coll: &Collection<Document>, n: usize) {
    assert_eq!(count(coll), n as u64, "one document per event");
    for i in 0..n {
        let one = coll
            .count_documents(doc! {"eventId": format!("evt-{i}")})
            .run()
            .expect("count");
        assert_eq!(one, 1, "evt-{i}");
    }
}

#[test]
fn every_usage_of_acknowledged_arrays_and_ndjson_is_stored_once_under_its_id() {
    const DB: &str = "batches_stored";
    let coll = fresh_usages(shared_mongo(), DB);
    let server = Server::start(Opts::default().mongo(shared_mongo().uri(), DB));
    let mut acked = Vec::new();
    for round in 0..5 {
        let plain: Vec<String> = (0..100)
            .map(|i| usage(&format!("r{round}"), i, None))
            .collect();
        acked.extend(post_batch(&server, "application/json", &json_array(&plain)).ids());
        let lines = plain.join("\r\n");
        acked.extend(post_batch(&server, "application/x-ndjson", &lines).ids());
    }
    acked.extend(post_batch(&server, "application/json", &json_array(&day_offline(50))).ids());
    wait_drained(&server);
    assert_eq!(acked.len(), 1050);
    let in_wal = wal_ids(&server.data_dir);
    assert_exactly_once(&coll, &acked, &in_wal);
    let stored: BTreeSet<u64> = stored_ids(&coll).into_iter().collect();
    assert_eq!(
        stored,
        acked.iter().copied().collect(),
        "the ids of the 201s"
    );
}

#[test]
fn a_batch_retried_after_a_sigkill_between_its_fsync_and_its_201_is_stored_once() {
    const DB: &str = "batches_sigkill";
    const N: usize = 200;
    let coll = fresh_usages(shared_mongo(), DB);
    let held = format!("wal::before_reply=1*sleep({HELD_MS})");
    let opts = Opts::default()
        .mongo(shared_mongo().uri(), DB)
        .env("FAILPOINTS", &held);
    let mut server = Server::start(opts);
    let body = json_array(&day_offline(N));
    let mut c = server.connect();
    c.send(&batch_request("application/json", &body));
    // The writer holds the reply back once the batch is durable.
    common::wait_for(Duration::from_secs(30), "the batch in the WAL", || {
        wal_ids(&server.data_dir).len() == N
    });
    server.kill9();
    assert!(c.try_response().is_none(), "a 201 left before the kill");
    server.drop_env("FAILPOINTS");
    server.restart();
    let retried = post_batch(&server, "application/json", &body).ids();
    assert_eq!(retried.len(), N);
    wait_drained(&server);
    assert_each_event_once(&coll, N);
}

/// Byte offsets of the frames in a segment, in log order.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    let (end, ids) = walk(bytes);
    while pos < end && offsets.len() < ids.len() {
        offsets.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4")) as usize;
        pos += FRAME_HEADER_BYTES + len;
    }
    offsets
}

#[test]
fn a_batch_cut_short_on_disk_by_a_crash_is_stored_once_per_event_after_its_retry() {
    const DB: &str = "batches_torn";
    const N: usize = 100;
    let coll = fresh_usages(shared_mongo(), DB);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let body = json_array(&day_offline(N));
    // Offline, so that nothing is delivered before the cut.
    let mut offline = Server::start(Opts::default().data_dir(&data));
    assert_eq!(
        post_batch(&offline, "application/json", &body).ids().len(),
        N
    );
    offline.kill9();
    drop(offline);
    // What a SIGKILL in the middle of the batch's one write leaves: its
    // first records whole, the rest of it never written (zeros), a torn
    // record between.
    let (no, _) = *segments(&data).last().expect("a segment");
    let path = data.join(format!("{no:020}.wal"));
    let mut bytes = std::fs::read(&path).expect("segment");
    let offsets = frame_offsets(&bytes);
    assert_eq!(offsets.len(), N);
    let (end, _) = walk(&bytes);
    let cut = offsets[N / 2] + FRAME_HEADER_BYTES + 3;
    bytes[cut..end].fill(0);
    std::fs::write(&path, &bytes).expect("write the cut segment");
    assert_eq!(
        wal_ids(&data).len(),
        N / 2,
        "the batch's first half survives"
    );
    let server = Server::start(
        Opts::default()
            .mongo(shared_mongo().uri(), DB)
            .data_dir(&data),
    );
    // The client saw no 201 for it, so it sends the batch again.
    assert_eq!(
        post_batch(&server, "application/json", &body).ids().len(),
        N
    );
    wait_drained(&server);
    assert_each_event_once(&coll, N);
}
