//! Group commit: the one thread that appends to the WAL.
//!
//! Connections push [`Submission`]s (a buffer of staged records) onto their
//! lane, a bounded lock-free queue; there is one lane per core, so two cores
//! rarely touch the same queue. The writer drains every lane, numbers and
//! frames all the records it found, writes them with one `write` and one
//! `fdatasync`, and only then replies to each submitter. While it syncs, new
//! submissions pile up in the lanes and ride the next commit together: the
//! cost of an fsync is shared by everyone who arrived meanwhile.
//!
//! Replies travel on may's own channel, so a connection coroutine waiting for
//! its commit yields its worker thread instead of blocking it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::segment::{self, HEADER_BYTES, Header};
use super::{WalShared, record};
use crate::limits::{
    COMMIT_RECORDS_MAX, LANE_SUBMISSIONS_MAX, RECORD_BYTES_MAX, SEQ_BITS, SEQ_MAX,
    WRITER_IDLE_PARK_MS,
};
use crate::metrics;

/// Staged records from one connection, waiting to be committed.
pub struct Submission {
    /// Records in staged form ([`record::stage`]), back to back.
    pub staged: Vec<u8>,
    /// How many records `staged` holds.
    pub count: u32,
    /// Where the writer sends the outcome.
    pub reply: may::sync::mpsc::Sender<Reply>,
}

/// The outcome of a submission; the buffer comes back for reuse.
pub struct Reply {
    /// The id of the submission's first record; the others follow in order.
    pub first_id: Result<u64, CommitError>,
    pub staged: Vec<u8>,
}

/// Why committed records could not be acknowledged. Both are 503s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("the write-ahead log cannot be written")]
    Write,
    #[error("this node has used up its id space")]
    IdsExhausted,
}

/// Why a submission was not even queued. Both are 503s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the write-ahead log is saturated")]
    LaneFull,
    #[error("the server is shutting down")]
    Stopping,
}

/// The writer's append position.
pub struct Active {
    pub(super) file: File,
    pub(super) segment_no: u64,
    /// Bytes in the file, all of them synced.
    pub(super) len: u64,
    pub(super) next_seq: u64,
}

/// A reply on its way back through a lane's notifier.
struct Completion {
    reply_to: may::sync::mpsc::Sender<Reply>,
    reply: Reply,
}

/// The per-core queues between connections and the writer.
pub struct Lanes {
    queues: Box<[ArrayQueue<Submission>]>,
    /// One notifier coroutine per lane, on that lane's worker, forwards the
    /// writer's replies. Waking a coroutine from the writer's OS thread costs
    /// a syscall (may's eventfd) per coroutine; through the notifier it
    /// costs one per lane per commit, and the notifier wakes the
    /// connections on its own worker, from may's local run queue.
    notifiers: OnceLock<Box<[may::sync::mpsc::Sender<Completion>]>>,
    /// Set while the writer is about to park or parked.
    writer_sleeping: AtomicBool,
    writer: OnceLock<Thread>,
    /// Set at shutdown: refuse new submissions, finish queued ones, exit.
    stopping: AtomicBool,
    /// The lane a drain starts with; it moves on at every drain.
    first_lane: AtomicUsize,
}

impl Lanes {
    pub fn new(count: usize) -> Arc<Lanes> {
        Arc::new(Lanes {
            queues: (0..count.max(1))
                .map(|_| ArrayQueue::new(LANE_SUBMISSIONS_MAX))
                .collect(),
            notifiers: OnceLock::new(),
            writer_sleeping: AtomicBool::new(false),
            writer: OnceLock::new(),
            stopping: AtomicBool::new(false),
            first_lane: AtomicUsize::new(0),
        })
    }

    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// Starts the notifier coroutines, lane `i` on may worker `i`. Without
    /// them (as in tests driving the WAL from plain threads) the writer
    /// replies to each submitter directly.
    pub fn start_notifiers(&self) -> std::io::Result<()> {
        let mut senders = Vec::with_capacity(self.queues.len());
        for lane in 0..self.queues.len() {
            let (tx, rx) = may::sync::mpsc::channel::<Completion>();
            let builder = may::coroutine::Builder::new()
                .name(format!("lane-{lane}"))
                .id(lane);
            // SAFETY: may's spawn is unsafe because a coroutine must not hold
            // a thread-local borrow across a yield; this loop touches none.
            unsafe {
                builder.spawn(move || {
                    while let Ok(c) = rx.recv() {
                        // A connection that went away dropped its receiver;
                        // its records are durable all the same.
                        let _ = c.reply_to.send(c.reply);
                    }
                })
            }?;
            senders.push(tx);
        }
        let _ = self.notifiers.set(senders.into_boxed_slice());
        Ok(())
    }

