//! The write-ahead log: the third step of the data flow, and the reason an
//! acknowledged usage is never lost.
//!
//! # What it owns
//! Segment files in `--data-dir`, the per-core queues into the log
//! ([`lanes`]), the group-commit writer thread ([`writer`]), the flusher's
//! durable position ([`checkpoint`]), the
//! shared view of what is committed and what is still owed to MongoDB
//! ([`WalShared`]), and recovery, which builds that view from the files at
//! [`open`] (`wal/recovery.rs`; the per-segment scan is [`segment::recover`]).
//!
//! Two names are defined here once for the whole crate: [`Id`], a record's
//! id and its bit layout, and [`Position`], a place in the log (a segment
//! number and a byte offset in it, with [`Position::first_in`] for where a
//! segment's records start).
//!
//! # Invariants
//! 1. A 201 is sent only after the record's bytes were written and
//!    `fdatasync`ed. One write and one fdatasync serve every record that
//!    arrived while the previous commit was on disk (group commit); while
//!    more records are known to be coming, a commit may be held back up to
//!    `--commit-delay-max-us` to serve more ([`pacing`]), never to answer
//!    sooner.
//! 2. Ids are assigned by the single writer in log order, so ids grow along
//!    the log. An id is an [`Id`], its node above its `seq` (the layout is
//!    defined there and nowhere else); `seq` never repeats for
//!    a data directory: recovery takes the highest of the checkpoint's
//!    `last_seq`, every record's `seq`, and every segment header's
//!    `base_seq`. The newest segment is never deleted, so its header keeps
//!    the floor even when every record has been delivered. A directory
//!    where recovery found none of these (no checkpoint, no valid segment
//!    header, no record: which files exist does not decide it) takes its
//!    floor from the caller (`open`'s `fresh_floor`: this node's highest id
//!    already in MongoDB) before its first segment is created, so a node id
//!    that ran before on a lost disk does not hand out its old ids again.
//!    For this, a segment's name never exists without its durable header:
//!    `segment::create` writes and fdatasyncs the header into the spare (or
//!    a temporary file) before renaming it, then syncs the directory. A
//!    power cut in between leaves an unnamed file, not a headerless segment
//!    that would hide the floor.
//! 3. A failed fsync ends the process (`sync_or_die`): after a failed
//!    fsync the kernel may have dropped the dirty pages and a retry can
//!    report success for data that is gone, so the only safe answer is to
//!    stop acknowledging and let recovery read what is really on disk.
//!    A failed append is answered 503 only once the bytes it wrote past the
//!    log's end are zeroed and synced; if the zeroing fails, its frames may
//!    still reach the disk and be recovered as records, so the process
//!    ends the same way, before any reply: clients see a dropped
//!    connection (outcome unknown), never a 503 for a usage that may yet
//!    be delivered.
//! 4. A segment is deleted only when it is sealed and the checkpoint,
//!    already durable, lies past it: MongoDB has confirmed every record in it
//!    with the configured write concern.
//! 5. One process per data directory: `open` takes an exclusive `flock` on
//!    `DATA_DIR/lock` for the life of the process, and refuses to start if
//!    another process holds it.
//! 6. Recovery never refuses to start: it keeps every intact record, cuts a
//!    torn tail, skips damaged ranges between intact records, rebuilds a
//!    damaged segment header in front of intact records, and copies every
//!    cut, skipped or replaced byte to `quarantine/` for an operator. Each
//!    copy is fdatasynced, and then the quarantine directory, before the
//!    original is truncated or its header rewritten; a segment moved there
//!    whole has the quarantine directory synced before the data directory.
//!    A power cut cannot keep the cut and lose the copy. Ids
//!    that cut bytes could have held are skipped, never handed out again.
//!    A segment with neither a valid header nor an intact record never held
//!    a record (torn at creation): it is deleted if all zeros, else moved
//!    to `quarantine/`, and it is not history (invariant 2).
//!
//! # On-disk format (version 3, little-endian)
//! A segment is `NNNNNNNNNNNNNNNNNNNN.wal` (the segment number, 20 digits):
//!
//! | offset | size | header field                                  |
//! |--------|------|-----------------------------------------------|
//! | 0      | 8    | magic `BUSYWAL1`                              |
//! | 8      | 4    | format version of the records, 1, 2 or 3      |
//! | 12     | 4    | node id that created the segment              |
//! | 16     | 8    | segment number (equals the file name)         |
//! | 24     | 8    | base seq: every record's seq is at least this |
//! | 32     | 4    | CRC-32 (IEEE) of bytes 0..32                  |
//! | 36     | 4    | zero                                          |
//!
//! then records, back to back, each framed as:
//!
//! | offset | size | record field                                          |
//! |--------|------|-------------------------------------------------------|
//! | 0      | 4    | payload length `L` (30 ..= 484; version 2: 29 ..= 419; version 1: 28 ..= 354) |
//! | 4      | 4    | CRC-32 (IEEE) of the length bytes and the payload     |
//! | 8      | 8    | id (the 201's id and MongoDB's `_id`)                 |
//! | 16     | 8    | receivedAt, epoch ms (i64)                            |
//! | 24     | 8    | timestamp, epoch ms (i64)                             |
//! | 32     | 1    | `p`: patientId length                                 |
//! | 33     | p    | patientId, UTF-8                                      |
//! | 33+p   | 1    | `m`: medication length                                |
//! | 34+p   | m    | medication, UTF-8                                     |
//! | 34+p+m | 1    | `e`: eventId length, 0 for none (not in version 1)    |
//! | 35+p+m | e    | eventId, UTF-8 (not in version 1)                     |
//! | 35+p+m+e | 1  | `k`: source length, 0 for none (only in version 3)    |
//! | 36+p+m+e | k  | source: the id of the API key that wrote the usage, ASCII (only in version 3) |
//!
//! New segments are written in version 3. A version-2 segment (written by
//! a binary before API keys) has records without the last two fields, a
//! version-1 segment (before eventIds) without the last four, and both
//! are still recovered and delivered: the header's version is kept in the
//! segment's [`SegmentView`] and every decode of it reads that layout
//! ([`record::Format`]), one branch per record.
//!
//! # Lifecycle of a record
//! A connection stages validated usages into its own buffer
//! ([`Submission::stage`]; only the WAL knows the staged form) and pushes
//! the buffer onto its lane, a lock-free queue; the writer drains every lane,
//! numbers and frames the records, appends them to the active segment,
//! fdatasyncs, publishes the new committed end, and hands each connection
//! its first id back. A submission is never split across commits (one
//! that would take a commit past `COMMIT_RECORDS_MAX` opens the next), so
//! a batch POST, one submission, is durable in one write and one fsync;
//! the record format does not mark commits, so recovery keeps whatever
//! whole records of a torn commit reached the disk, as it always has. The
//! flusher reads committed bytes from the files,
//! delivers them, advances the checkpoint, and releases segments it has
//! passed.

