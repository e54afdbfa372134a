//! Where delivered records go: the last step of the data flow.
//!
//! [`Sink`] is the seam between the flusher and MongoDB. The one
//! implementation, [`mongo::MongoSink`], sends a standard `insert` command
//! (unordered, with a journaled write concern) and sorts the outcome three
//! ways:
//! - a document stored, or already stored: a duplicate `_id` (code 11000
//!   on the `_id` index) is an earlier attempt's document, and a duplicate
//!   on the `{patientId, eventId}` index is an event the device sent
//!   before, so both count as delivered;
//! - a document refused for good: any other per-document write error
//!   (`writeErrors`), such as a schema validator's 121 or an 11000 on
//!   another unique index, comes back as a [`Refusal`] with its index in
//!   the batch, while the batch's other documents are stored;
//! - a batch not (known to be) stored: no answer, a write-concern error,
//!   a per-document error that names the server's state rather than the
//!   document ("not primary", interrupted, timed out), or a command error.
//!   That is a [`SinkError`], and the flusher retries the batch for as long
//!   as it lasts.
//!
//! [`deadletter`] takes refused documents out of a command, for another
//! attempt or for the dead-letter collection.

pub mod deadletter;
pub mod encode;
pub mod mongo;

pub use encode::{Concern, InsertCommand};

/// A batch MongoDB has answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivered {
    /// Documents stored by this attempt.
    pub inserted: u64,
    /// Documents MongoDB already had from an earlier attempt.
    pub duplicates: u64,
    /// Documents whose `(patientId, eventId)` MongoDB already had: a device
    /// sent the event again (a retry, maybe through another node), and the
    /// first copy stays the stored one.
    pub events_deduplicated: u64,
    /// Documents MongoDB refused; retrying the same document cannot help.
    pub refused: Vec<Refusal>,
}

/// One document MongoDB refused for good (a per-document write error that
/// is not about the server's state).
#[derive(Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The document's position in the command's `documents`.
    pub index: u32,
    /// The server's error code (121 a validator, 11000 a unique index).
    pub code: i32,
    /// The server's `errmsg`. It may quote the document's values, so it goes
    /// into the dead-letter document only: `Debug` leaves it out, and no log
    /// line carries it.
    pub message: String,
}

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusal")
            .field("index", &self.index)
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

/// Why a batch is not (known to be) stored. Every kind is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The connection failed (I/O, DNS, a cleared pool), or the server gave a
    /// code that means "not now" (a failover, a shutdown, a write conflict);
    /// holds the detail.
    #[error("cannot reach MongoDB: {0}")]
    Network(String),
    /// The driver found no usable server within its selection timeout.
    #[error("no MongoDB server selected: {0}")]
    ServerSelection(String),
    /// A socket timed out, or the server hit a time limit (`maxTimeMS`).
    #[error("MongoDB timed out: {0}")]
    Timeout(String),
    /// MongoDB did not confirm the write concern (journaled, or majority);
    /// the batch is sent again and what was stored comes back as duplicates.
    #[error("write concern not satisfied: {0}")]
    WriteConcern(String),
    /// The driver reported a write error for the call as a whole; holds its
    /// code. Per-document refusals in a reply are [`Refusal`]s instead.
    #[error("MongoDB refused a document: {0}")]
    Write(String),
    /// Anything else: a malformed or inconsistent reply, a command error
    /// with no transient code, an unexpected driver error.
    #[error("MongoDB error: {0}")]
    Other(String),
}

impl SinkError {
    /// The label of this error in `busyapi_mongo_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Network(_) => "network",
            SinkError::ServerSelection(_) => "server_selection",
            SinkError::Timeout(_) => "timeout",
            SinkError::WriteConcern(_) => "write_concern",
            SinkError::Write(_) => "write",
            SinkError::Other(_) => "other",
        }
    }

    /// Whether the error means MongoDB could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SinkError::Network(_) | SinkError::ServerSelection(_) | SinkError::Timeout(_)
        )
    }
}

/// The flusher's view of MongoDB.
pub trait Sink: Send + Sync {
    /// Stores a finished [`InsertCommand`] of `records` documents. `Ok`
    /// means every document is accounted for: stored, already there, or
    /// refused.
    fn insert(&self, command: Vec<u8>, records: u64) -> Result<Delivered, SinkError>;
    /// Creates `{patientId: 1, timestamp: 1}` and the unique, partial
    /// `{patientId: 1, eventId: 1}` if they are missing.
    fn ensure_index(&self) -> Result<(), SinkError>;
    /// Checks that MongoDB answers (`ping`).
    fn ping(&self) -> Result<(), SinkError>;
}
