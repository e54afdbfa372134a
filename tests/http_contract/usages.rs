//! `POST /api/usages`: what is accepted, how it is answered, and every body
//! that is refused with 400.

use std::time::Duration;

use mongodb::bson::{Document, doc};

use super::common::{shared_mongo, wait_for};
use super::*;

/// The instant of the contract's example, `Tue Nov 01 2016 09:11:51 GMT-0500`.
const EXAMPLE_MS: i64 = 1_478_009_511_000;

/// Posts each body on one keep-alive connection of a fresh server and
/// expects a 400 whose text contains the needle; then nothing is written.
fn assert_bodies_refused<B: AsRef<[u8]>>(cases: &[(B, &str)]) -> Server {
    let requests: Vec<(Vec<u8>, &str)> = cases
        .iter()
        .map(|(body, needle)| (post_json(body.as_ref()), *needle))
        .collect();
    assert_requests_refused(&requests)
}

/// As [`assert_bodies_refused`], for whole requests.
fn assert_requests_refused(cases: &[(Vec<u8>, &str)]) -> Server {
    let s = start();
    let mut c = s.connect();
    for (raw, needle) in cases {
        c.send(raw);
        let r = c.response();
        assert_error(&r, 400, needle);
        assert_eq!(
            r.header("connection"),
            None,
            "a bad body closed the connection"
        );
    }
    assert_nothing_written(&s);
    s
}

#[test]
fn a_valid_usage_gets_201_with_a_json_id_that_is_positive_increasing_and_exact_in_javascript() {
    let s = start();
    let mut last = 0;
    for _ in 0..5 {
        let r = s.post(USAGE);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        let id = body["id"].as_u64().expect("an integer id");
        assert!(id > last && id <= ID_MAX, "id {id} after {last}");
        last = id;
    }
    assert_eq!(s.written(), (5, last));
}

