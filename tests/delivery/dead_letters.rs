//! Documents MongoDB refuses for good: a real `$jsonSchema` validator (code
//! 121) and a real unique index on `patientId` (11000 on another index than
//! `_id`'s) on the dev MongoDB. The refused usage goes to the dead-letter
//! collection with its error and its fields, delivery goes on past it, and
//! neither a SIGKILL nor a crash right after the dead letter makes a second.

use std::os::unix::process::ExitStatusExt;

use tempfile::TempDir;

use super::*;
use common::{
    DELIVERY, Opts, POISON, USAGE, dead_letters, fresh_usages, metric, shared_mongo,
    unique_patient_ids, usages_refusing_poison, wait_drained,
};

/// A usage the validator refuses; its patient id must never reach a log.
const POISON_PATIENT: &str = "p-7431-secret";

fn poison_usage() -> String {
    format!(
        r#"{{"patientId": "{POISON_PATIENT}", "timestamp": 1478009511000, "medication": "{POISON}"}}"#
    )
}

/// Every document of `coll`, by `_id`.
fn all(coll: &Collection<Document>) -> Vec<Document> {
    coll.find(doc! {})
        .sort(doc! {"_id": 1})
        .run()
        .expect("find")
        .map(|d| d.expect("a document"))
        .collect()
}

/// Asserts `d` is the dead letter of usage `id`: the stored document's
/// fields, then the error and the time.
fn assert_dead_letter(d: &Document, id: u64, patient: &str, medication: &str, code: i32) {
    let keys: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "_id",
            "patientId",
            "timestamp",
            "medication",
            "receivedAt",
            "error",
            "deadLetteredAt"
        ],
        "{d}"
    );
    assert_eq!(d.get("_id"), Some(&Bson::Int64(id as i64)), "{d}");
    assert_eq!(d.get_str("patientId"), Ok(patient), "{d}");
    assert_eq!(d.get_str("medication"), Ok(medication), "{d}");
    assert!(d.get_datetime("timestamp").is_ok(), "{d}");
    assert!(d.get_datetime("receivedAt").is_ok(), "{d}");
    let error = d.get_document("error").expect("an error");
    assert_eq!(error.get_i32("code"), Ok(code), "{d}");
    assert!(error.get_str("message").is_ok_and(|m| !m.is_empty()), "{d}");
    let at = d.get_datetime("deadLetteredAt").expect("deadLetteredAt");
    let age_ms = now_ms() - at.timestamp_millis();
    assert!((0..600_000).contains(&age_ms), "deadLetteredAt {at}");
}

/// The log line about dead letters names the id, the code and the
/// collection; no line holds any of `values` (the usage's fields).
fn assert_logged_without(server: &Server, id: u64, code: i32, values: &[&str]) {
    const MOVED: &str = "times in a row to the dead-letter collection usages_deadletter";
    server.wait_for_log(MOVED);
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(MOVED))
        .expect("the line waited for");
    assert!(line.contains(&format!("id {id} (code {code})")), "{line}");
    for v in values {
        assert!(!logs.contains(v), "{v:?} in the log:\n{logs}");
    }
}

/// Database `db` of the shared dev MongoDB with a validator refusing
/// [`POISON`], its dead-letter collection, and options for a server with a
/// data directory of its own (kept by the returned guard) delivering there.
fn refusing_poison(db: &str) -> (Collection<Document>, Collection<Document>, Opts, TempDir) {
    let mongo = shared_mongo();
    let coll = usages_refusing_poison(mongo, db);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Opts::default()
        .mongo(mongo.uri(), db)
        .data_dir(&dir.path().join("data"));
    (coll, dead_letters(mongo, db), opts, dir)
}

#[test]
fn a_usage_the_validator_refuses_is_dead_lettered_with_code_121_and_delivery_goes_on_past_it() {
    let (coll, dead, opts, _dir) = refusing_poison("delivery_dead_letter_validator");
    let mut server = Server::start(opts);
    let before = server.post(USAGE).id();
    let poison = server.post(&poison_usage()).id();
    let behind = post_burst(&server, 20);
    wait_drained(&server);

    let mut good = vec![before];
    good.extend(&behind);
    assert_eq!(stored_ids(&coll), good, "the usages behind the poison one");
    let letters = all(&dead);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_dead_letter(&letters[0], poison, POISON_PATIENT, POISON, 121);
    assert_eq!(metric(&server, "busyapi_dead_letters_total"), 1.0);
    assert_logged_without(&server, poison, 121, &[POISON_PATIENT, POISON]);

    // Killed at once, perhaps before the checkpoint passed the dead letter:
    // the restart replays it, and MongoDB still has one of each.
    server.kill9();
    server.restart();
    wait_drained(&server);
    assert_eq!(stored_ids(&coll), good);
    assert_eq!(all(&dead).len(), 1, "a second dead letter after a SIGKILL");
}

