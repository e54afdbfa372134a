//! WAL → MongoDB: the fourth step of the data flow.
//!
//! One coordinator thread reads committed records ([`WalReader`]) and
//! encodes them straight into `insert` commands. A batch goes out when it
//! holds `--flush-max-records` records or when `--flush-interval-ms` has
//! passed since its first record, whichever comes first; it never spans two
//! segments. Up to `--flush-concurrency` batches are in flight, each on its
//! own sender thread, which retries its batch with capped exponential
//! backoff until MongoDB confirms it.
//!
//! Where a batch starts and ends is a [`Position`] and a record's id an
//! [`Id`], both from the WAL: this module never reads an id's bits or a
//! segment header's size.
//!
//! [`WalReader`]: crate::wal::reader::WalReader
//! [`REFUSED_ATTEMPTS_MAX`]: crate::limits::REFUSED_ATTEMPTS_MAX
//!
//! # A document MongoDB refuses for good
//! Inserts are unordered, so MongoDB stores the rest of a batch and names
//! each document it refuses (a schema validator's 121, a duplicate on a
//! unique index other than `_id`'s). Only those documents are tried again,
//! and one refused [`REFUSED_ATTEMPTS_MAX`] answers in a row goes to the
//! dead-letter collection (`--dead-letter-collection`) with its error
//! ([`crate::sink::deadletter`]), so one poison record cannot stop delivery
//! behind it. The batch is done, and the checkpoint may pass it, only once
//! MongoDB has confirmed every dead letter. Everything else (network,
//! server selection, timeouts, write-concern errors, "not primary") is
//! retried for as long as it lasts, as before.
//!
//! # Exactly once
//! Every document's `_id` is its WAL id, so a batch sent twice is stored
//! once: the second attempt gets duplicate-key errors, which count as
//! delivered. A dead letter keeps that `_id`, so a crash between its
//! confirmation and the checkpoint leaves one dead letter, not two: the
//! replay refuses the document again, and its second dead letter is a
//! duplicate `_id` in the dead-letter collection. The checkpoint moves only over a contiguous prefix of
//! confirmed batches, is stored (fsync, rename) before any segment it passes
//! is deleted, and is where delivery resumes after a crash.
//!
//! # MongoDB down
//! Ingest never waits for this module. When MongoDB is unreachable the
//! senders back off; the log says so once, with the backlog, and once more
//! when MongoDB is back.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::app::App;
use crate::limits::{CHECKPOINT_INTERVAL_MS, FLUSH_BACKOFF_MS_MAX, FLUSH_BACKOFF_MS_MIN};
use crate::sink::{Sink, SinkError};
use crate::wal::checkpoint::{self, Checkpoint};
use crate::wal::{Id, Position};

/// How long the coordinator waits for new records when it has nothing else
/// to do; bounds how late it notices a stop request.
const IDLE_WAIT_MS: u64 = 100;
/// How long the stop waits for the probe past the grace deadline: the
/// probe notices the stop within [`IDLE_WAIT_MS`] unless it is in a call,
/// and a ping or a server selection ends within about 2 s.
const PROBE_STOP_WAIT_MS: u64 = 3_000;
/// How often, at most, "MongoDB is still unreachable" is repeated.
const OUTAGE_REMINDER_SECS: u64 = 300;

/// Builds the sink; called again after a failure (a `mongodb+srv` URI needs
/// DNS, which can be down with the rest of the network).
pub type SinkFactory = Box<dyn Fn() -> Result<Arc<dyn Sink>, SinkError> + Send + Sync>;

/// Tells the flusher to stop.
#[derive(Default)]
pub struct Stop {
    /// Deliver what is committed until this instant, then stop.
    deadline: Mutex<Option<Instant>>,
}

impl Stop {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }

    fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }
}

/// A running flusher.
pub struct Flusher {
    stop: Arc<Stop>,
    coordinator: JoinHandle<()>,
    probe: JoinHandle<()>,
}