#[test]
fn patient_ids_as_strings_or_integers_and_every_timestamp_form_are_stored_as_the_same_instant() {
    let mongo = shared_mongo();
    let db = "http_contract_forms";
    let s = Server::start(Opts::default().mongo(mongo.uri(), db));
    let cases = [
        (
            r#""100""#,
            r#""Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)""#,
            "100",
        ),
        ("100", r#""Tue Nov 01 2016 09:11:51 GMT-0500""#, "100"),
        (r#""p-7""#, r#""2016-11-01T14:11:51Z""#, "p-7"),
        ("0", r#""2016-11-01T09:11:51.000-05:00""#, "0"),
        (
            "18446744073709551615",
            "1478009511000",
            "18446744073709551615",
        ),
    ];
    let mut want = Vec::new();
    for (patient, timestamp, stored) in cases {
        let id = s.post(&usage(patient, timestamp, r#""Albuterol""#)).id();
        want.push((id as i64, stored));
    }
    wait_for(Duration::from_secs(20), "the usages in MongoDB", || {
        mongo.count(db) == cases.len() as u64
    });
    let coll = mongo.client().database(db).collection::<Document>("usages");
    for (id, patient) in want {
        let d = coll
            .find_one(doc! {"_id": id})
            .run()
            .expect("find")
            .expect("stored");
        assert_eq!(d.get_str("patientId").expect("a string"), patient, "{d}");
        let ts = d.get_datetime("timestamp").expect("a date");
        assert_eq!(ts.timestamp_millis(), EXAMPLE_MS, "{d}");
        assert_eq!(d.get_str("medication").expect("a string"), "Albuterol");
    }
}

#[test]
fn malformed_json_gets_400_and_nothing_is_written() {
    let not_utf8 = b"{\"patientId\": \"\xff\", \"timestamp\": 0, \"medication\": \"m\"}";
    let cases: [(&[u8], &str); 9] = [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"usage please", "not valid JSON"),
        (
            br#"{"patientId": "1", "timestamp": 0, "medication": "m",}"#,
            "not valid JSON",
        ),
        (
            br#"{patientId: "1", timestamp: 0, medication: "m"}"#,
            "not valid JSON",
        ),
        (
            br#"{"patientId": "1", "timestamp": 0, "medication": "m"} {}"#,
            "not valid JSON",
        ),
        (not_utf8, "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ];
    assert_bodies_refused(&cases);
}

#[test]
fn a_missing_or_repeated_field_gets_400_naming_it_and_nothing_is_written() {
    assert_bodies_refused(&[
        ("{}", "missing field patientId"),
        (
            r#"{"timestamp": 0, "medication": "m"}"#,
            "missing field patientId",
        ),
        (
            r#"{"patientId": "1", "medication": "m"}"#,
            "missing field timestamp",
        ),
        (
            r#"{"patientId": "1", "timestamp": 0}"#,
            "missing field medication",
        ),
        (
            r#"{"patientId": "1", "timestamp": 0, "medication": "m", "medication": "n"}"#,
            "field medication appears more than once",
        ),
    ]);
}

#[test]
fn a_mistyped_field_gets_400_naming_the_field_and_nothing_is_written() {
    assert_bodies_refused(&[
        (usage("true", "0", r#""m""#), "field patientId must be"),
        (usage("-1", "0", r#""m""#), "field patientId must be"),
        (usage("1.5", "0", r#""m""#), "field patientId must be"),
        (usage("null", "0", r#""m""#), "field patientId must be"),
        (
            usage(r#"{"$gt": ""}"#, "0", r#""m""#),
            "field patientId must be",
        ),
        (usage(r#""1""#, "1.5", r#""m""#), "field timestamp must be"),
        (usage(r#""1""#, "null", r#""m""#), "field timestamp must be"),
        (usage(r#""1""#, "[0]", r#""m""#), "field timestamp must be"),
        (usage(r#""1""#, "0", "5"), "field medication must be"),
        (usage(r#""1""#, "0", r#"["m"]"#), "field medication must be"),
    ]);
}

#[test]
fn an_unknown_field_such_as_dollar_set_gets_400_and_nothing_is_written() {
    let extra = |field: &str| {
        let body = format!(r#"{{"patientId": "1", "timestamp": 0, "medication": "m", {field}}}"#);
        (
            body,
            "unknown field (allowed: patientId, timestamp, medication, eventId)",
        )
    };
    assert_bodies_refused(&[
        extra(r#""$set": {"medication": "x"}"#),
        extra(r#""_id": 1"#),
        extra(r#""receivedAt": 0"#),
        extra(r#""note": "hi""#),
        (
            r#"{"patientid": "1", "timestamp": 0, "medication": "m"}"#.to_owned(),
            "unknown field",
        ),
    ]);
}

#[test]
fn an_unparseable_timestamp_gets_400_saying_why_and_nothing_is_written() {
    let at = |ts: &str| usage(r#""1""#, ts, r#""m""#);
    let unknown_form = "not in a known form (JavaScript Date.toString(), RFC 3339, or epoch";
    let out_of_range = "outside 1970-01-01 to 9999-12-31";
    assert_bodies_refused(&[
        (at(r#""soon""#), unknown_form),
        (at(r#""1478009511000""#), unknown_form),
        (at(r#""Nov 01 2016 09:11:51 GMT-0500""#), unknown_form),
        (at(r#""Tue Nov 01 2016 09:11:51 EST""#), unknown_form),
        (at(r#""2016/11/01 14:11:51Z""#), unknown_form),
        (
            at(r#""2016-11-01T14:11:51""#),
            "has a date and time but no UTC offset",
        ),
        (
            at(r#""2016-13-01T14:11:51Z""#),
            "a date or time field out of range",
        ),
        (
            at(r#""2016-02-30T14:11:51Z""#),
            "a date or time field out of range",
        ),
        (
            at(r#""Tue Nov 01 2016 25:11:51 GMT-0500""#),
            "a date or time field out of range",
        ),
        (at("-5"), out_of_range),
        (at("253402300800000"), out_of_range),
    ]);
}

#[test]
fn empty_strings_get_400_naming_the_field_and_nothing_is_written() {
    assert_bodies_refused(&[
        (
            usage(r#""""#, "0", r#""m""#),
            "field patientId must not be empty",
        ),
        (
            usage(r#""1""#, "0", r#""""#),
            "field medication must not be empty",
        ),
        (
            usage(r#""1""#, r#""""#, r#""m""#),
            "timestamp is not in a known form",
        ),
    ]);
}

#[test]
fn over_long_fields_get_400_naming_the_field_and_its_limit_and_nothing_is_written() {
    let text = |c: &str, n: usize| format!("\"{}\"", c.repeat(n));
    let s = assert_bodies_refused(&[
        (
            usage(&text("p", 129), "0", r#""m""#),
            "field patientId is longer than 128 bytes",
        ),
        (
            usage(r#""1""#, "0", &text("m", 201)),
            "field medication is longer than 200 bytes",
        ),
        (
            usage(r#""1""#, &text("t", 97), r#""m""#),
            "field timestamp is longer than 96 bytes",
        ),
        // Bytes, not characters: 65 two-byte characters are 130 bytes.
        (
            usage(&text("é", 65), "0", r#""m""#),
            "field patientId is longer than 128 bytes",
        ),
    ]);
    let at_limits = usage(&text("p", 128), "0", &text("m", 200));
    assert_eq!(
        s.post(&at_limits).id(),
        2,
        "fields exactly at their limits are accepted"
    );
}

#[test]
fn an_event_id_that_is_not_a_string_of_1_to_64_bytes_gets_400_naming_it_and_nothing_is_written() {
    let with = |event: &str| {
        format!(r#"{{"patientId": "1", "timestamp": 0, "medication": "m", "eventId": {event}}}"#)
    };
    let wrong_type = "field eventId must be a non-empty string";
    let s = assert_bodies_refused(&[
        (with(r#""""#), "field eventId must not be empty"),
        (
            with(&format!("\"{}\"", "e".repeat(65))),
            "field eventId is longer than 64 bytes",
        ),
        // Bytes, not characters: 33 two-byte characters are 66 bytes.
        (
            with(&format!("\"{}\"", "é".repeat(33))),
            "field eventId is longer than 64 bytes",
        ),
        (with("null"), wrong_type),
        (with("17"), wrong_type),
        (with("true"), wrong_type),
        (with(r#"["e"]"#), wrong_type),
        (with(r#"{"$gt": ""}"#), wrong_type),
        (
            with(r#""a", "eventId": "a""#),
            "field eventId appears more than once",
        ),
    ]);
    let longest = with(&format!("\"{}\"", "e".repeat(64)));
    assert_eq!(
        s.post(&longest).id(),
        2,
        "an eventId of 64 bytes is accepted"
    );
}

/// A POST of `body` with `Idempotency-Key` lines `keys` (each a raw value).
fn post_keyed(keys: &[&str], body: &str) -> Vec<u8> {
    let lines: String = keys
        .iter()
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .collect();
    post_with(
        &format!("Content-Type: application/json\r\n{lines}"),
        body.as_bytes(),
    )
}

#[test]
fn a_malformed_idempotency_key_gets_400_naming_the_header_and_nothing_is_written() {
    let too_long = "k".repeat(65);
    let names = "malformed Idempotency-Key header";
    let cases: Vec<(Vec<u8>, &str)> = ["\"\"", "\"open", "\"a\\\"b\"", "a\\b", "é", &too_long]
        .iter()
        .map(|key| (post_keyed(&[key], USAGE), names))
        .collect();
    assert_requests_refused(&cases);
}

#[test]
fn an_idempotency_key_that_differs_from_the_body_event_id_gets_400_and_nothing_is_written() {
    let body = r#"{"patientId": "1", "timestamp": 0, "medication": "m", "eventId": "evt-a"}"#;
    let s = start();
    let r = exchange(&s, &post_keyed(&["evt-b"], body));
    assert_error(
        &r,
        400,
        "Idempotency-Key header and eventId in the body differ",
    );
    assert_nothing_written(&s);
    let same = exchange(&s, &post_keyed(&["\"evt-a\""], body));
    assert_eq!(same.status, 201, "the same key twice: {}", same.text());
}

#[test]
fn two_idempotency_key_headers_get_400_and_nothing_is_written() {
    let s = start();
    let raw = post_keyed(&["evt-a", "evt-a"], USAGE);
    assert_refused(&s, &raw, 400, "more than one Idempotency-Key header");
    assert_nothing_written(&s);
}

#[test]
fn an_idempotency_key_on_another_route_is_ignored() {
    let s = start();
    let raw = request("GET", "/healthz", "Idempotency-Key: \"\"\r\n", b"");
    assert_eq!(exchange(&s, &raw).status, 200);
}

#[test]
fn a_retry_answered_with_its_first_id_keeps_its_place_among_pipelined_responses() {
    let s = start();
    let event = r#"{"patientId": "1", "timestamp": 0, "medication": "m", "eventId": "evt-p"}"#;
    let first = s.post(event).id();
    let mut c = s.connect();
    let raw = [USAGE, event, USAGE]
        .map(|b| post_json(b.as_bytes()))
        .concat();
    c.send(&raw);
    let ids: Vec<u64> = (0..3).map(|_| c.response().id()).collect();
    assert_eq!(
        ids,
        [first + 1, first, first + 2],
        "responses in request order"
    );
    assert_eq!(s.written(), (3, first + 2), "the retry wrote nothing");
}
