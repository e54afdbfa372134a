//! Documents MongoDB refused for good, taken out of the command they were
//! sent in, for another attempt or for the dead-letter collection
//! (`--dead-letter-collection`).
//!
//! A refused document is copied out of its command byte for byte, so it is
//! tried again, and dead-lettered, exactly as it would have been stored.
//! Its dead letter is that document with two fields more:
//!
//! ```js
//! {_id: NumberLong(<the id of the 201>), patientId, timestamp, medication, receivedAt,
//!  eventId, source,   // when the usage had them
//!  error: {code: 121, message: "Document failed validation"},
//!  deadLetteredAt: ISODate(...)}
//! ```
//!
//! The `_id` stays the same, so a dead letter sent twice (a crash between
//! MongoDB's confirmation and the checkpoint) is stored once: the second
//! insert gets a duplicate `_id`, which counts as done, as any replay does.

use mongodb::bson::{DateTime, RawDocument, RawDocumentBuf, rawdoc};

use super::{Concern, InsertCommand, Refusal};
use crate::limits::DEAD_LETTER_MESSAGE_BYTES_MAX;

/// One refused document and why.
#[derive(Debug)]
pub struct RefusedDocument {
    /// The document's `_id`, the id of its 201: the one thing about it a
    /// log line may name.
    pub id: i64,
    /// The document as sent (a dead letter once [`into_dead_letters`] ran).
    document: RawDocumentBuf,
    /// Why MongoDB refused it the last time.
    pub refusal: Refusal,
}

/// The documents of the insert `command` that `refused` names, in their
/// order in the command.
///
/// # Panics
/// If `command` is not an insert command with a `documents` array of
/// documents with an Int64 `_id`: every command here is built by
/// [`InsertCommand`] from WAL records or from such documents, so that would
/// be a bug, not something MongoDB or a client can cause. Indexes beyond the
/// array are left out ([`super::mongo::read_reply`] refuses those replies).
pub fn take(command: &[u8], mut refused: Vec<Refusal>) -> Vec<RefusedDocument> {
    refused.sort_unstable_by_key(|r| r.index);
    let documents = RawDocument::from_bytes(command)
        .ok()
        .and_then(|c| c.get_array("documents").ok())
        .expect("an InsertCommand is BSON with a documents array");
    let mut wanted = refused.into_iter().peekable();
    let mut out = Vec::with_capacity(wanted.len());
    for (i, item) in documents.into_iter().enumerate() {
        let Some(refusal) = wanted.next_if(|r| r.index as usize == i) else {
            continue;
        };
        let document = item
            .ok()
            .and_then(|b| b.as_document())
            .expect("an InsertCommand's documents are documents");
        out.push(RefusedDocument {
            id: document
                .get_i64("_id")
                .expect("every usage has an Int64 _id"),
            document: document.to_raw_document_buf(),
            refusal,
        });
        if wanted.peek().is_none() {
            break;
        }
    }
    out
}

/// An `insert` of `docs`, as they are, into `collection`.
pub fn insert_command(docs: &[RefusedDocument], collection: &str, concern: Concern) -> Vec<u8> {
    let mut cmd = InsertCommand::start(Vec::new(), collection, concern);
    for d in docs {
        cmd.push_document(d.document.as_bytes());
    }
    cmd.finish()
}

