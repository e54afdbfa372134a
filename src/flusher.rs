//! WAL → MongoDB: the fourth step of the data flow.
//!
//! One coordinator thread reads committed records ([`WalReader`]) and encodes
//! them straight into `insert` commands. A batch goes out when it holds
//! `--flush-max-records` records or when `--flush-interval-ms` has passed
//! since its first record, whichever comes first; it never spans two
//! segments. Up to `--flush-concurrency` batches are in flight, each on its
//! own sender thread, which retries its batch with capped exponential
//! backoff until MongoDB confirms it.
//!
//! # Exactly once
//! Every document's `_id` is its WAL id, so a batch sent twice is stored
//! once: the second attempt gets duplicate-key errors, which count as
//! delivered. The checkpoint moves only over a contiguous prefix of
//! confirmed batches, is stored (fsync, rename) before any segment it passes
//! is deleted, and is where delivery resumes after a crash.
//!
//! # MongoDB down
//! Ingest never waits for this module. When MongoDB is unreachable the
//! senders back off; the log says so once, with the backlog, and once more
//! when MongoDB is back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use parking_lot::Mutex;

use crate::app::App;
use crate::config::WriteConcernMode;
use crate::limits::{CHECKPOINT_INTERVAL_MS, FLUSH_BACKOFF_MS_MAX, FLUSH_BACKOFF_MS_MIN, SEQ_MAX};
use crate::metrics::{self, GLOBAL};
use crate::sink::{Concern, Delivered, InsertCommand, Sink, SinkError};
use crate::wal::checkpoint::{self, Checkpoint};
use crate::wal::reader::WalReader;
use crate::wal::segment::HEADER_BYTES;

/// How long the coordinator waits for new records when it has nothing else
/// to do; bounds how late it notices a stop request.
const IDLE_WAIT_MS: u64 = 100;
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
    index: JoinHandle<()>,
}

impl Flusher {
    /// Starts delivery from `resume`.
    pub fn start(
        app: Arc<App>,
        factory: SinkFactory,
        resume: Checkpoint,
    ) -> std::io::Result<Flusher> {
        let stop = Arc::new(Stop::default());
        let sinks = Arc::new(Sinks {
            factory,
            current: Mutex::new(None),
        });
        let index = {
            let (sinks, stop) = (sinks.clone(), stop.clone());
            std::thread::Builder::new()
                .name("mongo-index".into())
                .spawn(move || ensure_index(&sinks, &stop))?
        };
        let coordinator = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("flusher".into())
                .spawn(move || Coordinator::new(app, sinks, resume, stop).run())?
        };
        Ok(Flusher {
            stop,
            coordinator,
            index,
        })
    }

    /// Delivers the backlog for up to `grace`, then stops. Call after the
    /// WAL writer has stopped, so the backlog cannot grow meanwhile.
    pub fn stop(self, grace: Duration) {
        *self.stop.deadline.lock() = Some(Instant::now() + grace);
        let _ = self.coordinator.join();
        let _ = self.index.join();
    }
}

/// The sink, built on first use and rebuilt after a failed build.
struct Sinks {
    factory: SinkFactory,
    current: Mutex<Option<Arc<dyn Sink>>>,
}

impl Sinks {
    fn get(&self) -> Result<Arc<dyn Sink>, SinkError> {
        let mut cur = self.current.lock();
        if let Some(s) = cur.as_ref() {
            return Ok(s.clone());
        }
        let s = (self.factory)()?;
        *cur = Some(s.clone());
        Ok(s)
    }
}

fn ensure_index(sinks: &Sinks, stop: &Stop) {
    let mut backoff = Backoff::new();
    while stop.deadline().is_none() {
        match sinks.get().and_then(|s| s.ensure_index()) {
            Ok(()) => {
                log::info!("index {{patientId: 1, timestamp: 1}} is in place");
                return;
            }
            Err(e) => {
                log::debug!("index not created yet: {e}");
                backoff.sleep_until(|| stop.deadline().is_some());
            }
        }
    }
}

/// One batch on its way to MongoDB.
struct Batch {
    id: u64,
    command: Vec<u8>,
    records: u64,
}

/// An entry of the in-order window the checkpoint advances over.
struct Slot {
    id: u64,
    /// Where delivery resumes once this slot and all before it are done.
    next: Checkpoint,
    records: u64,
    bytes: u64,
    done: bool,
    /// Given up at the stop deadline: not delivered, no longer in flight.
    abandoned: bool,
}

