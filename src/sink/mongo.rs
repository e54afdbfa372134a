//! [`Sink`] over the `mongodb` crate's synchronous client.
//!
//! The batch goes out as a raw `insert` command ([`super::InsertCommand`]) built
//! from WAL bytes; the driver adds the session and cluster time. Only
//! standard commands are used (`insert`, `createIndexes`, the driver's own
//! `hello`, and a `find` of the node's highest `_id` on a new data
//! directory), so a standalone mongod, a replica set and a mongos behave
//! the same.
//!
//! Server messages are not copied into logs or errors beyond their code and
//! code name: a server may quote a document's values in `errmsg`. A refused
//! document's `errmsg` is kept, in its [`super::Refusal`], for its dead
//! letter alone.

use std::ops::Range;
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::sync::{Client, Collection, Database};

use super::{Delivered, Refusal, Sink, SinkError};
use crate::wal::Id;

/// How long the driver looks for a usable server before an attempt fails.
/// Short, so the flusher notices an outage, backs off and logs it promptly.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connect timeout to a MongoDB server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The MongoDB error code of a duplicate key.
const DUPLICATE_KEY: i32 = 11000;
/// The name MongoDB gives the `_id` index.
const ID_INDEX_NAME: &str = "_id_";
/// The unique index that makes a `(patientId, eventId)` one document. It
/// covers only documents with an eventId, so usages without one are stored
/// as before; it includes the hashed shard key's field, so a sharded
/// cluster can enforce it.
pub const EVENT_INDEX_NAME: &str = "patientId_eventId_unique";
/// Server error codes that mean "not now, try again" rather than a bad
/// request or a bad document: a host unreachable or not found (6, 7), a
/// network timeout (89), shutting down or interrupted by it (91, 11600), a
/// write conflict (112), no longer or not primary (189, 10107, 13435,
/// 13436), interrupted by a replica-set state change (11602). A document
/// refused with one of these is tried again, for as long as it lasts.
const TRANSIENT_CODES: [i32; 11] = [6, 7, 89, 91, 112, 189, 10107, 11600, 11602, 13435, 13436];
/// Server error codes of a time limit: `maxTimeMS` expired (50), a time
/// limit exceeded (262). Retried like a timeout of the driver's own.
const TIMEOUT_CODES: [i32; 2] = [50, 262];

/// The [`Sink`] for MongoDB through the driver's sync API: batches go as
/// raw `insert` commands on the database, the index is made on the
/// collection.
pub struct MongoSink {
    db: Database,
    coll: Collection<Document>,
}

impl MongoSink {
    /// Builds a client. This does no I/O for a `mongodb://` URI, so it works
    /// while MongoDB is down; a `mongodb+srv://` URI needs DNS here.
    pub fn connect(uri: &str, database: &str, collection: &str) -> Result<MongoSink, SinkError> {
        let mut opts = ClientOptions::parse(uri).run().map_err(|e| classify(&e))?;
        opts.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        opts.connect_timeout = Some(CONNECT_TIMEOUT);
        opts.app_name = Some("busyapi".into());
        let client = Client::with_options(opts).map_err(|e| classify(&e))?;
        let db = client.database(database);
        let coll = db.collection(collection);
        Ok(MongoSink { db, coll })
    }

    /// The highest `_id` in `ids` in the collection, if any: with
    /// [`Id::range_of`], the ids one node has stored. A range query on
    /// `_id` with a sort and a limit of one, which the `_id` index answers
    /// on a mongod and every shard.
    pub fn highest_id(&self, ids: Range<Id>) -> Result<Option<Id>, SinkError> {
        let (Ok(lo), Ok(hi)) = (i64::try_from(ids.start.raw()), i64::try_from(ids.end.raw()))
        else {
            return Err(SinkError::Other("id range beyond i64".into()));
        };
        let mut cursor = self
            .coll
            .find(doc! {"_id": {"$gte": lo, "$lt": hi}})
            .sort(doc! {"_id": -1})
            .limit(1)
            .projection(doc! {"_id": 1})
            .run()
            .map_err(|e| classify(&e))?;
        let Some(found) = cursor.next() else {
            return Ok(None);
        };
        let found = found.map_err(|e| classify(&e))?;
        // The filter matched it, so it is a number in `[lo, hi)`.
        match found.get("_id") {
            Some(Bson::Int64(n)) => Ok(Some(Id::from_raw(n.unsigned_abs()))),
            Some(Bson::Int32(n)) => Ok(Some(Id::from_raw(u64::from(n.unsigned_abs())))),
            Some(Bson::Double(f)) => Ok(Some(Id::from_raw(f.ceil() as u64))),
            other => Err(SinkError::Other(format!(
                "an _id in this node's range is not an integer: {:?}",
                other.map(Bson::element_type)
            ))),
        }
    }
}