pub mod checkpoint;
mod id;
pub mod lanes;
pub mod pacing;
mod position;
mod quarantine;
pub mod reader;
pub mod record;
mod recovery;
mod scan;
pub mod segment;
mod shared;
pub mod submission;
pub mod writer;

use std::fs::File;

pub use id::Id;
pub use lanes::{Attached, Lanes};
pub use position::Position;
pub use shared::{Opened, SegmentView, WalShared, open};
pub use submission::{CommitError, PROMPT_THINK_US, Reply, Submission, SubmitError};

/// Errors of the WAL that callers handle. A failed fsync is not among them:
/// it ends the process (see `sync_or_die`).
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("could not {what}: {source}")]
    Io {
        /// What busyapi was doing, worded to follow "could not".
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Every sequence number of this node is used: no id is left to hand out.
    #[error("the id space of this node is exhausted")]
    IdsExhausted,
    /// A fresh data directory's id floor could not be read from MongoDB, or
    /// the wait for it was stopped; holds why.
    #[error("could not learn where this new data directory's ids start: {0}")]
    FreshFloor(String),
    /// Another process holds the data directory's lock.
    #[error(
        "{dir} is in use by another busyapi process{holder}; two writers on one WAL would hand out the same ids"
    )]
    Locked {
        /// The data directory, as given.
        dir: String,
        /// ` (pid N)`, read from the lock file, or empty if it names none.
        holder: String,
    },
}

impl WalError {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        WalError::Io { what, source }
    }
}

/// fdatasyncs `file` or ends the process. See invariant 3 above.
pub(crate) fn sync_or_die(file: &File, what: &str) {
    if let Err(e) = sync_data(file) {
        fatal(&format!("fdatasync {what}"), &e);
    }
}

fn sync_data(file: &File) -> std::io::Result<()> {
    fail::fail_point!("wal::fsync", |_| Err(std::io::Error::other(
        "failpoint wal::fsync"
    )));
    file.sync_data()
}

/// Ends the process after a failure that makes further acknowledgements
/// unsafe. Aborting (rather than unwinding) guarantees no other thread
/// acknowledges anything after this point.
pub(crate) fn fatal(what: &str, e: &std::io::Error) -> ! {
    log::error!("FATAL: could not {what}: {e}; stopping so no unsynced record is acknowledged");
    log::logger().flush();
    std::process::abort();
}
