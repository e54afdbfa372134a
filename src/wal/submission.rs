//! What a connection hands the WAL writer, and what comes back.
//!
//! A [`Submission`] carries a connection's staged records onto its lane
//! (see [`super::lanes`]); the writer answers each one with exactly one
//! [`Reply`]: the first id of a durable commit, or the [`CommitError`] that
//! kept it from being acknowledged. A submission that never reached a lane
//! gets a [`SubmitError`] instead. The staged format is the WAL's own
//! (`record::stage_from`), so `http` never frames a record itself.

use super::record;
use crate::usage::Usage;

/// Staged records from one connection, waiting to be committed.
pub struct Submission {
    /// Records in staged form ([`Submission::stage`]), back to back.
    pub staged: Vec<u8>,
    /// How many records `staged` holds.
    pub count: u32,
    /// Where the writer sends the outcome.
    pub reply: may::sync::mpsc::Sender<Reply>,
    /// The submitter came back within [`PROMPT_THINK_US`] of its previous
    /// reply: a client in a closed loop, whose next request waits for this
    /// one, so holding the commit for more would only slow it down (see
    /// [`super::pacing`]).
    pub prompt: bool,
}

impl Submission {
    /// Stages a validated usage, received at `received_at_ms` from the API
    /// key `source` (`None` with auth off), at the end of `staged`: the buffer a connection fills between two submissions
    /// and then hands over as [`Submission::staged`]. The record format
    /// stays the WAL's business. It only appends, and the buffer comes
    /// back in the [`Reply`], so a connection stages into one allocation
    /// for its whole life.
    pub fn stage(
        staged: &mut Vec<u8>,
        usage: &Usage<'_>,
        source: Option<&str>,
        received_at_ms: i64,
    ) {
        record::stage_from(usage, source, received_at_ms, staged);
    }
}

/// A submitter back within this of its previous reply counts as prompt. A
/// closed-loop client (wrk, a balancer's busy pool) comes back within tens
/// to hundreds of µs; 64 connections held at 18,000 requests/s come back
/// after about 2 ms, and devices after seconds.
pub const PROMPT_THINK_US: u64 = 1_000;

/// The outcome of a submission; the buffer comes back for reuse.
pub struct Reply {
    /// The id of the submission's first record; the others follow in order.
    pub first_id: Result<super::Id, CommitError>,
    /// The submission's staging buffer, handed back so the connection reuses
    /// its allocation.
    pub staged: Vec<u8>,
}

/// Why committed records could not be acknowledged. All are 503s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Writing the batch to the segment failed (a full disk, say); none of it
    /// is acknowledged.
    #[error("the write-ahead log cannot be written")]
    Write,
    /// The batch would take this node's sequence numbers past the last one.
    #[error("this node has used up its id space")]
    IdsExhausted,
    /// The writer stopped before it committed this submission.
    #[error("the server is shutting down")]
    Stopping,
}

/// Why a submission was not even queued. Both are 503s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// This core's lane already holds `LANE_SUBMISSIONS_MAX` submissions.
    #[error("the write-ahead log is saturated")]
    LaneFull,
    /// The lanes were stopped for shutdown and take no more submissions.
    #[error("the server is shutting down")]
    Stopping,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_appends_to_the_connections_buffer_without_reallocating_it() {
        let mut staged = Vec::with_capacity(4096);
        let at = staged.as_ptr();
        for n in 0..64 {
            let usage = Usage {
                patient_id: crate::usage::PatientId::Number(n),
                timestamp_ms: 5,
                medication: "Albuterol",
                event_id: None,
            };
            Submission::stage(&mut staged, &usage, Some("app"), 9);
        }
        assert_eq!(staged.as_ptr(), at, "the buffer was reallocated");
        let mut framed = Vec::new();
        assert_eq!(
            record::frame_staged(&staged, crate::wal::Id::from_raw(1), &mut framed),
            64
        );
        match record::decode(&framed, record::Format::CURRENT) {
            record::Decoded::Record(r, _) => {
                assert_eq!((r.patient_id, r.medication), ("0", "Albuterol"));
                assert_eq!((r.timestamp_ms, r.received_at_ms), (5, 9));
            }
            other => panic!("{other:?}"),
        }
    }
}
