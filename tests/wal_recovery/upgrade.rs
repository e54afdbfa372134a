//! Upgrades: a data directory written by the binary before eventIds (WAL
//! format version 1, `tests/fixtures/wal-v1/`) or before API keys (version
//! 2, `tests/fixtures/wal-v2/`) is recovered and delivered by today's
//! binary, each record exactly once with its ids and fields, and new usages
//! go on above its ids in new-format segments; a directory holding all
//! three formats at once delivers all three.

use mongodb::bson::DateTime;

use super::*;
use common::{fresh_usages, wait_for};

/// The fixture of format `version`, made by the binary its README names.
fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/wal-v{version}"))
}

/// The ids of both fixtures: node 7, seq 1 to 20.
const FIXTURE_RECORDS: usize = 20;

/// One usage of a fixture: its 201 id and the fields it must be stored
/// with.
struct Expected {
    id: u64,
    patient_id: String,
    timestamp_ms: i64,
    medication: String,
    event_id: Option<String>,
}

fn expected(version: u32) -> Vec<Expected> {
    let path = fixture_dir(version).join("usages.json");
    let text = fs::read_to_string(path).expect("usages.json");
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
                event_id: stored["eventId"].as_str().map(String::from),
            }
        })
        .collect()
}

const FIXTURE_SEGMENT: &str = "00000000000000000001.wal";

/// A copy of the fixture's segment in a data directory of its own.
fn copied_fixture(version: u32) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = data_dir();
    fs::create_dir_all(&dir).expect("data dir");
    fs::copy(
        fixture_dir(version).join(FIXTURE_SEGMENT),
        dir.join(FIXTURE_SEGMENT),
    )
    .expect("copy the fixture");
    (tmp, dir)
}

/// The stored fields of a fixture's usages, checked against what it lists:
/// the documented fields in order, an eventId only where one was sent, and
/// no `source` (no API key wrote them).
fn assert_stored_as_listed(
    coll: &mongodb::sync::Collection<mongodb::bson::Document>,
    want: &[Expected],
) {
    for e in want {
        let d = coll
            .find_one(doc! {"_id": e.id as i64})
            .run()
            .expect("find")
            .unwrap_or_else(|| panic!("no document with _id {}", e.id));
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        let mut fields = vec!["_id", "patientId", "timestamp", "medication", "receivedAt"];
        if e.event_id.is_some() {
            fields.push("eventId");
        }
        assert_eq!(keys, fields, "{d}");
        assert_eq!(d.get_str("patientId"), Ok(e.patient_id.as_str()));
        assert_eq!(d.get_str("medication"), Ok(e.medication.as_str()));
        assert_eq!(d.get_str("eventId").ok(), e.event_id.as_deref());
        assert_eq!(
            d.get_datetime("timestamp"),
            Ok(&DateTime::from_millis(e.timestamp_ms))
        );
    }
}

