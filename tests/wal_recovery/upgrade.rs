//! An upgrade: a data directory written by the binary before eventIds
//! (WAL format version 1, `tests/fixtures/wal-v1/`) is recovered and
//! delivered by today's binary, each record exactly once with its ids and
//! fields, and new usages go on above its ids in new-format segments; a
//! directory holding both formats at once delivers both.

use mongodb::bson::DateTime;

use super::*;
use common::{fresh_usages, wait_for};

/// The fixture, made by the binary at c8c552a (see its README).
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1")
}

/// One usage of the fixture: its 201 id and the fields it must be stored
/// with.
struct Expected {
    id: u64,
    patient_id: String,
    timestamp_ms: i64,
    medication: String,
}

fn expected() -> Vec<Expected> {
    let text = fs::read_to_string(fixture_dir().join("usages.json")).expect("usages.json");
    let list: serde_json::Value = serde_json::from_str(&text).expect("usages.json is JSON");
    let list = list.as_array().expect("a list");
    list.iter()
        .map(|u| {
            let stored = &u["stored"];
            Expected {
                id: u["id"].as_u64().expect("id"),
                patient_id: stored["patientId"].as_str().expect("patientId").into(),
                timestamp_ms: stored["timestampMs"].as_i64().expect("timestampMs"),
                medication: stored["medication"].as_str().expect("medication").into(),
            }
        })
        .collect()
}

/// A copy of the fixture's segment in a data directory of its own.
fn copied_fixture() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = data_dir();
    fs::create_dir_all(&dir).expect("data dir");
    let name = "00000000000000000001.wal";
    fs::copy(fixture_dir().join(name), dir.join(name)).expect("copy the fixture");
    (tmp, dir)
}

#[test]
fn a_version_1_wal_is_delivered_exactly_once_with_its_ids_and_fields_after_an_upgrade() {
    const DB: &str = "wal_recovery_upgrade_v1";
    let _turn = mongo_turn();
    let coll = fresh_usages(shared_mongo(), DB);
    let want = expected();
    assert_eq!(want.len(), 20, "the fixture holds 20 usages");
    let (_tmp, dir) = copied_fixture();
    let mut server = Server::start(online(&dir, DB).arg("--node-id 7"));
    let client = shared_mongo().client();
    let fixture_ids: Vec<u64> = want.iter().map(|e| e.id).collect();
    wait_for(DELIVERY, "the fixture's 20 usages in MongoDB", || {
        stored_ids(&usages(&client, DB)).len() >= 20
    });
    assert_eq!(
        stored_ids(&usages(&client, DB)),
        fixture_ids,
        "each exactly once"
    );
    for e in &want {
        let d = coll
            .find_one(doc! {"_id": e.id as i64})
            .run()
            .expect("find")
            .unwrap_or_else(|| panic!("no document with _id {}", e.id));
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["_id", "patientId", "timestamp", "medication", "receivedAt"],
            "a version-1 record has no eventId"
        );
        assert_eq!(d.get_str("patientId"), Ok(e.patient_id.as_str()));
        assert_eq!(d.get_str("medication"), Ok(e.medication.as_str()));
        assert_eq!(
            d.get_datetime("timestamp"),
            Ok(&DateTime::from_millis(e.timestamp_ms))
        );
    }

    let new = post_many(&server, 5);
    assert_all_above(&new, fixture_ids[19], "new usages after the upgrade");
    let event_id = server
        .post(r#"{"patientId": "100", "timestamp": 1, "medication": "m", "eventId": "after-upgrade"}"#)
        .id();
    assert_all_above(&[event_id], new[4], "an eventId usage after them");
    let all: Vec<u64> = [fixture_ids.clone(), new, vec![event_id]].concat();
    wait_for(DELIVERY, "every usage in MongoDB", || {
        stored_ids(&usages(&client, DB)) == all
    });
    stop(&mut server);
    server.restart();
    let after = post_many(&server, 1);
    assert_all_above(
        &after,
        event_id,
        "after a restart on the upgraded directory",
    );
    stop(&mut server);
    let stored = coll
        .find_one(doc! {"_id": event_id as i64})
        .run()
        .expect("find")
        .expect("the eventId usage");
    assert_eq!(stored.get_str("eventId"), Ok("after-upgrade"));
}

#[test]
fn a_version_1_segment_is_read_back_whole_by_recovery_with_no_event_ids() {
    let (_tmp, dir) = copied_fixture();
    let want = expected();
    let spans = record_spans(&segment_bytes(&dir, 1), |r| {
        (r.id.raw(), r.patient_id.to_owned(), r.event_id.is_none())
    });
    let got: Vec<_> = spans.into_iter().map(|(_, k)| k).collect();
    let wanted: Vec<_> = want
        .iter()
        .map(|e| (e.id, e.patient_id.clone(), true))
        .collect();
    assert_eq!(got, wanted);
    let mut server = Server::start(offline(&dir).arg("--node-id 7"));
    assert_eq!(server.stat("walBacklogRecords"), 20, "all 20 are owed");
    stop(&mut server);
    assert_eq!(
        wal_ids(&dir)[..20],
        want.iter().map(|e| e.id).collect::<Vec<_>>()[..]
    );
}

/// The format version in segment `no`'s header.
fn version_of(dir: &Path, no: u64) -> u32 {
    let bytes = segment_bytes(dir, no);
    u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"))
}

#[test]
fn old_and_new_format_segments_in_one_data_directory_are_all_delivered() {
    const DB: &str = "wal_recovery_upgrade_mixed";
    let _turn = mongo_turn();
    fresh_usages(shared_mongo(), DB);
    let fixture_ids: Vec<u64> = expected().iter().map(|e| e.id).collect();
    let (_tmp, dir) = copied_fixture();
    let mut server = Server::start(offline(&dir).arg("--node-id 7"));
    let mut new = post_many(&server, 5);
    new.push(
        server
            .post(r#"{"patientId": "7", "timestamp": 2, "medication": "m", "eventId": "mixed"}"#)
            .id(),
    );
    stop(&mut server);
    let nos = segment::list(&dir).expect("list segments");
    let versions: Vec<u32> = nos.iter().map(|&no| version_of(&dir, no)).collect();
    assert_eq!(
        versions,
        [1, 2],
        "the fixture's segment, then a new-format one"
    );
    let mut server = Server::start(online(&dir, DB).arg("--node-id 7"));
    let client = shared_mongo().client();
    let all: Vec<u64> = [fixture_ids, new].concat();
    wait_for(DELIVERY, "both segments' usages in MongoDB", || {
        stored_ids(&usages(&client, DB)) == all
    });
    stop(&mut server);
}
