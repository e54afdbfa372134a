//! The document a usage becomes: stored under its id, with its fields in
//! order and its instants as BSON dates.

use mongodb::bson::DateTime;

use super::*;
use common::{DELIVERY, Opts, USAGE, fresh_usages, shared_mongo, wait_for};

#[test]
fn a_posted_usage_is_stored_under_its_id_with_its_fields_and_bson_dates() {
    const DB: &str = "delivery_fields";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let before_ms = now_ms();
    let text_id = server.post(USAGE).id();
    let number_id = server
        .post(r#"{"patientId": 4242, "timestamp": "2016-11-01T09:11:51.250-05:00", "medication": "Fluticasone 110 mcg"}"#)
        .id();
    let after_ms = now_ms();
    wait_for(DELIVERY, "both usages in MongoDB", || {
        coll.count_documents(doc! {}).run().expect("count") == 2
    });
    for (id, patient, medication, timestamp_ms) in [
        (text_id, "100", "Albuterol", 1_478_009_511_000),
        (number_id, "4242", "Fluticasone 110 mcg", 1_478_009_511_250),
    ] {
        let d = coll
            .find_one(doc! {"_id": id as i64})
            .run()
            .expect("find")
            .unwrap_or_else(|| panic!("no document with _id {id}"));
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["_id", "patientId", "timestamp", "medication", "receivedAt"]
        );
        assert_eq!(d.get("_id"), Some(&Bson::Int64(id as i64)));
        assert_eq!(d.get("patientId"), Some(&Bson::String(patient.into())));
        assert_eq!(d.get("medication"), Some(&Bson::String(medication.into())));
        assert_eq!(
            d.get("timestamp"),
            Some(&Bson::DateTime(DateTime::from_millis(timestamp_ms)))
        );
        match d.get("receivedAt") {
            Some(Bson::DateTime(t)) => assert!(
                (before_ms - 1000..=after_ms + 1000).contains(&t.timestamp_millis()),
                "receivedAt {t} is not between {before_ms} and {after_ms} (ms)"
            ),
            other => panic!("receivedAt is not a date: {other:?}"),
        }
    }
}
