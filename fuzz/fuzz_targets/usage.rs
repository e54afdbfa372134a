//! JSON → usage validation (`ingest::UsageParser`) on arbitrary bodies.
//!
//! An accepted body must be:
//! - within every field bound, so that the WAL's `record::stage` (which
//!   asserts those bounds) takes it, and the framed record decodes back to
//!   the same fields;
//! - valid JSON to an independent parser (serde_json), one object holding
//!   exactly `patientId`, `timestamp`, `medication` and (if busyapi read
//!   one) `eventId`, with the values busyapi read;
//! - read the same the second time by the same parser, whose buffers are
//!   reused from request to request on a connection.
#![no_main]

use busyapi::ingest::{PatientId, Usage, UsageParser};
use busyapi::limits::{
    EVENT_ID_BYTES_MAX, MEDICATION_BYTES_MAX, PATIENT_ID_BYTES_MAX, TIMESTAMP_MS_MAX,
    TIMESTAMP_MS_MIN,
};
use busyapi::wal::Id;
use busyapi::wal::record::{self, Decoded, Format};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// An owned copy of a usage, to compare two parses.
#[derive(Debug, PartialEq, Eq)]
struct Owned {
    patient_id: String,
    timestamp_ms: i64,
    medication: String,
    event_id: Option<String>,
}

fn owned(u: &Usage<'_>) -> Owned {
    let mut digits = itoa::Buffer::new();
    let pid = u.patient_id.as_bytes(&mut digits);
    Owned {
        patient_id: String::from_utf8(pid.to_vec()).expect("a patient id is UTF-8"),
        timestamp_ms: u.timestamp_ms,
        medication: u.medication.to_owned(),
        event_id: u.event_id.map(str::to_owned),
    }
}

fn check_bounds(u: &Usage<'_>, o: &Owned) {
    assert!((1..=PATIENT_ID_BYTES_MAX).contains(&o.patient_id.len()));
    assert!((1..=MEDICATION_BYTES_MAX).contains(&o.medication.len()));
    assert!((TIMESTAMP_MS_MIN..=TIMESTAMP_MS_MAX).contains(&o.timestamp_ms));
    if let Some(e) = &o.event_id {
        assert!((1..=EVENT_ID_BYTES_MAX).contains(&e.len()));
    }
    let mut staged = Vec::new();
    record::stage(u, 7, &mut staged);
    let mut framed = Vec::new();
    assert_eq!(
        record::frame_staged(&staged, Id::from_raw(42), &mut framed),
        1
    );
    let Decoded::Record(r, n) = record::decode(&framed, Format::CURRENT) else {
        panic!("a staged usage must frame into a decodable record");
    };
    assert_eq!(n, framed.len());
    assert_eq!(
        (r.id, r.received_at_ms, r.timestamp_ms),
        (Id::from_raw(42), 7, o.timestamp_ms)
    );
    assert_eq!(
        (r.patient_id, r.medication, r.event_id),
        (&*o.patient_id, &*o.medication, o.event_id.as_deref())
    );
}

/// A JSON number busyapi may read as an integer, as serde_json reads it:
/// `-0` is a float to serde_json and 0 to busyapi, the same number.
fn integer(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .or_else(|| (v.as_f64() == Some(0.0)).then_some(0))
}

fn check_against_serde(body: &[u8], u: &Usage<'_>, o: &Owned) {
    let v: Value =
        serde_json::from_slice(body).expect("busyapi accepted JSON that serde_json refuses");
    let obj = v.as_object().expect("an accepted body is an object");
    let fields = 3 + usize::from(o.event_id.is_some());
    assert_eq!(obj.len(), fields, "exactly the fields busyapi read");
    assert_eq!(
        obj.get("eventId").and_then(Value::as_str),
        o.event_id.as_deref()
    );
    match u.patient_id {
        PatientId::Text(s) => assert_eq!(obj["patientId"].as_str(), Some(s)),
        PatientId::Number(n) => assert_eq!(integer(&obj["patientId"]), Some(i128::from(n))),
    }
    assert_eq!(obj["medication"].as_str(), Some(&*o.medication));
    match &obj["timestamp"] {
        v @ Value::Number(_) => assert_eq!(integer(v), Some(i128::from(o.timestamp_ms))),
        Value::String(s) => assert_eq!(
            busyapi::ingest::timestamp::parse_text(s),
            Ok(o.timestamp_ms)
        ),
        other => panic!("timestamp accepted as {other:?}"),
    }
}

fuzz_target!(|body: &[u8]| {
    let mut parser = UsageParser::new();
    let first = match parser.parse(body) {
        Ok(u) => {
            let o = owned(&u);
            check_bounds(&u, &o);
            check_against_serde(body, &u, &o);
            Ok(o)
        }
        Err(e) => Err(e),
    };
    let second = parser.parse(body).map(|u| owned(&u));
    assert_eq!(
        first, second,
        "a reused parser reads the same body the same way"
    );
});
