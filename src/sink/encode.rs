//! WAL records → one BSON `insert` command, written byte by byte into a
//! reused buffer: no intermediate document per record, no copy per record.
//!
//! Each document is
//! `{_id: Int64, patientId: String, timestamp: Date, medication: String, receivedAt: Date}`,
//! then `eventId: String` when the usage had one, and `source: String`
//! (the id of the API key that wrote it) when auth was on.
//! The `_id` is the id of the 201, so a replayed batch collides with
//! itself (duplicate key) instead of storing a record twice.

use crate::wal::record::Record;

const BSON_STRING: u8 = 0x02;
const BSON_DOCUMENT: u8 = 0x03;
const BSON_ARRAY: u8 = 0x04;
const BSON_BOOL: u8 = 0x08;
const BSON_DATETIME: u8 = 0x09;
const BSON_INT32: u8 = 0x10;
const BSON_INT64: u8 = 0x12;

/// Server-side time limit of one insert (`maxTimeMS`). The Rust driver has
/// no socket timeout, so this is what bounds a batch on a server that is up
/// but stuck; the batch is then retried like any other failure.
pub const INSERT_MAX_TIME_MS: i32 = 60_000;

/// The write concern sent with every insert (`--write-concern`, whose
/// `--help` lists these docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Concern {
    /// `w:1, j:true`: acknowledged once journaled on the primary.
    Journaled,
    /// `w:"majority", j:true`: for replica sets; survives a failover.
    Majority,
}

/// Builds `{insert, ordered: false, writeConcern, documents: [...]}`.
pub struct InsertCommand {
    buf: Vec<u8>,
    /// Where the `documents` array's length goes, and where its body began.
    array_at: usize,
    records: u32,
}

impl InsertCommand {
    /// Starts a command for `collection`, reusing `buf`'s allocation.
    pub fn start(mut buf: Vec<u8>, collection: &str, concern: Concern) -> InsertCommand {
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        string(&mut buf, "insert", collection);
        element(&mut buf, BSON_BOOL, "ordered");
        buf.push(0);
        element(&mut buf, BSON_INT32, "maxTimeMS");
        buf.extend_from_slice(&INSERT_MAX_TIME_MS.to_le_bytes());
        element(&mut buf, BSON_DOCUMENT, "writeConcern");
        let wc_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        match concern {
            Concern::Journaled => {
                element(&mut buf, BSON_INT32, "w");
                buf.extend_from_slice(&1i32.to_le_bytes());
            }
            Concern::Majority => string(&mut buf, "w", "majority"),
        }
        element(&mut buf, BSON_BOOL, "j");
        buf.push(1);
        close(&mut buf, wc_at);
        element(&mut buf, BSON_ARRAY, "documents");
        let array_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        InsertCommand {
            buf,
            array_at,
            records: 0,
        }
    }

    /// Appends one record as the next document.
    pub fn push(&mut self, r: &Record<'_>) {
        self.next_key();
        let buf = &mut self.buf;
        let doc_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        element(buf, BSON_INT64, "_id");
        buf.extend_from_slice(&(r.id.raw() as i64).to_le_bytes());
        string(buf, "patientId", r.patient_id);
        element(buf, BSON_DATETIME, "timestamp");
        buf.extend_from_slice(&r.timestamp_ms.to_le_bytes());
        string(buf, "medication", r.medication);
        element(buf, BSON_DATETIME, "receivedAt");
        buf.extend_from_slice(&r.received_at_ms.to_le_bytes());
        if let Some(event_id) = r.event_id {
            string(buf, "eventId", event_id);
        }
        if let Some(source) = r.source {
            string(buf, "source", source);
        }
        close(buf, doc_at);
        self.records += 1;
    }

    /// Appends a BSON document as it is (a refused document tried again,
    /// or its dead letter).
    pub fn push_document(&mut self, document: &[u8]) {
        self.next_key();
        self.buf.extend_from_slice(document);
        self.records += 1;
    }

    /// The key of the next element of `documents`: its index.
    fn next_key(&mut self) {
        let mut index = itoa::Buffer::new();
        element(&mut self.buf, BSON_DOCUMENT, index.format(self.records));
    }

    /// Documents appended so far.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Closes the array and the command and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        close(&mut self.buf, self.array_at);
        close(&mut self.buf, 0);
        self.buf
    }
}

fn element(buf: &mut Vec<u8>, kind: u8, key: &str) {
    debug_assert!(!key.as_bytes().contains(&0), "BSON keys are C strings");
    buf.push(kind);
    buf.extend_from_slice(key.as_bytes());
    buf.push(0);
}

/// A string element. BSON strings are length-prefixed, so an embedded NUL in
/// a value is stored as is.
fn string(buf: &mut Vec<u8>, key: &str, value: &str) {
    element(buf, BSON_STRING, key);
    buf.extend_from_slice(&(value.len() as i32 + 1).to_le_bytes());
    buf.extend_from_slice(value.as_bytes());
    buf.push(0);
}