    /// Hands a reply to the submitter on `lane`.
    fn reply(&self, lane: usize, reply_to: may::sync::mpsc::Sender<Reply>, reply: Reply) {
        match self.notifiers.get() {
            Some(n) => {
                if let Err(e) = n[lane].send(Completion { reply_to, reply }) {
                    let c = e.0;
                    let _ = c.reply_to.send(c.reply);
                }
            }
            None => {
                let _ = reply_to.send(reply);
            }
        }
    }

    /// Queues a submission on `lane` (taken modulo the lane count).
    pub fn submit(&self, lane: usize, sub: Submission) -> Result<(), (SubmitError, Submission)> {
        if self.stopping.load(Ordering::Acquire) {
            return Err((SubmitError::Stopping, sub));
        }
        self.queues[lane % self.queues.len()]
            .push(sub)
            .map_err(|s| (SubmitError::LaneFull, s))?;
        // Pairs with the fence in `park_writer`: either the writer sees this
        // submission before parking, or we see it asleep and wake it.
        fence(Ordering::SeqCst);
        if self.writer_sleeping.load(Ordering::Relaxed)
            && let Some(t) = self.writer.get()
        {
            t.unpark();
        }
        Ok(())
    }

    /// Asks the writer to finish what is queued and exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(ArrayQueue::is_empty)
    }

    /// Moves queued submissions, with their lane, into `batch` until about
    /// `max_records`: one submission from each lane in turn, starting from
    /// a different lane each time, so a busy core cannot keep the others'
    /// submissions out of every commit.
    fn drain_into(&self, batch: &mut Vec<(usize, Submission)>, max_records: usize) -> usize {
        let n = self.queues.len();
        let first = self.first_lane.fetch_add(1, Ordering::Relaxed) % n;
        let mut records = 0;
        loop {
            let mut took = false;
            for lane in (first..n).chain(0..first) {
                if records >= max_records {
                    return records;
                }
                if let Some(sub) = self.queues[lane].pop() {
                    records += sub.count as usize;
                    batch.push((lane, sub));
                    took = true;
                }
            }
            if !took {
                return records;
            }
        }
    }

    fn park_writer(&self) {
        self.writer_sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.is_empty() && !self.stopping.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(WRITER_IDLE_PARK_MS));
        }
        self.writer_sleeping.store(false, Ordering::Relaxed);
    }
}

/// Starts the writer thread.
pub fn spawn(
    lanes: Arc<Lanes>,
    shared: Arc<WalShared>,
    active: Active,
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
            Writer::new(shared, active, spare_thread).run(&l);
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
    first_ids: Vec<u64>,
    /// The thread that prepares the next segment; woken after each roll.
    spare: Thread,
    /// Bytes past the active segment's end that a failed append may have
    /// written and that are not zeroed yet (see [`Writer::wipe_tail`]).
    dirty_tail_bytes: u64,
}

/// Keeps a preallocated spare segment ready (see [`segment::prepare_spare`])
/// until the writer stops. A failure (a full disk) is logged; the next roll
/// then creates a plain file, and the spare is tried again later.
fn keep_a_spare(lanes: &Lanes, shared: &WalShared) {
    while !lanes.stopping.load(Ordering::Acquire) {
        if let Err(e) = segment::prepare_spare(&shared.dir, shared.segment_bytes) {
            log::warn!("could not preallocate the next WAL segment: {e}");
        }
        std::thread::park_timeout(Duration::from_millis(SPARE_RETRY_MS));
    }
}

/// How often the spare thread looks again without being woken.
const SPARE_RETRY_MS: u64 = 5_000;

impl Writer {
    fn new(shared: Arc<WalShared>, active: Active, spare: Thread) -> Writer {
        Writer {
            spare,
            shared,
            active,
            buf: Vec::with_capacity(COMMIT_RECORDS_MAX * RECORD_BYTES_MAX),
            first_ids: Vec::with_capacity(COMMIT_RECORDS_MAX),
            dirty_tail_bytes: 0,
        }
    }

