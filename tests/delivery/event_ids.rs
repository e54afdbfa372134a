//! Event identity: a usage with an `eventId` is stored at most once per
//! `(patientId, eventId)`, across retries, nodes and restarts, enforced by
//! the unique partial index busyapi creates; a duplicate on it counts as
//! delivered (`busyapi_events_deduplicated_total`), never as a refusal or
//! a dead letter. Usages without an eventId are stored as before.

use busyapi::sink::mongo::{EVENT_INDEX_NAME, event_index};
use mongodb::error::{ErrorKind, WriteFailure};

use super::*;
use common::{Opts, dead_letters, fresh_usages, metric, shared_mongo, wait_drained};

const DEDUPLICATED: &str = "busyapi_events_deduplicated_total";
const RETRIES_ANSWERED: &str = "busyapi_event_retries_answered_total";

fn with_event(patient: &str, event: &str) -> String {
    format!(
        r#"{{"patientId": "{patient}", "timestamp": "2016-11-01T14:11:51Z", "medication": "Albuterol", "eventId": "{event}"}}"#
    )
}

/// A usage POST whose event is named by `Idempotency-Key: key`.
fn post_keyed(server: &Server, key: &str, body: &str) -> common::Response {
    let mut c = server.connect();
    let mut raw = post_request(body);
    let at = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a request line")
        + 2;
    raw.splice(at..at, format!("Idempotency-Key: {key}\r\n").into_bytes());
    c.send(&raw);
    c.response()
}

/// The one document in `coll`.
fn the_document(coll: &Collection<Document>) -> Document {
    coll.find_one(doc! {})
        .run()
        .expect("find")
        .expect("a document")
}

/// Once `server` has delivered: `DB` holds one document, under `first_id`,
/// MongoDB's index caught `deduplicated` copies, and none is a dead letter.
fn assert_stored_once(server: &Server, db: &str, first_id: u64, deduplicated: f64) {
    wait_drained(server);
    let coll = common::usages(&shared_mongo().client(), db);
    assert_eq!(count(&coll, doc! {}), 1, "one document for one event");
    assert_eq!(the_document(&coll).get_i64("_id"), Ok(first_id as i64));
    assert_eq!(metric(server, DEDUPLICATED), deduplicated);
    assert_eq!(metric(server, "busyapi_dead_letters_total"), 0.0);
    let dead = count(&dead_letters(shared_mongo(), db), doc! {});
    assert_eq!(dead, 0, "a replayed event is no dead letter");
}

fn count(coll: &Collection<Document>, filter: Document) -> u64 {
    coll.count_documents(filter).run().expect("count")
}

/// A node of its own delivering into `db`.
fn node(db: &str, node_id: u16) -> Server {
    let mongo = shared_mongo();
    Server::start(
        Opts::default()
            .mongo(mongo.uri(), db)
            .arg(&format!("--node-id {node_id}")),
    )
}

#[test]
fn the_dev_mongodb_enforces_the_partial_unique_event_index_only_where_an_event_id_exists() {
    let coll = fresh_usages(shared_mongo(), "event_ids_index");
    coll.create_index(event_index())
        .run()
        .expect("createIndexes");
    let names: Vec<String> = coll.list_index_names().run().expect("listIndexes");
    assert!(names.iter().any(|n| n == EVENT_INDEX_NAME), "{names:?}");
    coll.insert_many([
        doc! {"_id": 1, "patientId": "a"},
        doc! {"_id": 2, "patientId": "a"},
    ])
    .run()
    .expect("two documents without an eventId and one patientId both insert");
    coll.insert_one(doc! {"_id": 3, "patientId": "a", "eventId": "e"})
        .run()
        .expect("the first (a, e)");
    coll.insert_one(doc! {"_id": 4, "patientId": "b", "eventId": "e"})
        .run()
        .expect("the same eventId for another patient");
    let err = coll
        .insert_one(doc! {"_id": 5, "patientId": "a", "eventId": "e"})
        .run()
        .expect_err("a second (a, e) must collide");
    match *err.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref w)) => assert_eq!(w.code, 11000, "{w:?}"),
        ref other => panic!("not a write error: {other:?}"),
    }
    // The driver keeps keyPattern out of its error type: read the reply.
    let reply = shared_mongo()
        .client()
        .database("event_ids_index")
        .run_command(
            doc! {"insert": "usages", "documents": [{"_id": 6, "patientId": "a", "eventId": "e"}]},
        )
        .run()
        .expect("insert command");
    let e = reply.get_array("writeErrors").expect("writeErrors")[0]
        .as_document()
        .expect("a write error")
        .clone();
    assert_eq!(e.get_i32("code"), Ok(11000), "{e}");
    let keys: Vec<&str> = e
        .get_document("keyPattern")
        .expect("keyPattern")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["patientId", "eventId"], "{e}");
    assert_eq!(count(&coll, doc! {}), 4);
}

