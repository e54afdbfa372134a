//! The flusher's coordinator: fills batches from the WAL, hands them to
//! senders, and moves the checkpoint over the confirmed prefix.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use super::health::{Health, Sinks};
use super::sender;
use super::{Batch, Done, IDLE_WAIT_MS, Stop, after, segment_start, store_checkpoint};
use crate::app::App;
use crate::limits::{CHECKPOINT_INTERVAL_MS, FLUSH_BACKOFF_MS_MAX};
use crate::metrics::GLOBAL;
use crate::sink::InsertCommand;
use crate::wal::checkpoint::Checkpoint;
use crate::wal::reader::WalReader;
use crate::wal::{Id, Position, WalError};

/// A batch being filled.
struct Pending {
    command: InsertCommand,
    /// Where the batch's bytes start and end, in one segment.
    start: Position,
    end: Position,
    first_id: Id,
    last_id: Id,
    first_at: Instant,
}

/// An entry of the in-order window the checkpoint advances over.
struct Slot {
    /// What the entry stands for.
    of: SlotOf,
    /// Where delivery resumes once this slot and all before it are done.
    next: Checkpoint,
    records: u64,
    bytes: u64,
    done: bool,
    /// Given up at the stop deadline: not delivered, no longer in flight.
    abandoned: bool,
}

/// What a window entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotOf {
    /// The batch with this id, on its way to MongoDB: done when its sender
    /// reports it confirmed.
    Batch(u64),
    /// The end of a segment: nothing to send, so done from the start. It
    /// moves the checkpoint to the next segment's first record once every
    /// batch before it is done.
    SegmentEnd,
}

/// After the stop deadline, how long to wait for senders still inside a
/// MongoDB call before leaving them (their batches stay in the WAL).
const STOP_SLACK_MS: u64 = 5_000;
/// Wait for new records while batches are in flight, so completions are
/// collected promptly.
const BUSY_WAIT_MS: u64 = 5;

pub(super) struct Coordinator {
    app: Arc<App>,
    stop: Arc<Stop>,
    reader: WalReader,
    /// Delivered up to here (in memory).
    ckpt: Checkpoint,
    /// What is on disk, and when it was written.
    stored: Checkpoint,
    stored_at: Instant,
    /// Dispatched batches and segment ends, in log order.
    window: VecDeque<Slot>,
    next_id: u64,
    pending: Option<Pending>,
    work: Option<Sender<Batch>>,
    done: Receiver<Done>,
    senders: Vec<JoinHandle<()>>,
    /// Command buffers come back here for reuse.
    spare: Vec<u8>,
}