/// A sender's report.
struct Done {
    id: u64,
    delivered: Option<Delivered>,
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
        while Instant::now() < until && !cancel() {
            std::thread::sleep(Duration::from_millis(FLUSH_BACKOFF_MS_MIN));
        }
        self.next_ms = (self.next_ms * 2).min(FLUSH_BACKOFF_MS_MAX);
    }
}

mod coordinator;
use coordinator::Coordinator;

/// Whether MongoDB is reachable, with the one log line per change.
struct Health {
    app: Arc<App>,
    /// Whether any attempt has finished yet (the first one is always logged).
    known: AtomicBool,
    last_reminder: Mutex<Instant>,
}

impl Health {
    fn ok(&self) {
        let was_up = self.app.mongo_up.swap(true, Relaxed);
        if !was_up {
            let known = self.known.swap(true, Relaxed);
            let backlog = self.app.wal.backlog_records();
            if known {
                log::info!(
                    "MongoDB is reachable again; delivering a backlog of {backlog} record(s)"
                );
            } else {
                log::info!("MongoDB is reachable; {backlog} record(s) awaiting delivery");
            }
        }
    }

    fn failed(&self, e: &SinkError) {
        metrics::count_mongo_error(e.kind());
        let was_up = self.app.mongo_up.swap(false, Relaxed);
        let first = !self.known.swap(true, Relaxed);
        let mut last = self.last_reminder.lock();
        let remind = last.elapsed() >= Duration::from_secs(OUTAGE_REMINDER_SECS);
        if was_up || first || remind {
            *last = Instant::now();
            log::warn!(
                "MongoDB is unreachable or refusing writes ({e}); {} record(s), {} byte(s) are kept in the WAL and will be delivered when it is back; retrying with backoff up to {} ms",
                self.app.wal.backlog_records(),
                self.app.wal.backlog_bytes(),
                FLUSH_BACKOFF_MS_MAX
            );
        }
    }
}

/// A sender thread: takes batches, delivers each until MongoDB confirms it or
/// the stop deadline passes.
fn sender(
    sinks: Arc<Sinks>,
    work: Receiver<Batch>,
    done: Sender<Done>,
    health: Arc<Health>,
    stop: Arc<Stop>,
) {
    while let Ok(batch) = work.recv() {
        let mut backoff = Backoff::new();
        let delivered = loop {
            let started = Instant::now();
            let attempt = sinks
                .get()
                .and_then(|s| s.insert(batch.command.clone(), batch.records));
            match attempt {
                Ok(d) => {
                    after_insert_hook();
                    GLOBAL
                        .flush_seconds
                        .observe(started.elapsed().as_secs_f64());
                    GLOBAL.flush_records.observe(batch.records as f64);
                    health.ok();
                    break Some(d);
                }
                Err(e) => {
                    health.failed(&e);
                    if stop.expired() {
                        break None;
                    }
                    backoff.sleep_until(|| stop.expired());
                }
            }
        };
        if done
            .send(Done {
                id: batch.id,
                delivered,
                command: batch.command,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Failpoint `flusher::after_insert`: MongoDB has the batch, busyapi has not
/// recorded it; a crash here must not duplicate anything on replay.
fn after_insert_hook() {
    fail::fail_point!("flusher::after_insert", |_| {
        eprintln!("busyapi: failpoint flusher::after_insert: aborting after a confirmed insert");
        std::process::abort()
    });
}

fn concern(mode: WriteConcernMode) -> Concern {
    match mode {
        WriteConcernMode::Journaled => Concern::Journaled,
        WriteConcernMode::Majority => Concern::Majority,
    }
}

/// The resume point after a slot, given the id of its last record.
fn after(segment_no: u64, end: u64, last_id: u64, prev: &Checkpoint) -> Checkpoint {
    Checkpoint {
        segment_no,
        offset: end,
        last_seq: prev.last_seq.max(last_id & SEQ_MAX),
    }
}

fn segment_start(segment_no: u64, prev: &Checkpoint) -> Checkpoint {
    Checkpoint {
        segment_no,
        offset: HEADER_BYTES,
        last_seq: prev.last_seq,
    }
}

fn store_checkpoint(app: &App, ckpt: &Checkpoint) {
    if let Err(e) = checkpoint::store(&app.wal.dir, ckpt) {
        log::error!(
            "could not store the delivery checkpoint: {e}; delivery continues, a restart would resend more"
        );
        return;
    }
    if let Err(e) = app.wal.release_before(ckpt.segment_no) {
        log::error!("could not delete a delivered WAL segment: {e}");
    }
}

const _: () = assert!(CHECKPOINT_INTERVAL_MS > 0);