    fn run(mut self, lanes: &Lanes) {
        let mut batch = Vec::with_capacity(COMMIT_RECORDS_MAX);
        loop {
            let records = lanes.drain_into(&mut batch, COMMIT_RECORDS_MAX);
            if batch.is_empty() {
                if lanes.stopping.load(Ordering::Acquire) && lanes.is_empty() {
                    break;
                }
                lanes.park_writer();
                continue;
            }
            let outcome = self.commit(&batch, records as u64);
            for (i, (lane, sub)) in batch.drain(..).enumerate() {
                let first_id = outcome.map(|()| self.first_ids[i]);
                let reply = Reply {
                    first_id,
                    staged: sub.staged,
                };
                lanes.reply(lane, sub.reply, reply);
            }
        }
        log::info!("WAL writer stopped; last id {}", self.shared.last_id());
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
        let node_bits = u64::from(self.shared.node_id) << SEQ_BITS;
        self.buf.clear();
        self.first_ids.clear();
        let mut seq = first_seq;
        for (_, sub) in batch {
            self.first_ids.push(node_bits | seq);
            seq += record::frame_staged(&sub.staged, node_bits | seq, &mut self.buf);
        }
        debug_assert_eq!(seq - first_seq, records);
        self.wipe_tail().map_err(|e| self.write_failed(&e))?;
        if self.active.len + self.buf.len() as u64 > self.shared.segment_bytes {
            self.roll().map_err(|e| self.write_failed(&e))?;
        }
        if let Err(e) = append(&self.active.file, &self.buf, self.active.len) {
            self.dirty_tail_bytes = self.dirty_tail_bytes.max(self.buf.len() as u64);
            if let Err(wipe) = self.wipe_tail() {
                log::error!("could not zero what a failed WAL append left: {wipe}");
            }
            return Err(self.write_failed(&e));
        }
        let started = Instant::now();
        super::sync_or_die(&self.active.file, "a WAL commit");
        metrics::observe_fsync(started.elapsed(), records);
        self.active.len += self.buf.len() as u64;
        self.active.next_seq = seq;
        self.shared.set_writable(true);
        let last_id = node_bits | (seq - 1);
        self.shared.publish_commit(
            self.active.segment_no,
            self.active.len,
            self.buf.len() as u64,
            records,
            last_id,
        );
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), super::WalError> {
        let no = self.active.segment_no + 1;
        let header = Header {
            node_id: self.shared.node_id,
            segment_no: no,
            base_seq: self.active.next_seq,
        };
        let file = segment::create(&self.shared.dir, header, self.shared.segment_bytes)?;
        // The spare became this segment: start filling the next one.
        self.spare.unpark();
        self.active = Active {
            file,
            segment_no: no,
            len: HEADER_BYTES,
            next_seq: self.active.next_seq,
        };
        self.shared.publish_roll(no);
        Ok(())
    }

    /// Zeroes what a failed append may have left past the segment's end.
    /// Its whole frames would otherwise look like records to recovery,
    /// which keeps every intact frame, and the records of the refused
    /// batch — answered 503, retried by their clients — would be delivered
    /// after a restart. Until this succeeds no commit is made.
    fn wipe_tail(&mut self) -> std::io::Result<()> {
        if self.dirty_tail_bytes == 0 {
            return Ok(());
        }
        zero_range(&self.active.file, self.active.len, self.dirty_tail_bytes)?;
        // The zeros must be as durable as the log; same rule as a commit.
        super::sync_or_die(&self.active.file, "a WAL segment's zeroed tail");
        self.dirty_tail_bytes = 0;
        Ok(())
    }

    /// A failed append (not a failed fsync): refuse this batch. Whatever part
    /// of it reached the file lies past the log's end and is zeroed (see
    /// [`Writer::wipe_tail`]); the next commit writes over it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(count: u32) -> Submission {
        let (reply, _rx) = may::sync::mpsc::channel();
        Submission {
            staged: Vec::new(),
            count,
            reply,
        }
    }

    #[test]
    fn a_lane_with_more_than_a_commit_queued_does_not_keep_another_lane_out() {
        let lanes = Lanes::new(2);
        for _ in 0..8 {
            assert!(lanes.submit(0, submission(1000)).is_ok());
        }
        assert!(lanes.submit(1, submission(1)).is_ok());
        let mut batch = Vec::new();
        let records = lanes.drain_into(&mut batch, COMMIT_RECORDS_MAX);
        assert!(records >= COMMIT_RECORDS_MAX);
        assert!(
            batch.iter().any(|(lane, _)| *lane == 1),
            "lane 1 was left out of a full commit"
        );
    }

    #[test]
    fn drains_start_from_each_lane_in_turn_and_take_everything_under_the_cap() {
        let lanes = Lanes::new(3);
        let mut firsts = Vec::new();
        for _ in 0..3 {
            for lane in 0..3 {
                assert!(lanes.submit(lane, submission(1)).is_ok());
            }
            let mut batch = Vec::new();
            assert_eq!(lanes.drain_into(&mut batch, COMMIT_RECORDS_MAX), 3);
            firsts.push(batch[0].0);
        }
        assert_eq!(firsts, [0, 1, 2]);
        assert!(lanes.is_empty());
    }
}
