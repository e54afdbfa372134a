//! The lanes: per-core queues between connections and the WAL writer.
//!
//! Connections stage validated usages into a buffer of their own
//! ([`Submission::stage`]) and push it as a [`Submission`] onto their
//! lane, a bounded lock-free queue; there is one lane per core, so two cores
//! rarely touch the same queue. The writer drains them round robin, commits,
//! and answers each submission with a [`Reply`] that travels back through
//! the lane's notifier coroutine on may's own channel, so a connection
//! waiting for its commit yields its worker thread instead of blocking it.
//!
//! # Invariants
//! - Every submission that was queued gets exactly one reply: a commit's
//!   outcome, or "stopping" once the writer has left.
//! - The writer is woken whenever something is queued while it sleeps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::submission::{CommitError, Reply, Submission, SubmitError};
use crate::limits::{LANE_SUBMISSIONS_MAX, WRITER_IDLE_PARK_MS};

/// A reply on its way back through a lane's notifier.
struct Completion {
    reply_to: may::sync::mpsc::Sender<Reply>,
    reply: Reply,
}

/// One commit's replies, gathered per lane by the writer (see
/// [`Lanes::replies`]) so that each lane's notifier gets one message, and
/// so at most one wake-up, per commit. The writer keeps one for its life;
/// [`Lanes::send_replies`] empties it.
pub(super) struct Replies(Vec<Vec<Completion>>);

impl Replies {
    /// Adds the reply to a submission that came from `lane`.
    pub(super) fn push(
        &mut self,
        lane: usize,
        reply_to: may::sync::mpsc::Sender<Reply>,
        reply: Reply,
    ) {
        let lanes = self.0.len();
        self.0[lane % lanes].push(Completion { reply_to, reply });
    }
}

/// The per-core queues between connections and the writer.
pub struct Lanes {
    queues: Box<[ArrayQueue<Submission>]>,
    /// One notifier coroutine per lane, on that lane's worker, forwards the
    /// writer's replies. Waking a coroutine from the writer's OS thread costs
    /// a syscall (may's eventfd) per coroutine; through the notifier, which
    /// gets a commit's replies for its lane as one message, it costs at most
    /// one per lane per commit, and the notifier wakes the connections on
    /// its own worker, from may's local run queue.
    notifiers: OnceLock<Box<[may::sync::mpsc::Sender<Vec<Completion>>]>>,
    /// Set while the writer is about to park or parked.
    writer_sleeping: AtomicBool,
    /// Set while the writer holds a commit back (see [`super::pacing`]).
    writer_holding: AtomicBool,
    /// Connections that can submit: the pacer holds a commit only while
    /// some of them are not already waiting on it.
    submitters: AtomicUsize,
    /// Submissions queued or being committed, not yet answered.
    waiting: AtomicUsize,
    pub(super) writer: OnceLock<Thread>,
    /// Set at shutdown: refuse new submissions, finish queued ones, exit.
    pub(super) stopping: AtomicBool,
    /// Set when the writer has left: whatever is queued from then on is
    /// answered "stopping" by whoever sees it (see [`Lanes::enqueue`]).
    writer_gone: AtomicBool,
    /// The lane a drain starts with; it moves on at every drain.
    first_lane: AtomicUsize,
}

impl Lanes {
    /// `count` lanes, one per may worker (at least one).
    pub fn new(count: usize) -> Arc<Lanes> {
        Arc::new(Lanes {
            queues: (0..count.max(1))
                .map(|_| ArrayQueue::new(LANE_SUBMISSIONS_MAX))
                .collect(),
            notifiers: OnceLock::new(),
            writer_sleeping: AtomicBool::new(false),
            writer_holding: AtomicBool::new(false),
            submitters: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            writer: OnceLock::new(),
            stopping: AtomicBool::new(false),
            writer_gone: AtomicBool::new(false),
            first_lane: AtomicUsize::new(0),
        })
    }

