//! A sender thread: takes batches and delivers each until MongoDB confirms
//! it or the stop deadline passes.

use super::*;

pub(super) fn run(
    sinks: Arc<Sinks>,
    work: Receiver<Batch>,
    done: Sender<Done>,
    health: Arc<Health>,
    stop: Arc<Stop>,
) {
    while let Ok(batch) = work.recv() {
        let mut backoff = Backoff::new();
        let mut inserts = 0;
        let delivered = loop {
            let started = Instant::now();
            let attempt = match sinks.ready() {
                Ok(Some(s)) => {
                    inserts += 1;
                    s.insert(batch.command.clone(), batch.records)
                }
                Ok(None) => {
                    // The index step is under way on another thread; inserting
                    // now would race it. Not a MongoDB error.
                    if stop.expired() {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(FLUSH_BACKOFF_MS_MIN));
                    continue;
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(d) => {
                    after_insert_hook();
                    if batch.fresh && inserts == 1 && d.duplicates > 0 {
                        id_collision(d.duplicates);
                    }
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