/// Terminates the document that starts at `at` and writes its length.
fn close(buf: &mut Vec<u8>, at: usize) {
    buf.push(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Id;
    use mongodb::bson::{Bson, DateTime, RawDocumentBuf, doc};

    fn record(id: u64, pid: &'static str) -> Record<'static> {
        Record {
            id: Id::from_raw(id),
            received_at_ms: 2000,
            timestamp_ms: 1000,
            patient_id: pid,
            medication: "Albuterol",
            event_id: None,
            source: None,
        }
    }

    #[test]
    fn the_command_decodes_as_the_documented_documents() {
        let mut cmd = InsertCommand::start(Vec::new(), "usages", Concern::Journaled);
        cmd.push(&record(7, "100"));
        cmd.push(&record(8, "nul\0inside"));
        assert_eq!(cmd.records(), 2);
        let raw = RawDocumentBuf::from_bytes(cmd.finish()).expect("valid BSON");
        let doc = raw.to_document().expect("decodes");
        assert_eq!(doc.get_str("insert"), Ok("usages"));
        assert_eq!(doc.get_bool("ordered"), Ok(false));
        assert_eq!(doc.get_i32("maxTimeMS"), Ok(INSERT_MAX_TIME_MS));
        assert_eq!(
            doc.get_document("writeConcern").expect("wc"),
            &doc! {"w": 1, "j": true}
        );
        let docs = doc.get_array("documents").expect("documents");
        assert_eq!(
            docs[0],
            Bson::Document(doc! {
                "_id": 7i64,
                "patientId": "100",
                "timestamp": DateTime::from_millis(1000),
                "medication": "Albuterol",
                "receivedAt": DateTime::from_millis(2000),
            })
        );
        assert_eq!(
            docs[1].as_document().expect("doc").get_str("patientId"),
            Ok("nul\0inside")
        );
    }

    /// The documents of a command of `with` then a plain `record(8, ..)`.
    fn with_and_without(with: Record<'_>) -> Vec<Bson> {
        let mut cmd = InsertCommand::start(Vec::new(), "usages", Concern::Journaled);
        cmd.push(&with);
        cmd.push(&record(8, "100"));
        let raw = RawDocumentBuf::from_bytes(cmd.finish()).expect("valid BSON");
        let doc = raw.to_document().expect("decodes");
        doc.get_array("documents").expect("documents").clone()
    }

    #[test]
    fn an_event_id_is_stored_last_and_only_when_there_is_one() {
        let docs = with_and_without(Record {
            event_id: Some("evt-1"),
            ..record(7, "100")
        });
        let with = docs[0].as_document().expect("doc");
        assert_eq!(with.len(), 6, "{with}");
        assert_eq!(with.keys().last().map(String::as_str), Some("eventId"));
        assert_eq!(with.get_str("eventId"), Ok("evt-1"));
        assert!(!docs[1].as_document().expect("doc").contains_key("eventId"));
    }

    #[test]
    fn a_source_is_stored_after_the_event_id_and_only_when_there_is_one() {
        let docs = with_and_without(Record {
            event_id: Some("evt-1"),
            source: Some("app-1"),
            ..record(7, "100")
        });
        let with = docs[0].as_document().expect("doc");
        let keys: Vec<&str> = with.keys().map(String::as_str).collect();
        assert_eq!((keys.len(), &keys[5..]), (7, &["eventId", "source"][..]));
        assert_eq!(with.get_str("source"), Ok("app-1"));
        assert!(!docs[1].as_document().expect("doc").contains_key("source"));
    }

    #[test]
    fn majority_is_a_string_w() {
        let cmd = InsertCommand::start(Vec::new(), "c", Concern::Majority);
        let raw = RawDocumentBuf::from_bytes(cmd.finish()).expect("valid BSON");
        let doc = raw.to_document().expect("decodes");
        assert_eq!(
            doc.get_document("writeConcern").expect("wc"),
            &doc! {"w": "majority", "j": true}
        );
        assert!(doc.get_array("documents").expect("documents").is_empty());
    }

    #[test]
    fn a_batch_of_the_largest_usages_at_the_record_limit_fits_in_one_bson_command() {
        use crate::limits::{
            BSON_COMMAND_BYTES_MAX, DOCUMENT_BYTES_MAX, EVENT_ID_BYTES_MAX,
            FLUSH_MAX_RECORDS_LIMIT, KEY_ID_BYTES_MAX, MEDICATION_BYTES_MAX, PATIENT_ID_BYTES_MAX,
            SEQ_MAX,
        };
        let patient = "p".repeat(PATIENT_ID_BYTES_MAX);
        let medication = "m".repeat(MEDICATION_BYTES_MAX);
        let event = "e".repeat(EVENT_ID_BYTES_MAX);
        let source = "k".repeat(KEY_ID_BYTES_MAX);
        let collection = "c".repeat(120);
        let largest = |id| Record {
            id,
            received_at_ms: i64::MAX,
            timestamp_ms: i64::MIN,
            patient_id: &patient,
            medication: &medication,
            event_id: Some(&event),
            source: Some(&source),
        };
        let mut cmd = InsertCommand::start(Vec::new(), &collection, Concern::Majority);
        let mut before = cmd.buf.len();
        for i in 0..FLUSH_MAX_RECORDS_LIMIT {
            cmd.push(&largest(Id::new(0, SEQ_MAX - i as u64)));
            let grew = cmd.buf.len() - before;
            assert!(grew <= DOCUMENT_BYTES_MAX, "a usage took {grew} bytes");
            before = cmd.buf.len();
        }
        let bytes = cmd.finish().len();
        assert!(
            bytes <= BSON_COMMAND_BYTES_MAX,
            "{FLUSH_MAX_RECORDS_LIMIT} usages make a {bytes}-byte command"
        );
    }
}
