//! Counters and histograms, and their Prometheus text rendering.
//!
//! # Cost on the hot path
//! Request counters live in one cache-padded block per OS thread
//! ([`Core`]). Coroutines do not migrate between may's workers (work
//! stealing is off), so each block is written by one worker thread only: a
//! relaxed `fetch_add` on a line no other thread writes. That holds whether
//! or not the workers are pinned (they are, one per CPU, only when the
//! process may run on exactly as many CPUs as there are workers). Blocks
//! are summed only when `/metrics` or `/api/stats` is read. Nothing here
//! logs or allocates on the hot path.
//!
//! The WAL writer and the flusher are single threads; their histograms and
//! counters are plain atomics they alone write ([`Global`]).
//!
//! `--metrics=false` turns the per-request counters off, so the benchmark
//! can compare their cost side by side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

mod render;
pub use render::{CONTENT_TYPE, Gauges, render};

/// Routes as counted; every unknown path is `Other`, so the label set is
/// bounded whatever clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/api/usages`: the ingest endpoint.
    Usages,
    /// `/`: the HTML status page.
    StatusPage,
    /// `/api/stats`: the JSON the status page polls.
    Stats,
    /// `/metrics`: the Prometheus scrape.
    Metrics,
    /// `/healthz`: liveness.
    Healthz,
    /// `/readyz`: readiness ([`crate::app::App::readiness`]).
    Readyz,
    /// `/openapi.json`: the API document.
    OpenApi,
    /// Any other path, under the label `other`.
    Other,
}

const ROUTES: [(Route, &str); 8] = [
    (Route::Usages, "/api/usages"),
    (Route::StatusPage, "/"),
    (Route::Stats, "/api/stats"),
    (Route::Metrics, "/metrics"),
    (Route::Healthz, "/healthz"),
    (Route::Readyz, "/readyz"),
    (Route::OpenApi, "/openapi.json"),
    (Route::Other, "other"),
];

/// Statuses busyapi sends; anything else would be counted as the last.
const STATUSES: [u16; 17] = [
    200, 201, 400, 401, 404, 405, 408, 413, 414, 415, 429, 431, 500, 501, 503, 505, 0,
];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// One thread's hot-path counters.
pub struct Core {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    acknowledged: AtomicU64,
    retries_answered: AtomicU64,
    batches: AtomicU64,
    batch_records: AtomicU64,
}

static CORES: Mutex<Vec<Arc<CachePadded<Core>>>> = Mutex::new(Vec::new());
static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    static LOCAL: Arc<CachePadded<Core>> = {
        let core = Arc::new(CachePadded::new(Core {
            requests: Default::default(),
            acknowledged: AtomicU64::new(0),
            retries_answered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_records: AtomicU64::new(0),
        }));
        CORES.lock().push(core.clone());
        core
    };
}

/// Switches the per-request counters on or off (`--metrics`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Counts one response.
pub fn count_request(route: Route, status: u16) {
    if ENABLED.load(Relaxed) {
        LOCAL.with(|c| c.requests[route as usize][status_index(status)].fetch_add(1, Relaxed));
    }
}

/// Counts records acknowledged with a 201.
pub fn count_acknowledged(records: u64) {
    if ENABLED.load(Relaxed) {
        LOCAL.with(|c| c.acknowledged.fetch_add(records, Relaxed));
    }
}

/// Counts a retried event answered from the retry window: a 201 with the
/// first id, nothing written.
pub fn count_retry_answered() {
    if ENABLED.load(Relaxed) {
        LOCAL.with(|c| c.retries_answered.fetch_add(1, Relaxed));
    }
}

/// Counts a batch POST answered 201 with `usages` ids (those written and
/// those the retry window answered).
pub fn count_batch(usages: u64) {
    if ENABLED.load(Relaxed) {
        LOCAL.with(|c| {
            c.batches.fetch_add(1, Relaxed);
            c.batch_records.fetch_add(usages, Relaxed);
        });
    }
}

/// A fixed-bucket histogram written by one thread. Its count is the sum of
/// its buckets (one more holds what is above the last bound), so a scrape
/// racing an observation still sees buckets that never exceed the count.
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow.
    buckets: Vec<AtomicU64>,
    /// Sum in millionths of the unit, so it stays an integer atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts `v`, in the histogram's unit (seconds or records), in the first
    /// bucket whose bound is at least `v`, or in the overflow bucket.
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((v * 1e6) as u64, Relaxed);
    }

    /// `(sum, count, per-bucket counts)`; the encoder makes them cumulative
    /// and adds `+Inf` from the count.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts: Vec<u64> = self.buckets.iter().map(|n| n.load(Relaxed)).collect();
        let buckets = self
            .bounds
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        (
            self.sum_micros.load(Relaxed) as f64 / 1e6,
            counts.iter().sum(),
            buckets,
        )
    }
}

