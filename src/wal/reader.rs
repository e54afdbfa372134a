//! Reading committed records back, for the flusher.
//!
//! The reader follows the writer: it reads only up to a segment's committed
//! end, skips ranges that recovery found damaged, and never crosses into the
//! next segment on its own, so every batch the flusher builds lies within
//! one segment and a segment's end is an explicit step ([`WalReader::next_segment`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use super::checkpoint::Checkpoint;
use super::record::{self, Decoded, Format, Record};
use super::segment;
use super::{Id, Position, SegmentView, WalError, WalShared};

/// Bytes read from a segment per call; a batch of 1,000 usages is ~150 KiB.
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// What one [`WalReader::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Records handed to the callback.
    pub records: usize,
    /// The reader's position after them, in the segment they came from.
    pub end: Position,
    /// The segment is sealed and read to its end.
    pub segment_done: bool,
}

/// The flusher's cursor over the log: reads committed records in order
/// from a checkpoint on, never past a segment's fsynced end, skipping
/// damaged ranges.
pub struct WalReader {
    shared: Arc<WalShared>,
    /// Where the next record would be read.
    at: Position,
    /// The open segment file, if `at.segment` exists.
    file: Option<File>,
    /// Bytes read from segment `buf_no` at offset `buf_at`, kept between
    /// calls.
    buf: Vec<u8>,
    buf_at: u64,
    buf_no: Option<u64>,
    /// The id of the last record read: ids only grow along the log.
    last_id: Id,
}

impl WalReader {
    /// A reader positioned at a checkpoint.
    pub fn new(shared: Arc<WalShared>, from: Checkpoint) -> WalReader {
        WalReader {
            shared,
            at: from.at.at_or_after_header(),
            file: None,
            buf: Vec::new(),
            buf_at: 0,
            buf_no: None,
            last_id: Id::MIN,
        }
    }

    /// Where the next record would be read.
    pub fn position(&self) -> Position {
        self.at
    }

    /// Moves to the segment after the current, sealed one.
    pub fn next_segment(&mut self) {
        if let Some(next) = self.shared.segment_at_or_after(self.at.segment + 1) {
            self.at = Position::first_in(next.no);
            self.file = None;
        }
    }

    /// Whether everything committed so far has been read.
    pub fn caught_up(&self) -> bool {
        self.view()
            .is_none_or(|v| !v.sealed && v.committed_end <= self.at.offset)
    }

    fn view(&self) -> Option<SegmentView> {
        self.shared.segment_at_or_after(self.at.segment)
    }

    /// Hands up to `max` committed records of the current segment to `f`,
    /// waiting up to `wait` if none is there yet.
    pub fn read(
        &mut self,
        max: usize,
        wait: Duration,
        mut f: impl FnMut(&Record<'_>),
    ) -> Result<ReadOutcome, WalError> {
        let mut view = match self.view() {
            Some(v) if v.committed_end > self.at.offset || v.sealed || v.no != self.at.segment => v,
            _ => match self.shared.wait_past(self.at, wait) {
                Some(v) => v,
                None => return Ok(self.outcome(0, false)),
            },
        };
        if view.no != self.at.segment {
            // The segment we were on is gone (quarantined at recovery).
            self.at = Position::first_in(view.no);
            self.file = None;
        }
        let mut records = 0;
        while records < max && self.at.offset < view.committed_end {
            records += self.read_chunk(&view, max - records, &mut f)?;
            if self.at.offset >= view.committed_end
                && let Some(v) = self.view().filter(|v| v.no == view.no)
            {
                view = v;
            }
        }
        let done = view.sealed && self.at.offset >= view.committed_end;
        Ok(self.outcome(records, done))
    }

    fn outcome(&self, records: usize, segment_done: bool) -> ReadOutcome {
        ReadOutcome {
            records,
            end: self.at,
            segment_done,
        }
    }

    /// Decodes up to `max` records from the buffer, reading the next chunk
    /// first when the buffer does not hold a whole record at the offset. A
    /// chunk is read once and decoded over several calls: a batch of 1,000
    /// usages takes about 50 KiB of a 1 MiB chunk.
    fn read_chunk(
        &mut self,
        view: &SegmentView,
        max: usize,
        f: &mut impl FnMut(&Record<'_>),
    ) -> Result<usize, WalError> {
        if let Some(r) = view.damaged.iter().find(|r| r.contains(&self.at.offset)) {
            self.at.offset = r.end;
            return Ok(0);
        }
        let stop = view
            .damaged
            .iter()
            .map(|r| r.start)
            .filter(|&s| s > self.at.offset)
            .fold(view.committed_end, u64::min);
        if !self.holds_a_record(stop, view.format) {
            self.fill(stop)?;
        }
        let end = ((self.buf_at + self.buf.len() as u64).min(stop) - self.buf_at) as usize;
        // Committed bytes are whole frames: an incomplete one is damage only
        // where the buffer reaches the committed end.
        let at_stop = self.buf_at + end as u64 == stop;
        let (mut pos, mut records) = ((self.at.offset - self.buf_at) as usize, 0);
        while records < max && pos < end {
            match record::decode(&self.buf[pos..end], view.format) {
                Decoded::Record(r, n) => {
                    f(&r);
                    self.last_id = r.id;
                    records += 1;
                    pos += n;
                }
                Decoded::Incomplete if !at_stop => break,
                _ => pos += self.skip_damage(pos, end, view.format),
            }
        }
        self.at.offset = self.buf_at + pos as u64;
        Ok(records)
    }

    /// Whether the buffer holds this segment's bytes at the offset, with a
    /// whole record there (or everything up to `stop`).
    fn holds_a_record(&self, stop: u64, format: Format) -> bool {
        let buf_end = self.buf_at + self.buf.len() as u64;
        if self.buf_no != Some(self.at.segment)
            || self.at.offset < self.buf_at
            || self.at.offset >= buf_end
        {
            return false;
        }
        let from = (self.at.offset - self.buf_at) as usize;
        buf_end >= stop
            || !matches!(
                record::decode(&self.buf[from..], format),
                Decoded::Incomplete
            )
    }

    /// Reads up to a chunk of committed bytes from the offset.
    fn fill(&mut self, stop: u64) -> Result<(), WalError> {
        if self.file.is_none() {
            let path = segment::path_of(&self.shared.dir, self.at.segment);
            self.file =
                Some(File::open(path).map_err(|e| WalError::io("open a segment for reading", e))?);
        }
        let file = self.file.as_ref().expect("opened above");
        let len = (stop - self.at.offset).min(READ_CHUNK_BYTES) as usize;
        self.buf.resize(len, 0);
        file.read_exact_at(&mut self.buf, self.at.offset)
            .map_err(|e| WalError::io("read a segment", e))?;
        self.buf_at = self.at.offset;
        self.buf_no = Some(self.at.segment);
        Ok(())
    }

    /// Committed bytes that do not decode: the disk changed them after
    /// recovery. Skip to the next intact record (or the end) and say so.
    fn skip_damage(&self, pos: usize, end: usize, format: Format) -> usize {
        let skip = record::resync(&self.buf[pos..end], self.last_id, format).unwrap_or(end - pos);
        log::error!(
            "WAL segment {} is damaged at offset {} ({} bytes skipped); it was intact when written",
            self.at.segment,
            self.buf_at + pos as u64,
            skip
        );
        skip.max(1)
    }
}