impl Flusher {
    /// Starts delivery from `resume`.
    pub fn start(
        app: Arc<App>,
        factory: SinkFactory,
        resume: Checkpoint,
    ) -> std::io::Result<Flusher> {
        let stop = Arc::new(Stop::default());
        let sinks = Arc::new(Sinks::new(factory));
        let health = Arc::new(Health::new(app.clone()));
        let probe = {
            let (sinks, health, stop) = (sinks.clone(), health.clone(), stop.clone());
            std::thread::Builder::new()
                .name("mongo-probe".into())
                .spawn(move || health::probe(&sinks, &health, &stop))?
        };
        let coordinator = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("flusher".into())
                .spawn(move || {
                    crate::sched::lower_this_thread();
                    Coordinator::new(app, sinks, health, resume, stop).run()
                })?
        };
        Ok(Flusher {
            stop,
            coordinator,
            probe,
        })
    }

    /// Delivers the backlog for up to `grace`, then stops. Call after the
    /// WAL writer has stopped, so the backlog cannot grow meanwhile.
    pub fn stop(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        *self.stop.deadline.lock() = Some(deadline);
        let _ = self.coordinator.join();
        // The probe may be in a call MongoDB does not answer: an index
        // build over a large collection, which has no time limit. The
        // process must still stop within its grace, so it is waited for
        // only briefly and otherwise left to end with the process.
        let until = deadline.max(Instant::now()) + Duration::from_millis(PROBE_STOP_WAIT_MS);
        crate::wait::until(until, Duration::from_millis(IDLE_WAIT_MS), || {
            self.probe.is_finished()
        });
        if self.probe.is_finished() {
            let _ = self.probe.join();
        } else {
            log::warn!(
                "the MongoDB probe is still waiting for MongoDB (an index build?); not waiting for it"
            );
        }
    }
}

/// One batch on its way to MongoDB.
struct Batch {
    id: u64,
    command: Vec<u8>,
    records: u64,
    /// Every record was written by this process: no earlier attempt can
    /// have stored any of them, so a duplicate `_id` on the first attempt
    /// is another document with the same id, not a replay.
    fresh: bool,
}

/// How a batch's records were settled, beyond being stored.
#[derive(Debug, Default, Clone, Copy)]
struct Settled {
    /// Already in MongoDB, or already dead-lettered, from an earlier attempt.
    duplicates: u64,
    /// Events whose `(patientId, eventId)` MongoDB already had.
    events_deduplicated: u64,
    /// Stored in the dead-letter collection by this process.
    dead_lettered: u64,
}

/// A sender's report.
struct Done {
    id: u64,
    /// `None`: abandoned at the stop deadline.
    settled: Option<Settled>,
    /// The batch's command buffer, returned for reuse.
    command: Vec<u8>,
}

/// Exponential backoff between failed attempts, capped.
struct Backoff {
    next_ms: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next_ms: FLUSH_BACKOFF_MS_MIN,
        }
    }

    /// Sleeps for the current step (in short naps, so `cancel` is noticed),
    /// then doubles it.
    fn sleep_until(&mut self, cancel: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_millis(self.next_ms);
        crate::wait::until(until, Duration::from_millis(FLUSH_BACKOFF_MS_MIN), cancel);
        self.next_ms = (self.next_ms * 2).min(FLUSH_BACKOFF_MS_MAX);
    }
}

mod coordinator;
mod dead_letters;
mod health;
mod sender;
use coordinator::Coordinator;
use health::{Health, Sinks};

/// The resume point after a slot that ends at `end`, given the id of its
/// last record.
fn after(end: Position, last_id: Id, prev: &Checkpoint) -> Checkpoint {
    Checkpoint {
        at: end,
        last_seq: prev.last_seq.max(last_id.seq()),
    }
}

/// The resume point at the first record of `segment`.
fn segment_start(segment: u64, prev: &Checkpoint) -> Checkpoint {
    Checkpoint {
        at: Position::first_in(segment),
        last_seq: prev.last_seq,
    }
}

/// Stores the checkpoint, then deletes the segments it has passed. Returns
/// whether the checkpoint is on disk (if not, it is tried again later).
fn store_checkpoint(app: &App, ckpt: &Checkpoint) -> bool {
    if let Err(e) = checkpoint::store(&app.wal.dir, ckpt) {
        log::error!(
            "could not store the delivery checkpoint: {e}; delivery continues, a restart would resend more"
        );
        return false;
    }
    if let Err(e) = app.wal.release_before(ckpt.at.segment) {
        log::error!("could not delete a delivered WAL segment: {e}");
    }
    true
}

const _: () = assert!(CHECKPOINT_INTERVAL_MS > 0);