    /// How many lanes there are: one per may worker.
    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// Counts a connection as a submitter until the guard drops.
    pub fn attach(&self) -> Attached<'_> {
        self.submitters.fetch_add(1, Ordering::Relaxed);
        Attached(self)
    }

    /// Connections that can submit.
    pub(super) fn submitters(&self) -> usize {
        self.submitters.load(Ordering::Relaxed)
    }

    /// Submissions queued or being committed, not yet answered.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// `done` submissions were answered.
    pub(super) fn answered(&self, done: usize) {
        self.waiting.fetch_sub(done, Ordering::Relaxed);
    }

    /// Wakes a holding writer once every submitter waits on it: nobody is
    /// left to add a record, so the hold only costs latency.
    fn end_hold_if_all_wait(&self) {
        if self.writer_holding.load(Ordering::Relaxed)
            && self.waiting() >= self.submitters()
            && let Some(t) = self.writer.get()
        {
            t.unpark();
        }
    }

    /// Starts the notifier coroutines, lane `i` on may worker `i`. Without
    /// them (as in tests driving the WAL from plain threads) the writer
    /// replies to each submitter directly.
    pub fn start_notifiers(&self) -> std::io::Result<()> {
        let mut senders = Vec::with_capacity(self.queues.len());
        for lane in 0..self.queues.len() {
            let (tx, rx) = may::sync::mpsc::channel::<Vec<Completion>>();
            let builder = may::coroutine::Builder::new()
                .name(format!("lane-{lane}"))
                .id(lane);
            // SAFETY: may's spawn is unsafe because a coroutine must not hold
            // a thread-local borrow across a yield; this loop touches none.
            unsafe {
                builder.spawn(move || {
                    while let Ok(completions) = rx.recv() {
                        for c in completions {
                            // A connection that went away dropped its
                            // receiver; its records are durable all the same.
                            let _ = c.reply_to.send(c.reply);
                        }
                    }
                })
            }?;
            senders.push(tx);
        }
        let _ = self.notifiers.set(senders.into_boxed_slice());
        Ok(())
    }

    /// An empty set of replies, one list per lane.
    pub(super) fn replies(&self) -> Replies {
        Replies((0..self.queues.len()).map(|_| Vec::new()).collect())
    }

    /// Hands each lane's replies to its notifier in one message, leaving
    /// `replies` empty. Where a notifier is gone (or none was started) the
    /// writer replies itself.
    pub(super) fn send_replies(&self, replies: &mut Replies) {
        for (lane, completions) in replies.0.iter_mut().enumerate() {
            if completions.is_empty() {
                continue;
            }
            let completions = std::mem::take(completions);
            let undelivered = match self.notifiers.get() {
                Some(n) => match n[lane].send(completions) {
                    Ok(()) => continue,
                    Err(e) => e.0,
                },
                None => completions,
            };
            for c in undelivered {
                let _ = c.reply_to.send(c.reply);
            }
        }
    }

    /// Queues a submission on `lane` (taken modulo the lane count).
    pub fn submit(&self, lane: usize, sub: Submission) -> Result<(), (SubmitError, Submission)> {
        if self.stopping.load(Ordering::Acquire) {
            return Err((SubmitError::Stopping, sub));
        }
        self.enqueue(lane, sub)
    }

    /// Queues `sub` for the writer, or answers it if the writer has left
    /// meanwhile: a submitter that passed the `stopping` check can push
    /// after the writer's last look at the queues.
    fn enqueue(&self, lane: usize, sub: Submission) -> Result<(), (SubmitError, Submission)> {
        self.queues[lane % self.queues.len()]
            .push(sub)
            .map_err(|s| (SubmitError::LaneFull, s))?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fences in `park_writer` and `writer_left`: either
        // the writer sees this submission, or we see it asleep (and wake
        // it) or gone (and answer for it).
        fence(Ordering::SeqCst);
        if self.writer_gone.load(Ordering::Relaxed) {
            self.refuse_queued();
            return Ok(());
        }
        if self.writer_sleeping.load(Ordering::Relaxed)
            && let Some(t) = self.writer.get()
        {
            t.unpark();
        }
        self.end_hold_if_all_wait();
        Ok(())
    }

    /// Asks the writer to finish what is queued and exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Called by the writer as it leaves: from now on nothing queued is
    /// committed, so every submission still queued, or queued later, is
    /// answered "stopping" (a 503) rather than left waiting.
    pub(super) fn writer_left(&self) {
        self.writer_gone.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.refuse_queued();
    }

    fn refuse_queued(&self) {
        let mut replies = self.replies();
        for (lane, q) in self.queues.iter().enumerate() {
            while let Some(sub) = q.pop() {
                let reply = Reply {
                    first_id: Err(CommitError::Stopping),
                    staged: sub.staged,
                };
                self.answered(1);
                replies.push(lane, sub.reply, reply);
            }
        }
        self.send_replies(&mut replies);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queues.iter().all(ArrayQueue::is_empty)
    }

    /// Moves queued submissions, with their lane, into `batch` until it
    /// holds `max_records`: one submission from each lane in turn, starting
    /// from a different lane each time, so a busy core cannot keep the
    /// others' submissions out of every commit. A submission is never split
    /// (a batch POST is durable whole or not at all), so one that would
    /// take `batch` past `max_records` waits in `carry` and opens the next
    /// commit; a commit thus never holds more than `max_records`, since no
    /// submission does (`limits`). Returns the records added.
    pub(super) fn drain_into(
        &self,
        batch: &mut Vec<(usize, Submission)>,
        carry: &mut Option<(usize, Submission)>,
        max_records: usize,
    ) -> usize {
        let mut records: usize = batch.iter().map(|(_, s)| s.count as usize).sum();
        let before = records;
        let fits = |records: usize, sub: &Submission, batch: &[(usize, Submission)]| {
            batch.is_empty() || records + sub.count as usize <= max_records
        };
        if let Some((lane, sub)) = carry.take() {
            if !fits(records, &sub, batch) {
                *carry = Some((lane, sub));
                return 0;
            }
            records += sub.count as usize;
            batch.push((lane, sub));
        }
        let n = self.queues.len();
        let first = self.first_lane.fetch_add(1, Ordering::Relaxed) % n;
        loop {
            let mut took = false;
            for lane in (first..n).chain(0..first) {
                if records >= max_records {
                    return records - before;
                }
                if let Some(sub) = self.queues[lane].pop() {
                    if !fits(records, &sub, batch) {
                        *carry = Some((lane, sub));
                        return records - before;
                    }
                    records += sub.count as usize;
                    batch.push((lane, sub));
                    took = true;
                }
            }
            if !took {
                return records - before;
            }
        }
    }

    pub(super) fn park_writer(&self) {
        self.writer_sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.is_empty() && !self.stopping.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(WRITER_IDLE_PARK_MS));
        }
        self.writer_sleeping.store(false, Ordering::Relaxed);
    }

    /// Holds the writer until `until`, or until every submitter waits on
    /// the commit, or a stop. Submitters do not wake a holding writer for
    /// each submission: that would cost the syscalls the hold saves.
    pub(super) fn hold_writer(&self, until: Instant) {
        self.writer_holding.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        loop {
            let now = Instant::now();
            if now >= until
                || self.stopping.load(Ordering::Acquire)
                || self.waiting() >= self.submitters()
            {
                break;
            }
            std::thread::park_timeout(until - now);
        }
        self.writer_holding.store(false, Ordering::Relaxed);
    }
}