const LATENCY_BOUNDS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Kinds of MongoDB failure, as counted.
pub const MONGO_ERROR_KINDS: [&str; 6] = [
    "network",
    "server_selection",
    "timeout",
    "write_concern",
    "write",
    "other",
];

/// Counters of the single-threaded parts.
pub struct Global {
    /// Time of each WAL `fdatasync`, in seconds.
    pub fsync_seconds: Histogram,
    /// Records per group commit: how many one `fdatasync` made durable.
    pub commit_records: Histogram,
    /// How long commits were held back to share their fsync.
    pub commit_hold_seconds: Histogram,
    /// Time to settle one insert batch, in seconds: every try until MongoDB
    /// answered, and the dead-lettering of what it refused.
    pub flush_seconds: Histogram,
    /// Records per insert batch.
    pub flush_records: Histogram,
    /// Records settled with MongoDB: stored, found already there, or
    /// dead-lettered.
    pub records_flushed: AtomicU64,
    /// Records sent again (after a crash or a lost reply) that MongoDB already
    /// held under their `_id`: delivered before, so not stored twice.
    pub records_replayed_duplicate: AtomicU64,
    /// Records MongoDB did not store because it already had their
    /// `(patientId, eventId)`: an event a device sent again.
    pub events_deduplicated: AtomicU64,
    /// Records MongoDB refused for good and this process stored in the
    /// dead-letter collection (a replayed dead letter is a duplicate).
    pub dead_letters: AtomicU64,
    /// Failed MongoDB calls, one counter per kind, in [`MONGO_ERROR_KINDS`]
    /// order.
    pub mongo_errors: [AtomicU64; MONGO_ERROR_KINDS.len()],
    /// Connections closed with a 503 at accept because `--max-connections`
    /// were already open.
    pub connections_refused: AtomicU64,
    /// Failed `accept` calls (out of descriptors or memory); the accept loop
    /// pauses and retries.
    pub accept_errors: AtomicU64,
    /// Documents MongoDB already held under ids this node had just handed
    /// out: the sign of a node id in use by another process.
    pub id_collisions: AtomicU64,
    /// Connections closed by a read timeout: mid-request (after a 408) or
    /// idle (quietly).
    pub connections_timed_out: AtomicU64,
    /// TLS connections whose handshake failed: not TLS (plain HTTP), a
    /// version or suite refused, or not done within the header timeout.
    pub tls_handshakes_failed: AtomicU64,
}

/// The process's one [`Global`], made on first use.
pub static GLOBAL: LazyLock<Global> = LazyLock::new(|| Global {
    fsync_seconds: Histogram::new(LATENCY_BOUNDS_S),
    commit_records: Histogram::new(BATCH_BOUNDS),
    commit_hold_seconds: Histogram::new(LATENCY_BOUNDS_S),
    flush_seconds: Histogram::new(LATENCY_BOUNDS_S),
    flush_records: Histogram::new(BATCH_BOUNDS),
    records_flushed: AtomicU64::new(0),
    records_replayed_duplicate: AtomicU64::new(0),
    events_deduplicated: AtomicU64::new(0),
    dead_letters: AtomicU64::new(0),
    mongo_errors: Default::default(),
    connections_refused: AtomicU64::new(0),
    accept_errors: AtomicU64::new(0),
    id_collisions: AtomicU64::new(0),
    connections_timed_out: AtomicU64::new(0),
    tls_handshakes_failed: AtomicU64::new(0),
});

/// Records one group commit: its fsync time and its size.
pub fn observe_fsync(took: Duration, records: u64) {
    GLOBAL.fsync_seconds.observe(took.as_secs_f64());
    GLOBAL.commit_records.observe(records as f64);
}

/// Records how long the writer held a commit back (see `wal::pacing`).
pub fn observe_commit_hold(took: Duration) {
    GLOBAL.commit_hold_seconds.observe(took.as_secs_f64());
}

/// Counts a MongoDB failure of `kind` (one of [`MONGO_ERROR_KINDS`]).
pub fn count_mongo_error(kind: &str) {
    let i = MONGO_ERROR_KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(MONGO_ERROR_KINDS.len() - 1);
    GLOBAL.mongo_errors[i].fetch_add(1, Relaxed);
}

