//! Group commit: the one thread that appends to the WAL.
//!
//! The writer drains every lane (see [`super::lanes`]), numbers and frames
//! all the records it found, writes them with one `write` and one
//! `fdatasync`, and only then replies to each submitter. While it syncs, new
//! submissions pile up in the lanes and ride the next commit together: the
//! cost of an fsync is shared by everyone who arrived meanwhile.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::lanes::Lanes;
use super::pacing::{Batch, Pacer};
use super::record::Format;
use super::segment::{self, Header, SparePace};
use super::submission::{CommitError, Reply, Submission};
use super::{Id, Position, WalShared, record};
use crate::limits::{COMMIT_RECORDS_MAX, RECORD_BYTES_MAX, SEQ_MAX};
use crate::metrics;

/// The writer's append position.
pub struct Active {
    pub(super) file: File,
    /// The end of the log: the segment's bytes before it are all synced,
    /// and the next commit is appended there.
    pub(super) end: Position,
    pub(super) next_seq: u64,
}

/// Starts the writer thread. `commit_delay_max` bounds how long a commit
/// may be held back to share its fsync (see [`super::pacing`]).
pub fn spawn(
    lanes: Arc<Lanes>,
    shared: Arc<WalShared>,
    active: Active,
    commit_delay_max: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let spare = {
        let (lanes, shared) = (lanes.clone(), shared.clone());
        std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || keep_a_spare(&lanes, &shared))?
    };
    let l = lanes.clone();
    let spare_thread = spare.thread().clone();
    let handle = std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || {
            Writer::new(shared, active, spare_thread, commit_delay_max).run(&l);
            // The spare thread stops with the writer.
            l.stop();
            spare.thread().unpark();
            let _ = spare.join();
        })?;
    lanes
        .writer
        .set(handle.thread().clone())
        .expect("the writer is spawned once");
    Ok(handle)
}

struct Writer {
    shared: Arc<WalShared>,
    active: Active,
    /// The framed bytes of one commit, reused.
    buf: Vec<u8>,
    /// The first id of each submission in the commit, reused.
    first_ids: Vec<Id>,
    /// The thread that prepares the next segment; woken after each roll.
    spare: Thread,
    /// When to hold a commit back so that its fsync serves more records.
    pacer: Pacer,
}

/// Keeps a preallocated spare segment ready (see [`segment::prepare_spare`])
/// until the writer stops. A failure (a full disk) is logged; the next roll
/// then creates a plain file, and the spare is tried again later.
fn keep_a_spare(lanes: &Lanes, shared: &WalShared) {
    while !lanes.stopping.load(Ordering::Acquire) {
        if let Err(e) = segment::prepare_spare(&shared.dir, shared.segment_bytes, SparePace::Paced)
        {
            log::warn!("could not preallocate the next WAL segment: {e}");
        }
        std::thread::park_timeout(Duration::from_millis(SPARE_RETRY_MS));
    }
}

/// How often the spare thread looks again without being woken.
const SPARE_RETRY_MS: u64 = 5_000;

impl Writer {
    fn new(
        shared: Arc<WalShared>,
        active: Active,
        spare: Thread,
        commit_delay_max: Duration,
    ) -> Writer {
        Writer {
            pacer: Pacer::new(commit_delay_max),
            spare,
            shared,
            active,
            buf: Vec::with_capacity(COMMIT_RECORDS_MAX * RECORD_BYTES_MAX),
            first_ids: Vec::with_capacity(COMMIT_RECORDS_MAX),
        }
    }

    fn run(mut self, lanes: &Lanes) {
        let mut batch = Vec::with_capacity(COMMIT_RECORDS_MAX);
        // A submission that did not fit the last commit; it opens the next.
        let mut carry = None;
        let mut replies = lanes.replies();
        loop {
            let mut records = lanes.drain_into(&mut batch, &mut carry, COMMIT_RECORDS_MAX);
            if batch.is_empty() {
                if lanes.stopping.load(Ordering::Acquire) && lanes.is_empty() {
                    break;
                }
                lanes.park_writer();
                continue;
            }
            records += self.hold(lanes, &mut batch, &mut carry, records);
            self.pacer.started(Instant::now(), records as u64);
            let outcome = self.commit(&batch, records as u64);
            lanes.answered(batch.len());
            for (i, (lane, sub)) in batch.drain(..).enumerate() {
                let first_id = outcome.map(|()| self.first_ids[i]);
                let reply = Reply {
                    first_id,
                    staged: sub.staged,
                };
                replies.push(lane, sub.reply, reply);
            }
            lanes.send_replies(&mut replies);
        }
        lanes.writer_left();
        log::info!("WAL writer stopped; last id {}", self.shared.last_id());
    }

    /// Holds the commit back while the pacer says more records are coming,
    /// then drains what arrived meanwhile; returns how many records that
    /// added.
    fn hold(
        &mut self,
        lanes: &Lanes,
        batch: &mut Vec<(usize, Submission)>,
        carry: &mut Option<(usize, Submission)>,
        records: usize,
    ) -> usize {
        let now = Instant::now();
        let drained = Batch {
            records: records as u64,
            submissions_waiting: lanes.waiting(),
            submitters: lanes.submitters(),
            prompt_submissions: batch.iter().filter(|(_, s)| s.prompt).count(),
            submissions: batch.len(),
        };
        let Some(until) = self.pacer.hold_until(now, drained) else {
            return 0;
        };
        lanes.hold_writer(until);
        metrics::observe_commit_hold(until.min(Instant::now()) - now);
        lanes.drain_into(batch, carry, COMMIT_RECORDS_MAX)
    }

