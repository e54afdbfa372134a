//! Recovery: from what a data directory holds on disk to what the live log
//! starts from. [`super::open`] takes the lock and wires the result into a
//! [`WalShared`](super::WalShared); this file owns the rules in between
//! (invariants 2, 4 and 6 of [`crate::wal`]): which segments are kept,
//! where the id floor lies, which segment number comes next, and where
//! delivery resumes. The per-segment scan is [`segment::recover`].

use std::collections::VecDeque;
use std::fs;
use std::path::Path;

use super::checkpoint::{self, Checkpoint};
use super::record::Format;
use super::segment::{self, Header};
use super::writer::Active;
use super::{Id, Position, SegmentView, WalError, record};
use crate::limits::SEQ_MAX;

/// What the live log starts from.
pub(super) struct Recovered {
    /// Every kept segment, oldest first, then the new active one.
    pub(super) views: VecDeque<SegmentView>,
    /// Bytes and records not yet delivered to MongoDB.
    pub(super) backlog_bytes: u64,
    pub(super) backlog_records: u64,
    /// The new active segment, created by recovery, and its first seq.
    pub(super) active: Active,
    /// Where delivery resumes.
    pub(super) resume: Checkpoint,
}

/// Recovers every segment of `dir`, learns the id floor (from
/// `fresh_floor` when the directory has no history, see [`super::open`]),
/// and creates the next active segment with that floor in its header.
pub(super) fn recover(
    dir: &Path,
    node_id: u32,
    segment_bytes: u64,
    fresh_floor: impl FnOnce() -> Result<u64, WalError>,
) -> Result<Recovered, WalError> {
    let ckpt = checkpoint::load(dir)?;
    let nos = segment::list(dir)?;
    let resume_no = ckpt.map_or(0, |c| c.at.segment);
    let Found {
        mut views,
        mut seq_floor,
        backlog_bytes,
        backlog_records,
    } = recover_all(dir, node_id, ckpt, &nos)?;
    // Fresh is what recovery found, not which files exist: a first segment
    // torn at creation (no header, no record) has no floor to give.
    if ckpt.is_none() && views.is_empty() {
        seq_floor = fresh_floor()?;
    }
    segment::sync_dir(dir);
    let next_seq = seq_floor + 1;
    if next_seq > SEQ_MAX {
        return Err(WalError::IdsExhausted);
    }
    // A segment number is never used twice, not even the checkpoint's once
    // its file is gone (deleted by hand after MongoDB had every record): the
    // checkpoint's offset would point into the new file and skip its first
    // records, acknowledged ones, at this start and at every later one.
    let new_no = nos.last().map_or(1, |n| n + 1).max(resume_no + 1);
    let header = Header {
        node_id,
        segment_no: new_no,
        base_seq: next_seq,
        format: Format::CURRENT,
    };
    let file = start_active(dir, header, segment_bytes)?;
    views.push_back(SegmentView {
        no: new_no,
        committed_end: Position::first_in(new_no).offset,
        sealed: false,
        damaged: Vec::new(),
        format: Format::CURRENT,
    });
    let resume = ckpt.unwrap_or(Checkpoint {
        at: Position::first_in(views.front().map_or(new_no, |s| s.no)),
        last_seq: 0,
    });
    let active = Active {
        file,
        end: Position::first_in(new_no),
        next_seq,
    };
    Ok(Recovered {
        views,
        backlog_bytes,
        backlog_records,
        active,
        resume,
    })
}

/// Creates the new active segment, preallocated from a spare when one can
/// be made (a failure there is not fatal: the segment is then a plain file).
fn start_active(dir: &Path, header: Header, segment_bytes: u64) -> Result<fs::File, WalError> {
    segment::discard_half_made(dir);
    if let Err(e) = segment::prepare_spare(dir, segment_bytes, segment::SparePace::Full) {
        log::warn!(
            "could not preallocate a WAL segment ({e}); appends will also update file metadata"
        );
    }
    segment::create(dir, header, segment_bytes)
}

/// What the existing segments hold.
struct Found {
    views: VecDeque<SegmentView>,
    /// The highest sequence number that may have been handed out.
    seq_floor: u64,
    backlog_bytes: u64,
    backlog_records: u64,
}

/// Recovers every segment (see [`segment::recover`]) and deletes the ones
/// the checkpoint has already passed.
fn recover_all(
    dir: &Path,
    node_id: u32,
    ckpt: Option<Checkpoint>,
    nos: &[u64],
) -> Result<Found, WalError> {
    let resume_no = ckpt.map_or(0, |c| c.at.segment);
    let mut r = Found {
        views: VecDeque::new(),
        seq_floor: ckpt.map_or(0, |c| c.last_seq),
        backlog_bytes: 0,
        backlog_records: 0,
    };
    for &no in nos {
        if no < resume_no {
            // Delivered and checkpointed, but the process stopped before
            // deleting it.
            fs::remove_file(segment::path_of(dir, no))
                .map_err(|e| WalError::io("delete a delivered segment", e))?;
            continue;
        }
        let from = match ckpt {
            Some(c) if c.at.segment == no => c.at.at_or_after_header(),
            _ => Position::first_in(no),
        }
        .offset;
        let Some(scan) = segment::recover(dir, no, node_id, from)? else {
            continue;
        };
        // Cut bytes may have held records whose ids were handed out (and
        // maybe delivered): skip as many ids as could have fit in them.
        let cut_ids = scan.torn_tail_bytes / record::FRAME_BYTES_MIN as u64;
        r.seq_floor = r
            .seq_floor
            .max(scan.header.base_seq.saturating_sub(1))
            .max(scan.last_id.map_or(0, Id::seq) + cut_ids);
        r.backlog_bytes += scan.end.saturating_sub(from);
        r.backlog_records += scan.pending_records;
        r.views.push_back(SegmentView {
            no,
            committed_end: scan.end,
            sealed: true,
            damaged: scan.damaged,
            format: scan.header.format,
        });
    }
    Ok(r)
}