/// Sums of the per-core counters.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Per (route label, status): only non-zero entries.
    pub requests: Vec<(&'static str, u16, u64)>,
    /// Records acknowledged with a 201, summed over all cores.
    pub acknowledged: u64,
    /// Retried events answered from the retry window, over all cores.
    pub retries_answered: u64,
    /// Batch POSTs answered 201, over all cores.
    pub batches: u64,
    /// Usages in those batches, over all cores.
    pub batch_records: u64,
}

/// Sums every core's block.
pub fn totals() -> Totals {
    let mut t = Totals::default();
    let mut grid = [[0u64; STATUSES.len()]; ROUTES.len()];
    for core in CORES.lock().iter() {
        t.acknowledged += core.acknowledged.load(Relaxed);
        t.retries_answered += core.retries_answered.load(Relaxed);
        t.batches += core.batches.load(Relaxed);
        t.batch_records += core.batch_records.load(Relaxed);
        for (r, row) in core.requests.iter().enumerate() {
            for (s, n) in row.iter().enumerate() {
                grid[r][s] += n.load(Relaxed);
            }
        }
    }
    for (r, row) in grid.iter().enumerate() {
        for (s, &n) in row.iter().enumerate() {
            if n > 0 {
                t.requests.push((ROUTES[r].1, STATUSES[s], n));
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_the_api_document_lists_has_its_own_label() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../docs/openapi.json")).expect("the document");
        let operations = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|ops| ops.as_object().expect("operations").values());
        let mut statuses = 0;
        for op in operations {
            let responses = op["responses"].as_object().expect("responses");
            for status in responses.keys().map(|k| k.parse::<u16>().expect(k)) {
                assert_ne!(status_index(status), STATUSES.len() - 1, "{status}");
                statuses += 1;
            }
        }
        assert!(statuses > 20, "{statuses} statuses read");
    }

    #[test]
    fn counts_from_several_threads_are_summed() {
        let before = totals().acknowledged;
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| count_acknowledged(5)))
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(totals().acknowledged >= before + 20);
    }

    #[test]
    fn the_rendering_has_types_and_labels() {
        count_request(Route::Usages, 201);
        let text = render(Gauges {
            wal_backlog_records: 7,
            wal_max_bytes: 1 << 20,
            ..Default::default()
        });
        assert!(
            text.contains("# TYPE busyapi_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"busyapi_http_requests_total{route="/api/usages",status="201"}"#),
            "{text}"
        );
        assert!(text.contains("busyapi_wal_backlog_records 7"), "{text}");
        assert!(text.contains("busyapi_wal_max_bytes 1048576"), "{text}");
        assert!(
            text.contains("# TYPE busyapi_wal_fsync_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn a_rendered_histogram_is_cumulative_once_and_ends_at_its_count() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.5, 1.7, 3.0, 9.0] {
            h.observe(v);
        }
        let (sum, count, b) = h.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 15.7).abs() < 1e-6);
        assert_eq!(b, vec![(1.0, 1), (2.0, 2), (4.0, 1)]);
        GLOBAL.flush_records.observe(3.0);
        let text = render(Gauges::default());
        let bucket = |le: &str| -> u64 {
            let key = format!("busyapi_flush_batch_records_bucket{{le=\"{le}\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&key))
                .unwrap_or_else(|| panic!("{key} in {text}"));
            line[key.len()..].parse().expect("a count")
        };
        let total = bucket("+Inf");
        assert!(total >= 1);
        assert!(
            bucket("4") <= total && bucket("2") <= bucket("4") && bucket("4") >= 1,
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_racing_observations_never_has_buckets_above_its_count() {
        static H: LazyLock<Histogram> = LazyLock::new(|| Histogram::new(&[1.0, 2.0]));
        const OBSERVATIONS: usize = 1_000_000;
        let writer = std::thread::spawn(|| {
            for i in 0..OBSERVATIONS {
                H.observe((i % 3) as f64 * 0.9);
            }
        });
        let mut checked = 0;
        while !writer.is_finished() {
            let (_, count, buckets) = H.snapshot();
            let cumulative: u64 = buckets.iter().map(|&(_, n)| n).sum();
            assert!(
                cumulative <= count,
                "{cumulative} in buckets, count {count}"
            );
            checked += 1;
        }
        writer.join().expect("writer");
        assert!(checked > 0);
        assert_eq!(H.snapshot().1, OBSERVATIONS as u64);
    }
}