    /// Frames, appends and syncs one batch. On success every record is
    /// durable and `first_ids` holds each submission's first id.
    fn commit(&mut self, batch: &[(usize, Submission)], records: u64) -> Result<(), CommitError> {
        let first_seq = self.active.next_seq;
        if first_seq + records - 1 > SEQ_MAX {
            log::error!(
                "the id space of node {} is exhausted; refusing writes",
                self.shared.node_id
            );
            return Err(CommitError::IdsExhausted);
        }
        let node = self.shared.node_id;
        self.buf.clear();
        self.first_ids.clear();
        let mut seq = first_seq;
        for (_, sub) in batch {
            self.first_ids.push(Id::new(node, seq));
            seq += record::frame_staged(&sub.staged, Id::new(node, seq), &mut self.buf);
        }
        debug_assert_eq!(seq - first_seq, records);
        if self.active.end.offset + self.buf.len() as u64 > self.shared.segment_bytes {
            self.roll().map_err(|e| self.write_failed(&e))?;
        }
        if let Err(e) = append(&self.active.file, &self.buf, self.active.end.offset) {
            self.wipe_tail_or_die(self.buf.len() as u64);
            return Err(self.write_failed(&e));
        }
        let started = Instant::now();
        super::sync_or_die(&self.active.file, "a WAL commit");
        metrics::observe_fsync(started.elapsed(), records);
        self.active.end.offset += self.buf.len() as u64;
        self.active.next_seq = seq;
        self.shared.set_writable(true);
        let last_id = Id::new(node, seq - 1);
        self.shared
            .publish_commit(self.active.end, self.buf.len() as u64, records, last_id);
        // Durable, not yet answered: a test's SIGKILL here loses every
        // reply of the commit and none of its records.
        fail::fail_point!("wal::before_reply");
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), super::WalError> {
        let no = self.active.end.segment + 1;
        let header = Header {
            node_id: self.shared.node_id,
            segment_no: no,
            base_seq: self.active.next_seq,
            format: Format::CURRENT,
        };
        let file = segment::create(&self.shared.dir, header, self.shared.segment_bytes)?;
        // The spare became this segment: start filling the next one.
        self.spare.unpark();
        self.active = Active {
            file,
            end: Position::first_in(no),
            next_seq: self.active.next_seq,
        };
        self.shared.publish_roll(no);
        Ok(())
    }

    /// Zeroes the `bytes` a failed append may have left past the segment's
    /// end, or ends the process. Its whole frames would otherwise look like
    /// records to recovery, which keeps every intact frame, and the records
    /// of the refused batch — answered 503, retried by their clients —
    /// would be delivered after a restart. If the zeroing fails too, those
    /// frames may still reach the disk from the page cache, so no 503 may
    /// go out: stopping leaves the batch's clients with a dropped
    /// connection, an outcome they already treat as unknown, the same as a
    /// failed fsync (see `super::fatal`).
    fn wipe_tail_or_die(&self, bytes: u64) {
        if let Err(e) = wipe(&self.active.file, self.active.end.offset, bytes) {
            super::fatal("zero what a failed WAL append left", &e);
        }
        // The zeros must be as durable as the log; same rule as a commit.
        super::sync_or_die(&self.active.file, "a WAL segment's zeroed tail");
    }

    /// A failed append (not a failed fsync): refuse this batch. Whatever part
    /// of it reached the file lies past the log's end and is zeroed (see
    /// [`Writer::wipe_tail_or_die`]); the next commit writes over it.
    fn write_failed(&mut self, e: &dyn std::fmt::Display) -> CommitError {
        if self.shared.is_writable() {
            log::error!("WAL append failed: {e}; answering 503 until an append succeeds");
        }
        self.shared.set_writable(false);
        CommitError::Write
    }
}

fn append(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    fail::fail_point!("wal::write", |arg: Option<String>| {
        // `return(torn)`: the first half reaches the file, then the error.
        if arg.as_deref() == Some("torn") {
            file.write_all_at(&bytes[..bytes.len() / 2], at)?;
        }
        Err(std::io::Error::other("failpoint wal::write"))
    });
    file.write_all_at(bytes, at)
}

fn wipe(file: &File, at: u64, len: u64) -> std::io::Result<()> {
    fail::fail_point!("wal::wipe", |_| Err(std::io::Error::other(
        "failpoint wal::wipe"
    )));
    zero_range(file, at, len)
}

/// Makes `[at, at + len)` of `file` read as zeros. Punching a hole needs no
/// free space, which a failed append may have run out of; where the file
/// system cannot punch holes, zeros are written instead.
fn zero_range(file: &File, at: u64, len: u64) -> std::io::Result<()> {
    let (Ok(offset), Ok(length)) = (i64::try_from(at), i64::try_from(len)) else {
        return Err(std::io::Error::other("range beyond i64"));
    };
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an open descriptor; it touches no memory of ours.
    if unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, length) } == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; len as usize];
    file.write_all_at(&zeros, at)
}
