//! A sender thread: takes batches and delivers each until MongoDB confirms
//! it or the stop deadline passes. What MongoDB refuses for good goes on to
//! [`super::dead_letters`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::health::{Health, Sinks};
use super::{Backoff, Batch, Done, Settled, Stop};
use crate::limits::FLUSH_BACKOFF_MS_MIN;
use crate::metrics::GLOBAL;
use crate::sink::{Concern, Delivered};

/// What every sender shares.
pub(super) struct Delivery {
    pub(super) sinks: Arc<Sinks>,
    pub(super) health: Arc<Health>,
    pub(super) stop: Arc<Stop>,
    /// `--collection`: where refused documents are tried again.
    pub(super) collection: String,
    /// `--dead-letter-collection`.
    pub(super) dead_letter_collection: String,
    pub(super) concern: Concern,
}

pub(super) fn run(delivery: &Delivery, work: &Receiver<Batch>, done: &Sender<Done>) {
    while let Ok(batch) = work.recv() {
        let settled = delivery.deliver(&batch);
        if done
            .send(Done {
                id: batch.id,
                settled,
                command: batch.command,
            })
            .is_err()
        {
            return;
        }
    }
}

impl Delivery {
    /// Delivers one batch: its documents stored, already stored, or
    /// dead-lettered. `None` once the stop deadline has passed.
    fn deliver(&self, batch: &Batch) -> Option<Settled> {
        let started = Instant::now();
        let (answer, calls) = self.answered(&batch.command, batch.records)?;
        after_insert_hook();
        if batch.fresh && calls == 1 && answer.duplicates > 0 {
            id_collision(answer.duplicates);
        }
        let mut settled = Settled {
            duplicates: answer.duplicates,
            events_deduplicated: answer.events_deduplicated,
            dead_lettered: 0,
        };
        if !answer.refused.is_empty() {
            let refused = self.refused_for_good(&batch.command, answer.refused, &mut settled)?;
            self.dead_letter(refused, &mut settled)?;
        }
        GLOBAL
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        GLOBAL.flush_records.observe(batch.records as f64);
        Some(settled)
    }

    /// Sends `command` until MongoDB answers it, retrying every failure with
    /// backoff for as long as it lasts. An answer may refuse documents.
    /// Returns it and the number of insert calls made; `None` once the stop
    /// deadline has passed.
    pub(super) fn answered(&self, command: &[u8], records: u64) -> Option<(Delivered, u32)> {
        let mut backoff = Backoff::new();
        let mut calls = 0;
        loop {
            let attempt = match self.sinks.ready() {
                Ok(Some(s)) => {
                    calls += 1;
                    s.insert(command.to_vec(), records)
                }
                Ok(None) => {
                    // The index step is under way on another thread; inserting
                    // now would race it. Not a MongoDB error.
                    if self.stop.expired() {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(FLUSH_BACKOFF_MS_MIN));
                    continue;
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(answer) => {
                    self.health.ok();
                    return Some((answer, calls));
                }
                Err(e) => {
                    self.health.failed(&e);
                    if self.stop.expired() {
                        return None;
                    }
                    backoff.sleep_until(|| self.stop.expired());
                }
            }
        }
    }
}

/// MongoDB holds other documents under ids this node just handed out: the
/// node id ran before on another data directory (see the README's "When
/// something goes wrong"). Those usages are not stored; say so loudly.
fn id_collision(documents: u64) {
    let before = GLOBAL.id_collisions.fetch_add(documents, Relaxed);
    if before == 0 {
        log::error!(
            "MongoDB already holds other documents under {documents} id(s) this node just handed out: node id reused with an empty data directory? These usages are not stored; stop this node and restore its data directory's checkpoint. Further collisions are counted in busyapi_id_collisions_total"
        );
    }
}

/// Failpoint `flusher::after_insert`: MongoDB has the batch, busyapi has not
/// recorded it; a crash here must not duplicate anything on replay.
fn after_insert_hook() {
    fail::fail_point!("flusher::after_insert", |_| {
        log::error!("failpoint flusher::after_insert: aborting after a confirmed insert");
        log::logger().flush();
        std::process::abort()
    });
}