#[test]
fn a_dead_letter_keeps_the_api_key_id_that_wrote_its_usage() {
    let (_coll, dead, opts, dir) = refusing_poison("delivery_dead_letter_source");
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nid = \"fleet-9\"\nsha256 = \"{}\"\n",
            busyapi::http::auth::digest_of(b"the-fleet-key")
        ),
    )
    .expect("a keys file");
    let server = Server::start(opts.arg(&format!(
        "--api-keys-file {} --admin-listen 127.0.0.1:0",
        keys.display()
    )));
    let body = poison_usage();
    let mut c = server.connect();
    c.send(
        format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer the-fleet-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 201, "{}", r.text());
    wait_drained(&server);
    let letters = all(&dead);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].get_str("source"),
        Ok("fleet-9"),
        "{}",
        letters[0]
    );
}

#[test]
fn a_crash_right_after_a_dead_letter_is_confirmed_replays_it_without_a_second_one() {
    let (coll, dead, opts, _dir) = refusing_poison("delivery_dead_letter_crash");
    let mut crashing = Server::start(
        opts.clone()
            .env("FAILPOINTS", "flusher::after_dead_letter=return"),
    );
    let good = crashing.post(USAGE).id();
    let poison = crashing.post(&poison_usage()).id();
    let status = crashing.wait(DELIVERY);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", crashing.logs());
    assert_eq!(all(&dead).len(), 1, "MongoDB confirmed the dead letter");

    // The checkpoint has not passed the poison usage: the next run refuses
    // it again, and its dead letter meets the first one's `_id`.
    let server = Server::start(opts);
    wait_drained(&server);
    assert_eq!(stored_ids(&coll), [good]);
    let letters = all(&dead);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_dead_letter(&letters[0], poison, POISON_PATIENT, POISON, 121);
    assert!(
        metric(&server, "busyapi_records_replayed_duplicate_total") >= 1.0,
        "the poison usage was not replayed"
    );
    assert_eq!(
        metric(&server, "busyapi_dead_letters_total"),
        0.0,
        "the replay stored a dead letter of its own"
    );
}

#[test]
fn a_duplicate_on_another_unique_index_dead_letters_that_usage_alone_and_stores_the_rest_of_its_batch()
 {
    const DB: &str = "delivery_dead_letter_unique";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    unique_patient_ids(&coll);
    let dead = dead_letters(mongo, DB);
    // One batch: the four usages arrive well within the interval.
    let server = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg("--flush-interval-ms 2000"),
    );
    // MongoDB's message quotes the duplicate key: it must not reach the log.
    const TWICE: &str = "p-twice-secret";
    let mut c = server.connect();
    let mut req = Vec::new();
    for patient in [TWICE, "p-b", TWICE, "p-c"] {
        let body = format!(r#"{{"patientId": "{patient}", "timestamp": 1, "medication": "m"}}"#);
        req.extend(post_request(&body));
    }
    c.send(&req);
    let ids: Vec<u64> = (0..4).map(|_| c.response().id()).collect();
    wait_drained(&server);

    assert_eq!(
        metric(&server, "busyapi_flush_batch_records_count"),
        1.0,
        "the four usages went out in one unordered insert"
    );
    assert_eq!(stored_ids(&coll), [ids[0], ids[1], ids[3]]);
    let letters = all(&dead);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_dead_letter(&letters[0], ids[2], TWICE, "m", 11000);
    assert_eq!(metric(&server, "busyapi_dead_letters_total"), 1.0);
    assert_eq!(
        metric(&server, "busyapi_records_replayed_duplicate_total"),
        0.0,
        "the other index's duplicate was taken for a replay"
    );
    assert_logged_without(&server, ids[2], 11000, &[TWICE]);
}