/// Makes each refused document its dead letter: the same document, with
/// its `error` (code and message) and the time `at`.
pub fn into_dead_letters(mut docs: Vec<RefusedDocument>, at: DateTime) -> Vec<RefusedDocument> {
    for d in &mut docs {
        let message = truncated(&d.refusal.message, DEAD_LETTER_MESSAGE_BYTES_MAX);
        d.document.append(
            "error",
            rawdoc! {"code": d.refusal.code, "message": message},
        );
        d.document.append("deadLetteredAt", at);
    }
    docs
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{
        DEAD_LETTER_BYTES_MAX, EVENT_ID_BYTES_MAX, KEY_ID_BYTES_MAX, MEDICATION_BYTES_MAX,
        PATIENT_ID_BYTES_MAX, SEQ_MAX,
    };
    use crate::wal::Id;
    use crate::wal::record::Record;
    use mongodb::bson::{Bson, doc};

    fn batch(records: &[Record<'_>]) -> Vec<u8> {
        let mut cmd = InsertCommand::start(Vec::new(), "usages", Concern::Journaled);
        for r in records {
            cmd.push(r);
        }
        cmd.finish()
    }

    fn record(id: u64, medication: &str) -> Record<'_> {
        Record {
            id: Id::from_raw(id),
            received_at_ms: 2000,
            timestamp_ms: 1000,
            patient_id: "100",
            medication,
            event_id: None,
            source: None,
        }
    }

    fn refusal(index: u32, code: i32, message: &str) -> Refusal {
        Refusal {
            index,
            code,
            message: message.into(),
        }
    }

    fn documents(command: &[u8]) -> Vec<mongodb::bson::Document> {
        let doc = RawDocumentBuf::from_bytes(command.to_vec())
            .expect("BSON")
            .to_document()
            .expect("decodes");
        doc.get_array("documents")
            .expect("documents")
            .iter()
            .map(|d| d.as_document().expect("a document").clone())
            .collect()
    }

    #[test]
    fn the_refused_documents_are_taken_out_whole_and_sent_again_as_they_were() {
        let cmd = batch(&[
            record(1, "a"),
            record(2, "b"),
            record(3, "c"),
            record(4, "d"),
        ]);
        let refused = vec![refusal(3, 11000, "dup"), refusal(1, 121, "invalid")];
        let taken = take(&cmd, refused);
        let ids: Vec<i64> = taken.iter().map(|d| d.id).collect();
        assert_eq!(ids, [2, 4]);
        assert_eq!(taken[0].refusal.code, 121);
        let again = insert_command(&taken, "usages", Concern::Journaled);
        let (before, after) = (documents(&cmd), documents(&again));
        assert_eq!(after, [before[1].clone(), before[3].clone()]);
    }

    #[test]
    fn a_dead_letter_is_the_document_with_its_error_and_time() {
        let cmd = batch(&[record(7, "Poison")]);
        let taken = take(&cmd, vec![refusal(0, 121, "Document failed validation")]);
        let at = DateTime::from_millis(5000);
        let letters = into_dead_letters(taken, at);
        let sent = insert_command(&letters, "usages_deadletter", Concern::Majority);
        let raw = RawDocumentBuf::from_bytes(sent.clone()).expect("BSON");
        assert_eq!(raw.get_str("insert"), Ok("usages_deadletter"));
        assert_eq!(
            documents(&sent),
            [doc! {
                "_id": 7i64,
                "patientId": "100",
                "timestamp": DateTime::from_millis(1000),
                "medication": "Poison",
                "receivedAt": DateTime::from_millis(2000),
                "error": {"code": 121, "message": "Document failed validation"},
                "deadLetteredAt": at,
            }]
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_key_id_that_wrote_its_usage() {
        let with_source = Record {
            source: Some("app-1"),
            ..record(9, "Poison")
        };
        let taken = take(&batch(&[with_source]), vec![refusal(0, 121, "invalid")]);
        let letters = into_dead_letters(taken, DateTime::from_millis(1));
        let stored = documents(&insert_command(&letters, "d", Concern::Journaled));
        assert_eq!(stored[0].get_str("source"), Ok("app-1"));
    }

    #[test]
    fn a_dead_letter_of_the_largest_usage_with_a_long_message_fits_its_bound() {
        let patient = "p".repeat(PATIENT_ID_BYTES_MAX);
        let medication = "m".repeat(MEDICATION_BYTES_MAX);
        let event = "e".repeat(EVENT_ID_BYTES_MAX);
        let source = "k".repeat(KEY_ID_BYTES_MAX);
        let largest = Record {
            id: Id::new(0, SEQ_MAX),
            received_at_ms: i64::MAX,
            timestamp_ms: i64::MIN,
            patient_id: &patient,
            medication: &medication,
            event_id: Some(&event),
            source: Some(&source),
        };
        let cmd = batch(&[largest]);
        let long = "é".repeat(DEAD_LETTER_MESSAGE_BYTES_MAX);
        let letters =
            into_dead_letters(take(&cmd, vec![refusal(0, i32::MAX, &long)]), DateTime::MAX);
        let bytes = letters[0].document.as_bytes().len();
        assert!(
            bytes <= DEAD_LETTER_BYTES_MAX,
            "a dead letter took {bytes} bytes"
        );
        let stored = documents(&insert_command(&letters, "c", Concern::Journaled));
        let message = stored[0]
            .get_document("error")
            .and_then(|e| e.get_str("message"))
            .expect("a message");
        assert!(message.len() <= DEAD_LETTER_MESSAGE_BYTES_MAX);
        assert!(long.starts_with(message), "cut at a character boundary");
        assert!(matches!(stored[0].get("_id"), Some(Bson::Int64(_))));
    }
}