/// The whole upgrade of a fixture: delivered exactly once with its fields,
/// new usages above its ids, and ids still above them after a restart.
fn upgrade(version: u32, db: &str) {
    let _turn = mongo_turn();
    let coll = fresh_usages(shared_mongo(), db);
    let want = expected(version);
    assert_eq!(want.len(), FIXTURE_RECORDS);
    let (_tmp, dir) = copied_fixture(version);
    let mut server = Server::start(online(&dir, db).arg("--node-id 7"));
    let client = shared_mongo().client();
    let fixture_ids: Vec<u64> = want.iter().map(|e| e.id).collect();
    wait_for(DELIVERY, "the fixture's usages in MongoDB", || {
        stored_ids(&usages(&client, db)).len() >= FIXTURE_RECORDS
    });
    assert_eq!(
        stored_ids(&usages(&client, db)),
        fixture_ids,
        "each exactly once"
    );
    assert_stored_as_listed(&coll, &want);

    let new = post_many(&server, 5);
    assert_all_above(&new, fixture_ids[19], "new usages after the upgrade");
    let event_id = server
        .post(r#"{"patientId": "100", "timestamp": 1, "medication": "m", "eventId": "after-upgrade"}"#)
        .id();
    assert_all_above(&[event_id], new[4], "an eventId usage after them");
    let all: Vec<u64> = [fixture_ids.clone(), new, vec![event_id]].concat();
    wait_for(DELIVERY, "every usage in MongoDB", || {
        stored_ids(&usages(&client, db)) == all
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
fn a_version_1_wal_is_delivered_exactly_once_with_its_ids_and_fields_after_an_upgrade() {
    upgrade(1, "wal_recovery_upgrade_v1");
}

#[test]
fn a_version_2_wal_is_delivered_exactly_once_with_its_ids_event_ids_and_no_source_after_an_upgrade()
{
    upgrade(2, "wal_recovery_upgrade_v2");
}

/// Recovery reads a fixture's segment back whole: every record, with
/// exactly the eventIds its list names and no source.
fn read_back_whole(version: u32) {
    let (_tmp, dir) = copied_fixture(version);
    let want = expected(version);
    let spans = record_spans(&segment_bytes(&dir, 1), |r| {
        (
            r.id.raw(),
            r.patient_id.to_owned(),
            r.event_id.map(String::from),
            r.source.is_none(),
        )
    });
    let got: Vec<_> = spans.into_iter().map(|(_, k)| k).collect();
    let wanted: Vec<_> = want
        .iter()
        .map(|e| (e.id, e.patient_id.clone(), e.event_id.clone(), true))
        .collect();
    assert_eq!(got, wanted);
    let mut server = Server::start(offline(&dir).arg("--node-id 7"));
    assert_eq!(
        server.stat("walBacklogRecords"),
        FIXTURE_RECORDS as u64,
        "all are owed"
    );
    stop(&mut server);
    assert_eq!(
        wal_ids(&dir)[..FIXTURE_RECORDS],
        want.iter().map(|e| e.id).collect::<Vec<_>>()[..]
    );
}

#[test]
fn a_version_1_segment_is_read_back_whole_by_recovery_with_no_event_ids() {
    read_back_whole(1);
}

#[test]
fn a_version_2_segment_is_read_back_whole_by_recovery_with_its_event_ids() {
    read_back_whole(2);
    assert!(
        expected(2).iter().any(|e| e.event_id.is_some()),
        "the fixture has eventIds to lose"
    );
}

/// The format version in segment `no`'s header.
fn version_of(dir: &Path, no: u64) -> u32 {
    let bytes = segment_bytes(dir, no);
    u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"))
}

/// `segment` (a fixture's bytes) as segment `no` with every seq `shift`
/// higher, header and frames re-checksummed: both fixtures hold seq 1 to
/// 20, and one log must not hold an id twice.
fn renumbered(segment: &[u8], no: u64, shift: u64) -> Vec<u8> {
    let mut b = segment.to_vec();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let base_seq = u64_at(&b, 24) + shift;
    b[16..24].copy_from_slice(&no.to_le_bytes());
    b[24..32].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    let mut pos = HEADER_BYTES as usize;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes(b[pos..pos + 4].try_into().expect("4")) as usize;
        let id = u64_at(&b, pos + 8) + shift;
        b[pos + 8..pos + 16].copy_from_slice(&id.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&b[pos..pos + 4]);
        h.update(&b[pos + 8..pos + 8 + len]);
        let crc = h.finalize();
        b[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += 8 + len;
    }
    b
}

#[test]
fn version_1_2_and_3_segments_in_one_data_directory_are_all_delivered_with_their_fields() {
    const DB: &str = "wal_recovery_upgrade_mixed";
    let _turn = mongo_turn();
    let coll = fresh_usages(shared_mongo(), DB);
    let (_tmp, dir) = copied_fixture(1);
    let v2 = fs::read(fixture_dir(2).join(FIXTURE_SEGMENT)).expect("the v2 fixture");
    let shift = FIXTURE_RECORDS as u64;
    write_segment(&dir, 2, &renumbered(&v2, 2, shift));
    let mut want = expected(1);
    want.extend(expected(2).into_iter().map(|e| Expected {
        id: e.id + shift,
        ..e
    }));
    let keys = dir.parent().expect("a parent").join("keys.toml");
    fs::write(
        &keys,
        format!(
            "[[key]]\nid = \"app-3\"\nsha256 = \"{}\"\n",
            busyapi::http::auth::digest_of(b"the-key")
        ),
    )
    .expect("a keys file");
    let keyed = |o: Opts| {
        o.arg(&format!(
            "--node-id 7 --api-keys-file {} --admin-listen 127.0.0.1:0",
            keys.display()
        ))
    };
    let mut server = Server::start(keyed(offline(&dir)));
    let mut c = server.connect();
    c.send(
        format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer the-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            common::USAGE.len(),
            common::USAGE
        )
        .as_bytes(),
    );
    let new = c.response().id();
    assert_all_above(&[new], want[39].id, "a new usage after both fixtures");
    stop(&mut server);
    let nos = segment::list(&dir).expect("list segments");
    let versions: Vec<u32> = nos.iter().map(|&no| version_of(&dir, no)).collect();
    assert_eq!(
        versions,
        [1, 2, 3],
        "both fixtures, then a new-format segment"
    );
    let mut server = Server::start(keyed(online(&dir, DB)));
    let client = shared_mongo().client();
    let all: Vec<u64> = want.iter().map(|e| e.id).chain([new]).collect();
    wait_for(DELIVERY, "the three segments' usages in MongoDB", || {
        stored_ids(&usages(&client, DB)) == all
    });
    stop(&mut server);
    assert_stored_as_listed(&coll, &want);
    let d = coll
        .find_one(doc! {"_id": new as i64})
        .run()
        .expect("find")
        .expect("the new usage");
    assert_eq!(d.get_str("source"), Ok("app-3"), "{d}");
}