impl Coordinator {
    pub(super) fn new(
        app: Arc<App>,
        sinks: Arc<Sinks>,
        health: Arc<Health>,
        resume: Checkpoint,
        stop: Arc<Stop>,
    ) -> Coordinator {
        let (work_tx, work_rx) = bounded::<Batch>(app.config.flush_concurrency);
        let (done_tx, done_rx) = unbounded::<Done>();
        let delivery = Arc::new(sender::Delivery {
            sinks,
            health,
            stop: stop.clone(),
            collection: app.config.collection.clone(),
            dead_letter_collection: app.config.dead_letter_collection.clone(),
            concern: app.config.write_concern,
        });
        let senders = (0..app.config.flush_concurrency)
            .filter_map(|i| {
                let (c, w, d) = (delivery.clone(), work_rx.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("flush-send-{i}"))
                    .spawn(move || {
                        crate::sched::lower_this_thread();
                        sender::run(&c, &w, &d)
                    })
                    .ok()
            })
            .collect();
        Coordinator {
            reader: WalReader::new(app.wal.clone(), resume),
            app,
            stop,
            ckpt: resume,
            stored: resume,
            stored_at: Instant::now(),
            window: VecDeque::new(),
            next_id: 0,
            pending: None,
            work: Some(work_tx),
            done: done_rx,
            senders,
            spare: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
        loop {
            self.collect(Duration::ZERO);
            if self.finished() {
                break;
            }
            if self.in_flight() < self.app.config.flush_concurrency {
                if let Err(e) = self.fill() {
                    log::error!("reading the WAL for delivery failed: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(FLUSH_BACKOFF_MS_MAX));
                }
            } else {
                self.collect(Duration::from_millis(IDLE_WAIT_MS));
            }
        }
        self.work = None;
        if self.ckpt != self.stored {
            store_checkpoint(&self.app, &self.ckpt);
        }
        let (backlog, in_flight) = (self.app.wal.backlog_records(), self.in_flight());
        log::info!(
            "flusher stopped; {backlog} record(s) stay in the WAL for the next start ({in_flight} batch(es) were in flight)"
        );
        if in_flight == 0 {
            for s in self.senders.drain(..) {
                let _ = s.join();
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.window
            .iter()
            .filter(|s| !s.done && !s.abandoned)
            .count()
    }

    fn finished(&self) -> bool {
        let Some(deadline) = self.stop.deadline() else {
            return false;
        };
        let now = Instant::now();
        if now >= deadline + Duration::from_millis(STOP_SLACK_MS) {
            return true;
        }
        let drained = self.pending.is_none() && self.reader.caught_up();
        self.in_flight() == 0 && (drained || now >= deadline)
    }

    /// Reads what is committed into the pending batch and sends it when it
    /// is full, old enough, or at a segment's end.
    fn fill(&mut self) -> Result<(), WalError> {
        let interval = Duration::from_millis(self.app.config.flush_interval_ms);
        let wait = match &self.pending {
            Some(p) => interval.saturating_sub(p.first_at.elapsed()),
            None if self.in_flight() > 0 => Duration::from_millis(BUSY_WAIT_MS),
            None => Duration::from_millis(IDLE_WAIT_MS),
        };
        let max = self.app.config.flush_max_records
            - self
                .pending
                .as_ref()
                .map_or(0, |p| p.command.records() as usize);
        let start = self.reader.position();
        let (pending, spare, config) = (&mut self.pending, &mut self.spare, &self.app.config);
        let outcome = self.reader.read(max, wait, |r| {
            let p = pending.get_or_insert_with(|| Pending {
                command: InsertCommand::start(
                    std::mem::take(spare),
                    &config.collection,
                    config.write_concern,
                ),
                start,
                end: start,
                first_id: r.id,
                last_id: Id::MIN,
                first_at: Instant::now(),
            });
            p.command.push(r);
            p.last_id = r.id;
        })?;
        if let Some(p) = self.pending.as_mut() {
            if p.start.segment != outcome.end.segment {
                // The reader skipped a segment recovery had quarantined; the
                // batch began at the start of the one it landed in.
                p.start = Position::first_in(outcome.end.segment);
            }
            p.end = outcome.end;
        }
        let send = self.pending.as_ref().is_some_and(|p| {
            p.command.records() as usize >= self.app.config.flush_max_records
                || p.first_at.elapsed() >= interval
                || outcome.segment_done
                || (self.stop.deadline().is_some() && self.reader.caught_up())
        });
        if send {
            self.dispatch();
        }
        if outcome.segment_done {
            self.reader.next_segment();
            let next = segment_start(self.reader.position().segment, &self.last_next());
            self.window.push_back(Slot {
                of: SlotOf::SegmentEnd,
                next,
                records: 0,
                bytes: 0,
                done: true,
                abandoned: false,
            });
        }
        Ok(())
    }

    /// The resume point after everything dispatched so far.
    fn last_next(&self) -> Checkpoint {
        self.window.back().map_or(self.ckpt, |s| s.next)
    }

    fn dispatch(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let (id, records, bytes) = (
            self.next_id,
            u64::from(p.command.records()),
            p.end.offset - p.start.offset,
        );
        self.next_id += 1;
        let next = after(p.end, p.last_id, &self.last_next());
        self.window.push_back(Slot {
            of: SlotOf::Batch(id),
            next,
            records,
            bytes,
            done: false,
            abandoned: false,
        });
        let batch = Batch {
            id,
            command: p.command.finish(),
            records,
            fresh: p.first_id >= self.app.wal.first_new_id,
        };
        if let Some(work) = &self.work {
            // Bounded by the concurrency, and a slot is free: this does not wait.
            let _ = work.send(batch);
        }
    }

    /// Takes sender reports (waiting up to `timeout` for the first) and
    /// advances the checkpoint over the confirmed prefix.
    fn collect(&mut self, timeout: Duration) {
        let mut next = if timeout.is_zero() {
            self.done.try_recv().ok()
        } else {
            self.done.recv_timeout(timeout).ok()
        };
        while let Some(d) = next {
            self.complete(d);
            next = self.done.try_recv().ok();
        }
        while self.window.front().is_some_and(|s| s.done) {
            self.ckpt = self.window.pop_front().expect("front exists").next;
        }
        let segment_passed = self.ckpt.at.segment > self.stored.at.segment;
        let due = self.stored_at.elapsed() >= Duration::from_millis(CHECKPOINT_INTERVAL_MS);
        if self.ckpt != self.stored
            && (segment_passed || due)
            && store_checkpoint(&self.app, &self.ckpt)
        {
            self.stored = self.ckpt;
            self.stored_at = Instant::now();
        }
    }

    fn complete(&mut self, d: Done) {
        if self.spare.capacity() < d.command.capacity() {
            self.spare = d.command;
        }
        let Some(slot) = self.window.iter_mut().find(|s| s.of == SlotOf::Batch(d.id)) else {
            return;
        };
        let Some(settled) = d.settled else {
            // Abandoned at the stop deadline; it stays in the WAL.
            slot.abandoned = true;
            return;
        };
        slot.done = true;
        self.app.wal.delivered(slot.bytes, slot.records);
        GLOBAL.records_flushed.fetch_add(slot.records, Relaxed);
        GLOBAL
            .records_replayed_duplicate
            .fetch_add(settled.duplicates, Relaxed);
        GLOBAL
            .events_deduplicated
            .fetch_add(settled.events_deduplicated, Relaxed);
        GLOBAL
            .dead_letters
            .fetch_add(settled.dead_lettered, Relaxed);
    }
}
