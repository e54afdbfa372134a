//! The sink handle, the one-time index creation, and MongoDB reachability
//! (with one log line per change, not one per retry).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{IDLE_WAIT_MS, OUTAGE_REMINDER_SECS, SinkFactory, Stop};
use crate::app::App;
use crate::limits::{FLUSH_BACKOFF_MS_MAX, REFUSED_ATTEMPTS_MAX};
use crate::metrics;
use crate::sink::{Sink, SinkError};

/// How often the probe pings MongoDB, so `/readyz`-adjacent reporting
/// (`mongoUp`, `busyapi_mongo_up`) is live even when nothing is delivered.
const PROBE_INTERVAL_MS: u64 = 2_000;

/// The sink, built on first use and rebuilt after a failed build, and
/// whether the index step has been done.
pub(super) struct Sinks {
    factory: SinkFactory,
    current: Mutex<Option<Arc<dyn Sink>>>,
    /// Held while the index is created. Inserts wait for it: creating the
    /// collection from `createIndexes` and from `insert` at the same moment
    /// is a race some servers handle badly (the dev server deadlocks).
    index_done: Mutex<bool>,
}

impl Sinks {
    pub(super) fn new(factory: SinkFactory) -> Sinks {
        Sinks {
            factory,
            current: Mutex::new(None),
            index_done: Mutex::new(false),
        }
    }

    fn get(&self) -> Result<Arc<dyn Sink>, SinkError> {
        let mut cur = self.current.lock();
        if let Some(s) = cur.as_ref() {
            return Ok(s.clone());
        }
        let s = (self.factory)()?;
        // The driver's threads exist now, perhaps started at full priority
        // by the main thread's fresh-directory question.
        crate::sched::lower_driver_threads();
        *cur = Some(s.clone());
        Ok(s)
    }

    /// The sink, once the index step is behind us. A reachable MongoDB that
    /// refuses the index (conflicting options, no privilege) is logged and
    /// skipped: the index must never stop delivery. `Ok(None)`: another
    /// thread is doing the index step right now; try again shortly.
    pub(super) fn ready(&self) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        let sink = self.get()?;
        let Some(mut done) = self.index_done.try_lock() else {
            return Ok(None);
        };
        if !*done {
            match sink.ensure_index() {
                Ok(()) => log::info!(
                    "indexes {{patientId: 1, timestamp: 1}} and {{patientId: 1, eventId: 1}} (unique) are in place"
                ),
                Err(e) if e.is_unreachable() => return Err(e),
                Err(e) => log::warn!(
                    "could not create the indexes {{patientId: 1, timestamp: 1}} and {{patientId: 1, eventId: 1}} (unique) ({e}); delivering without them, so a resent eventId may be stored twice"
                ),
            }
            *done = true;
        }
        Ok(Some(sink))
    }
}

/// Whether MongoDB is reachable, with the one log line per change.
pub(super) struct Health {
    app: Arc<App>,
    /// Whether any attempt has finished yet (the first one is always logged).
    known: AtomicBool,
    last_reminder: Mutex<Instant>,
    /// When a refusal was last logged.
    last_refusal: Mutex<Option<Instant>>,
}

impl Health {
    pub(super) fn new(app: Arc<App>) -> Health {
        Health {
            app,
            known: AtomicBool::new(false),
            last_reminder: Mutex::new(Instant::now()),
            last_refusal: Mutex::new(None),
        }
    }

    pub(super) fn ok(&self) {
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

    /// A failed call (a batch, the index step or a probe): counted by kind,
    /// and logged if it is news. Only an unreachable MongoDB is "down"; one
    /// that answers but refuses a batch (a write or write-concern error) is
    /// up, and the refusal is reported on its own.
    pub(super) fn failed(&self, e: &SinkError) {
        metrics::count_mongo_error(e.kind());
        if e.is_unreachable() {
            self.down(e);
        } else {
            self.refused(e);
        }
    }

    fn refused(&self, e: &SinkError) {
        let mut last = self.last_refusal.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(OUTAGE_REMINDER_SECS)) {
            *last = Some(Instant::now());
            log::error!(
                "MongoDB refuses a batch ({e}); retrying with backoff, and a document refused {} times in a row goes to the dead-letter collection {}; {} record(s) are kept in the WAL",
                REFUSED_ATTEMPTS_MAX,
                self.app.config.dead_letter_collection,
                self.app.wal.backlog_records()
            );
        }
    }

    /// MongoDB is down or refusing.
    fn down(&self, e: &SinkError) {
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

/// Creates the index as soon as MongoDB answers, then pings it every
/// [`PROBE_INTERVAL_MS`] so reachability is known while idle.
pub(super) fn probe(sinks: &Sinks, health: &Health, stop: &Stop) {
    crate::sched::lower_this_thread();
    while stop.deadline().is_none() {
        match sinks.ready() {
            Ok(Some(s)) => match s.ping() {
                Ok(()) => health.ok(),
                Err(e) => health.failed(&e),
            },
            Ok(None) => {}
            Err(e) => health.failed(&e),
        }
        let until = Instant::now() + Duration::from_millis(PROBE_INTERVAL_MS);
        crate::wait::until(until, Duration::from_millis(IDLE_WAIT_MS), || {
            stop.deadline().is_some()
        });
    }
}