#[test]
fn the_same_event_posted_twice_to_one_node_gets_the_first_id_again_and_is_written_once() {
    const DB: &str = "event_ids_retry";
    let coll = fresh_usages(shared_mongo(), DB);
    let server = node(DB, 0);
    let body = with_event("100", "evt-retry");
    let (first, second) = (server.post(&body).id(), server.post(&body).id());
    assert_eq!(second, first, "the retry is answered with the first id");
    assert_eq!(server.written(), (1, first), "the retry wrote no record");
    assert_eq!(metric(&server, RETRIES_ANSWERED), 1.0);
    // Nothing reached MongoDB twice.
    assert_stored_once(&server, DB, first, 0.0);
    assert_eq!(the_document(&coll).get_str("eventId"), Ok("evt-retry"));
}

#[test]
fn after_a_restart_a_retry_gets_a_new_id_and_the_stored_document_stays_the_first() {
    const DB: &str = "event_ids_retry_restart";
    fresh_usages(shared_mongo(), DB);
    let mut server = node(DB, 0);
    let body = with_event("100", "evt-restart");
    let first = server.post(&body).id();
    wait_drained(&server);
    let stopped = server.terminate(std::time::Duration::from_secs(10));
    assert!(stopped.success(), "{stopped:?}");
    server.restart();
    let retry = server.post(&body).id();
    assert_ne!(retry, first, "the window is empty after a restart");
    assert_eq!(metric(&server, RETRIES_ANSWERED), 0.0);
    // MongoDB's index caught the retry.
    assert_stored_once(&server, DB, first, 1.0);
}

#[test]
fn one_event_id_for_two_patients_is_two_events() {
    const DB: &str = "event_ids_two_patients";
    let coll = fresh_usages(shared_mongo(), DB);
    let server = node(DB, 0);
    server.post(&with_event("100", "evt-shared"));
    server.post(&with_event("200", "evt-shared"));
    wait_drained(&server);
    assert_eq!(count(&coll, doc! {"eventId": "evt-shared"}), 2);
    assert_eq!(metric(&server, DEDUPLICATED), 0.0);
}

#[test]
fn the_same_event_sent_to_two_nodes_is_stored_once() {
    const DB: &str = "event_ids_two_nodes";
    let coll = fresh_usages(shared_mongo(), DB);
    let (a, b) = (node(DB, 1), node(DB, 2));
    let body = with_event("300", "evt-balanced");
    let (id_a, id_b) = (a.post(&body).id(), b.post(&body).id());
    assert_ne!(id_a, id_b);
    wait_drained(&a);
    wait_drained(&b);
    assert_eq!(count(&coll, doc! {}), 1, "one document across nodes");
    let replays = metric(&a, DEDUPLICATED) + metric(&b, DEDUPLICATED);
    assert_eq!(replays, 1.0, "one of the nodes saw the replay");
}

#[test]
fn events_acknowledged_before_a_sigkill_are_stored_once_each_after_the_restart() {
    const DB: &str = "event_ids_sigkill";
    let coll = fresh_usages(shared_mongo(), DB);
    let mut server = node(DB, 0);
    let mut c = server.connect();
    let mut req = Vec::new();
    for _ in 0..2 {
        for i in 0..10 {
            req.extend(post_request(&with_event(
                &format!("p{i}"),
                &format!("evt-{i}"),
            )));
        }
    }
    c.send(&req);
    for _ in 0..20 {
        c.response().id();
    }
    server.kill9();
    server.restart();
    wait_drained(&server);
    assert_eq!(count(&coll, doc! {}), 10, "one document per event");
    for i in 0..10 {
        assert_eq!(count(&coll, doc! {"eventId": format!("evt-{i}")}), 1);
    }
}

#[test]
fn two_identical_usages_without_an_event_id_are_still_two_documents() {
    const DB: &str = "event_ids_none";
    let coll = fresh_usages(shared_mongo(), DB);
    let server = node(DB, 0);
    let ids = [
        server.post(common::USAGE).id(),
        server.post(common::USAGE).id(),
    ];
    wait_drained(&server);
    assert_eq!(stored_ids(&coll), ids.to_vec());
    assert_eq!(count(&coll, doc! {"eventId": {"$exists": true}}), 0);
    assert_eq!(metric(&server, DEDUPLICATED), 0.0);
}

#[test]
fn an_idempotency_key_is_stored_as_the_event_id_and_a_retry_with_it_gets_the_first_id() {
    const DB: &str = "event_ids_idempotency_key";
    let coll = fresh_usages(shared_mongo(), DB);
    let server = node(DB, 0);
    let first = post_keyed(&server, "\"evt-key\"", common::USAGE);
    assert_eq!(first.status, 201, "{}", first.text());
    // The retry also names its event in the body: the same one.
    let retry = post_keyed(&server, "evt-key", &with_event("100", "evt-key"));
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.id(), first.id(), "the retry window knows the key");
    wait_drained(&server);
    assert_eq!(count(&coll, doc! {}), 1, "one document for one key");
    let stored = the_document(&coll);
    assert_eq!(stored.get_str("eventId"), Ok("evt-key"));
    assert_eq!(stored.get_i64("_id"), Ok(first.id() as i64));
}
