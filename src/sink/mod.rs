//! Where delivered records go: the last step of the data flow.
//!
//! [`Sink`] is the seam between the flusher and MongoDB. The one
//! implementation, [`mongo::MongoSink`], sends a standard `insert` command
//! (unordered, with a journaled write concern) and classifies the outcome:
//! a batch whose only errors are duplicate `_id`s (code 11000 on the `_id`
//! index) was already stored by an earlier attempt and counts as delivered;
//! any other failure, a duplicate key on another unique index included, is
//! an error of a [`SinkError::kind`] the flusher retries.

pub mod encode;
pub mod mongo;

pub use encode::{Concern, InsertCommand};

/// A batch MongoDB has confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    /// Documents stored by this attempt.
    pub inserted: u64,
    /// Documents MongoDB already had from an earlier attempt.
    pub duplicates: u64,
}

/// Why a batch is not (known to be) stored. Every kind is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("cannot reach MongoDB: {0}")]
    Network(String),
    #[error("no MongoDB server selected: {0}")]
    ServerSelection(String),
    #[error("MongoDB timed out: {0}")]
    Timeout(String),
    #[error("write concern not satisfied: {0}")]
    WriteConcern(String),
    #[error("MongoDB refused a document: {0}")]
    Write(String),
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
    /// Stores a finished [`InsertCommand`] of `records` documents.
    fn insert(&self, command: Vec<u8>, records: u64) -> Result<Delivered, SinkError>;
    /// Creates `{patientId: 1, timestamp: 1}` if it is missing.
    fn ensure_index(&self) -> Result<(), SinkError>;
    /// Checks that MongoDB answers (`ping`).
    fn ping(&self) -> Result<(), SinkError>;
}