impl Sink for MongoSink {
    fn insert(&self, command: Vec<u8>, records: u64) -> Result<Delivered, SinkError> {
        let raw = RawDocumentBuf::from_bytes(command)
            .map_err(|e| SinkError::Other(format!("bad command: {e}")))?;
        let reply = self
            .db
            .run_raw_command(raw)
            .run()
            .map_err(|e| classify(&e))?;
        read_reply(&reply, records)
    }

    fn ping(&self) -> Result<(), SinkError> {
        self.db
            .run_command(doc! {"ping": 1})
            .run()
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    fn ensure_index(&self) -> Result<(), SinkError> {
        let by_time = IndexModel::builder()
            .keys(doc! {"patientId": 1, "timestamp": 1})
            .build();
        self.coll
            .create_indexes([by_time, event_index()])
            .run()
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

/// `{patientId: 1, eventId: 1}`, unique over the documents that have an
/// eventId: at most one document per real event, across retries, nodes
/// and restarts.
pub fn event_index() -> IndexModel {
    let options = IndexOptions::builder()
        .name(EVENT_INDEX_NAME.to_owned())
        .unique(true)
        .partial_filter_expression(doc! {"eventId": {"$exists": true}})
        .build();
    IndexModel::builder()
        .keys(doc! {"patientId": 1, "eventId": 1})
        .options(options)
        .build()
}

/// Reads an `insert` reply (`ok: 1`; `n`, `writeErrors`, `writeConcernError`).
pub fn read_reply(reply: &Document, records: u64) -> Result<Delivered, SinkError> {
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(SinkError::WriteConcern(code_of(wce)));
    }
    let (mut duplicates, mut events_deduplicated) = (0, 0);
    let mut refused = Vec::new();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors {
            let e = e
                .as_document()
                .ok_or_else(|| SinkError::Other("malformed writeErrors".into()))?;
            if is_duplicate_on(e, &["_id"], ID_INDEX_NAME) {
                duplicates += 1;
            } else if is_duplicate_on(e, &["patientId", "eventId"], EVENT_INDEX_NAME) {
                events_deduplicated += 1;
            } else {
                refused.push(refusal(e, records)?);
            }
        }
    }
    let inserted = match reply.get("n") {
        Some(n) => n
            .as_i64()
            .or_else(|| n.as_i32().map(i64::from))
            .unwrap_or(-1),
        None => -1,
    };
    let inserted =
        u64::try_from(inserted).map_err(|_| SinkError::Other("insert reply without n".into()))?;
    if inserted + duplicates + events_deduplicated + refused.len() as u64 != records {
        return Err(SinkError::Other(format!(
            "MongoDB confirmed {inserted} inserted, {duplicates} duplicates, {events_deduplicated} events deduplicated and {} refused of {records} documents",
            refused.len()
        )));
    }
    Ok(Delivered {
        inserted,
        duplicates,
        events_deduplicated,
        refused,
    })
}

/// A write error that is not a replay: a [`Refusal`] of that one document,
/// unless its code is about the server's state, which makes the whole batch
/// an error to retry.
fn refusal(e: &Document, records: u64) -> Result<Refusal, SinkError> {
    let code = e
        .get_i32("code")
        .map_err(|_| SinkError::Other("a write error without a code".into()))?;
    if let Some(transient) = transient(code, code_of(e)) {
        return Err(transient);
    }
    let index = e
        .get_i32("index")
        .ok()
        .and_then(|i| u32::try_from(i).ok())
        .filter(|&i| u64::from(i) < records)
        .ok_or_else(|| {
            SinkError::Other(format!(
                "a write error ({}) names no document of the batch",
                code_of(e)
            ))
        })?;
    Ok(Refusal {
        index,
        code,
        message: e.get_str("errmsg").unwrap_or_default().to_owned(),
    })
}

/// The error kind of a server code that means "not now" rather than "not
/// this document": `None` for every other code.
fn transient(code: i32, what: String) -> Option<SinkError> {
    if TIMEOUT_CODES.contains(&code) {
        Some(SinkError::Timeout(what))
    } else if TRANSIENT_CODES.contains(&code) {
        Some(SinkError::Network(what))
    } else {
        None
    }
}

/// Whether a write error is a duplicate key on the index of exactly `keys`
/// (for a server whose write errors carry no `keyPattern`: whose message
/// names the index `index_name`, as `index: <name> `).
/// On `_id`, an earlier attempt stored the document; on `{patientId,
/// eventId}`, the device sent the event before. A duplicate key on any
/// other unique index means the document was refused: it is not delivered.
fn is_duplicate_on(e: &Document, keys: &[&str], index_name: &str) -> bool {
    if e.get_i32("code") != Ok(DUPLICATE_KEY) {
        return false;
    }
    match e.get_document("keyPattern") {
        Ok(pattern) => pattern.keys().eq(keys.iter().copied()),
        Err(_) => e
            .get_str("errmsg")
            .is_ok_and(|m| m.contains(&format!("index: {index_name} "))),
    }
}

fn code_of(e: &Document) -> String {
    let code = e.get_i32("code").unwrap_or(0);
    match e.get_str("codeName") {
        Ok(name) if !name.is_empty() => format!("code {code} {name}"),
        _ => format!("code {code}"),
    }
}

/// Sorts a driver error into a [`SinkError`] kind.
pub fn classify(e: &Error) -> SinkError {
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. } => {
            SinkError::ServerSelection("no server available".into())
        }
        ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            SinkError::Timeout(io.to_string())
        }
        ErrorKind::Io(io) => SinkError::Network(io.to_string()),
        ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => SinkError::Network(e.to_string()),
        ErrorKind::Command(c) => {
            let what = format!("code {} {}", c.code, c.code_name);
            transient(c.code, what.clone()).unwrap_or(SinkError::Other(what))
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            SinkError::WriteConcern(format!("code {} {}", w.code, w.code_name))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            SinkError::Write(format!("code {}", w.code))
        }
        ErrorKind::InvalidArgument { message, .. } => SinkError::Other(message.clone()),
        _ => SinkError::Other("unexpected driver error".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_reply_is_delivered() {
        assert_eq!(
            read_reply(&doc! {"n": 3, "ok": 1.0}, 3),
            Ok(Delivered {
                inserted: 3,
                ..Delivered::default()
            })
        );
    }

    #[test]
    fn duplicate_ids_only_count_as_delivered() {
        let reply = doc! {"n": 1, "ok": 1.0, "writeErrors": [
            {"index": 0, "code": 11000, "keyPattern": {"_id": 1}, "keyValue": {"_id": 7i64}, "errmsg": "dup"},
            {"index": 2, "code": 11000, "errmsg": "E11000 duplicate key error collection: b.usages index: _id_ dup key: { _id: 9 }"},
        ]};
        assert_eq!(
            read_reply(&reply, 3),
            Ok(Delivered {
                inserted: 1,
                duplicates: 2,
                events_deduplicated: 0,
                refused: Vec::new(),
            })
        );
    }

    #[test]
    fn a_duplicate_on_the_event_index_is_a_replayed_event_not_a_refusal() {
        let reply = doc! {"n": 1, "ok": 1.0, "writeErrors": [
            {"index": 0, "code": 11000, "keyPattern": {"patientId": 1, "eventId": 1}, "keyValue": {"patientId": "secret", "eventId": "e"}, "errmsg": "dup"},
            {"index": 1, "code": 11000, "errmsg": "E11000 duplicate key error collection: b.usages index: patientId_eventId_unique dup key: { patientId: \"secret\", eventId: \"e\" }"},
            {"index": 2, "code": 11000, "keyPattern": {"_id": 1}, "errmsg": "dup"},
        ]};
        assert_eq!(
            read_reply(&reply, 4),
            Ok(Delivered {
                inserted: 1,
                duplicates: 1,
                events_deduplicated: 2,
                refused: Vec::new(),
            })
        );
    }

    #[test]
    fn a_duplicate_on_an_index_merely_like_the_event_index_is_refused() {
        for e in [
            doc! {"index": 0, "code": 11000, "keyPattern": {"eventId": 1, "patientId": 1}},
            doc! {"index": 0, "code": 11000, "keyPattern": {"eventId": 1}},
            doc! {"index": 0, "code": 11000, "keyPattern": {"patientId": 1, "eventId": 1, "timestamp": 1}},
            doc! {"index": 0, "code": 121, "keyPattern": {"patientId": 1, "eventId": 1}},
        ] {
            let reply = doc! {"n": 0, "ok": 1.0, "writeErrors": [e.clone()]};
            let d = read_reply(&reply, 1).expect("answered");
            assert_eq!((d.refused.len(), d.events_deduplicated), (1, 0), "{e}");
        }
    }

    #[test]
    fn a_validator_refusal_is_a_refused_document_and_the_others_count() {
        let reply = doc! {"n": 1, "ok": 1.0, "writeErrors": [
            {"index": 0, "code": 11000, "keyPattern": {"_id": 1}, "errmsg": "dup"},
            {"index": 2, "code": 121, "codeName": "DocumentValidationFailure", "errmsg": "secret value"},
        ]};
        let d = read_reply(&reply, 3).expect("answered");
        assert_eq!((d.inserted, d.duplicates), (1, 1));
        let [r] = &d.refused[..] else {
            panic!("{:?}", d.refused)
        };
        assert_eq!(
            (r.index, r.code, r.message.as_str()),
            (2, 121, "secret value")
        );
        assert!(!format!("{r:?}").contains("secret"), "{r:?}");
    }

    #[test]
    fn a_duplicate_on_another_unique_index_is_a_refused_document() {
        for e in [
            doc! {"index": 0, "code": 11000, "keyPattern": {"patientId": 1}, "keyValue": {"patientId": "secret"}},
            doc! {"index": 0, "code": 11000, "keyPattern": {"_id": 1, "patientId": 1}},
            doc! {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key error collection: b.usages index: patientId_1 dup key: { patientId: \"secret\" }"},
            doc! {"index": 0, "code": 11000},
        ] {
            let reply = doc! {"n": 0, "ok": 1.0, "writeErrors": [e]};
            let d = read_reply(&reply, 1).expect("answered");
            assert_eq!(d.refused.len(), 1, "{d:?}");
            assert_eq!((d.inserted, d.duplicates, d.refused[0].code), (0, 0, 11000));
        }
    }

    #[test]
    fn a_document_refused_for_the_servers_state_makes_the_batch_an_error_to_retry() {
        for code in [10107, 11602, 112, 50, 262] {
            let reply = doc! {"n": 1, "ok": 1.0, "writeErrors": [
                {"index": 1, "code": code, "errmsg": "secret value"},
            ]};
            match read_reply(&reply, 2) {
                Err(e) => assert!(e.is_unreachable(), "{code}: {e}"),
                Ok(d) => panic!("code {code} taken for a refusal: {d:?}"),
            }
        }
    }

    #[test]
    fn a_write_error_naming_no_document_of_the_batch_is_an_error() {
        for e in [
            doc! {"index": 5, "code": 121},
            doc! {"index": -1, "code": 121},
            doc! {"code": 121},
            doc! {"index": 0},
        ] {
            let reply = doc! {"n": 1, "ok": 1.0, "writeErrors": [e.clone()]};
            assert!(
                matches!(read_reply(&reply, 2), Err(SinkError::Other(_))),
                "{e}"
            );
        }
    }

    #[test]
    fn a_write_concern_error_is_retried_even_if_all_were_inserted() {
        let reply = doc! {"n": 3, "ok": 1.0, "writeConcernError": {"code": 64, "codeName": "WriteConcernFailed"}};
        assert!(matches!(
            read_reply(&reply, 3),
            Err(SinkError::WriteConcern(_))
        ));
    }

    #[test]
    fn a_count_that_does_not_add_up_is_an_error() {
        assert!(matches!(
            read_reply(&doc! {"n": 2, "ok": 1.0}, 3),
            Err(SinkError::Other(_))
        ));
        assert!(matches!(
            read_reply(&doc! {"ok": 1.0}, 3),
            Err(SinkError::Other(_))
        ));
    }
}