/// A connection counted among the submitters; see [`Lanes::attach`].
pub struct Attached<'a>(&'a Lanes);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.submitters.fetch_sub(1, Ordering::Relaxed);
        self.0.end_hold_if_all_wait();
    }
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
            prompt: false,
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
        let records = lanes.drain_into(&mut batch, &mut None, crate::limits::COMMIT_RECORDS_MAX);
        assert!(records <= crate::limits::COMMIT_RECORDS_MAX);
        assert!(
            batch.iter().any(|(lane, _)| *lane == 1),
            "lane 1 was left out of a full commit"
        );
    }

    #[test]
    fn a_submission_that_would_overfill_a_commit_waits_whole_for_the_next() {
        let lanes = Lanes::new(1);
        for count in [1500, 1000, 10] {
            assert!(lanes.submit(0, submission(count)).is_ok());
        }
        let (mut batch, mut carry) = (Vec::new(), None);
        assert_eq!(lanes.drain_into(&mut batch, &mut carry, 2048), 1500);
        assert_eq!(carry.as_ref().map(|(_, s)| s.count), Some(1000));
        // Draining more into the same commit still leaves it out.
        assert_eq!(lanes.drain_into(&mut batch, &mut carry, 2048), 0);
        batch.clear();
        assert_eq!(lanes.drain_into(&mut batch, &mut carry, 2048), 1010);
        let counts: Vec<u32> = batch.iter().map(|(_, s)| s.count).collect();
        assert_eq!(
            counts,
            [1000, 10],
            "the carried submission opens the commit"
        );
        assert!(carry.is_none() && lanes.is_empty());
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
            assert_eq!(
                lanes.drain_into(&mut batch, &mut None, crate::limits::COMMIT_RECORDS_MAX),
                3
            );
            firsts.push(batch[0].0);
        }
        assert_eq!(firsts, [0, 1, 2]);
        assert!(lanes.is_empty());
    }

    #[test]
    fn a_submission_queued_after_the_writer_left_is_answered_stopping_not_left_waiting() {
        let lanes = Lanes::new(2);
        lanes.stop();
        lanes.writer_left();
        // A submitter that passed the `stopping` check before the stop
        // pushes only now.
        let (reply, rx) = may::sync::mpsc::channel();
        let sub = Submission {
            staged: vec![1, 2, 3],
            count: 1,
            reply,
            prompt: false,
        };
        assert!(lanes.enqueue(1, sub).is_ok());
        let answer = rx.try_recv().expect("an answer at once, not a wait");
        assert_eq!(answer.first_id, Err(CommitError::Stopping));
        assert_eq!(answer.staged, [1, 2, 3], "the staging buffer comes back");
        assert!(lanes.is_empty());
    }

    #[test]
    fn a_commits_replies_reach_every_submitter_through_the_notifiers_in_order() {
        let lanes = Lanes::new(2);
        lanes.start_notifiers().expect("notifier coroutines");
        let mut replies = lanes.replies();
        let mut receivers = Vec::new();
        for (n, lane) in [0, 1, 0, 0, 1].into_iter().enumerate() {
            let (reply_to, rx) = may::sync::mpsc::channel();
            let reply = Reply {
                first_id: Ok(crate::wal::Id::from_raw(n as u64 + 1)),
                staged: vec![n as u8],
            };
            replies.push(lane, reply_to, reply);
            receivers.push(rx);
        }
        lanes.send_replies(&mut replies);
        for (n, rx) in receivers.iter().enumerate() {
            let answer = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("every submitter is answered");
            assert_eq!(answer.first_id, Ok(crate::wal::Id::from_raw(n as u64 + 1)));
            assert_eq!(answer.staged, [n as u8]);
        }
    }
}
