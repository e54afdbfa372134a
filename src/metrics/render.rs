//! The Prometheus text rendering of everything [`super`] counts, with the
//! `prometheus-client` crate: a collector built per scrape from the summed
//! per-core counters, the single-threaded parts' atomics and the gauges
//! other parts report.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{GLOBAL, Histogram, MONGO_ERROR_KINDS, Totals, totals};

/// The Content-Type of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Gauges that belong to other parts, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Records in the WAL not yet confirmed by MongoDB.
    pub wal_backlog_records: u64,
    /// WAL bytes not yet confirmed by MongoDB: what `--wal-max-bytes`
    /// bounds.
    pub wal_backlog_bytes: u64,
    /// `--wal-max-bytes`: exported so an alert can compare the backlog
    /// with the quota at which POSTs start to get 503.
    pub wal_max_bytes: u64,
    /// Segment files on disk, the active one included.
    pub wal_segments: u64,
    /// False while WAL appends fail; readiness fails with it.
    pub wal_writable: bool,
    /// Whether MongoDB accepted the flusher's last attempt.
    pub mongo_up: bool,
    /// Whether `/readyz` answers 200 at this moment.
    pub ready: bool,
    /// Seconds since the process built its shared state.
    pub uptime_seconds: f64,
    /// Open client connections, as the HTTP server's admission counts them.
    pub connections_open: u64,
    /// Each loaded API key's id, usage requests and 429s, as the keys
    /// count them (`http::auth`); empty with auth off. Ids are the
    /// operator's, at most `API_KEYS_MAX`: a bounded label.
    pub keys: Vec<(String, u64, u64)>,
}

/// Renders everything in the Prometheus text format.
pub fn render(gauges: Gauges) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        totals: totals(),
        gauges,
    }));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct Scrape {
    totals: Totals,
    gauges: Gauges,
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (t, g) = (&self.totals, &*GLOBAL);
        let mut fam = enc.encode_descriptor(
            "busyapi_http_requests",
            "HTTP responses by route and status.",
            None,
            MetricType::Counter,
        )?;
        for (route, status, n) in &t.requests {
            let status = status.to_string();
            let labels = [("route", *route), ("status", status.as_str())];
            ConstCounter::new(*n).encode(fam.encode_family(&labels)?)?;
        }
        type KeyRow = (String, u64, u64);
        type PerKey = (&'static str, &'static str, fn(&KeyRow) -> u64);
        let per_key: [PerKey; 2] = [
            (
                "busyapi_key_requests",
                "Usage requests authenticated with each API key.",
                |k| k.1,
            ),
            (
                "busyapi_key_rate_limited",
                "Usage requests of each API key refused 429 by its rate limit.",
                |k| k.2,
            ),
        ];
        for (name, help, value) in per_key {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for key in &self.gauges.keys {
                let labels = [("key", key.0.as_str())];
                ConstCounter::new(value(key)).encode(fam.encode_family(&labels)?)?;
            }
        }
        let mut fam = enc.encode_descriptor(
            "busyapi_mongo_errors",
            "Failed MongoDB calls by kind.",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in MONGO_ERROR_KINDS.iter().zip(&g.mongo_errors) {
            ConstCounter::new(n.load(Relaxed)).encode(fam.encode_family(&[("kind", *kind)])?)?;
        }
        self.counters(&mut enc)?;
        histograms(&mut enc)?;
        self.gauges(&mut enc)
    }
}

impl Scrape {
    fn counters(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (t, g) = (&self.totals, &*GLOBAL);
        let counters = [
            (
                "busyapi_records_acknowledged",
                "Records acknowledged with a 201 (durable in the WAL).",
                t.acknowledged,
            ),
            (
                "busyapi_event_retries_answered",
                "Retried events answered with their first id from the retry window; nothing written.",
                t.retries_answered,
            ),
            (
                "busyapi_batches",
                "Batch POSTs (JSON arrays, NDJSON) answered with a 201.",
                t.batches,
            ),
            (
                "busyapi_batch_records",
                "Usages in batch POSTs answered with a 201 (written or answered from the retry window).",
                t.batch_records,
            ),
            (
                "busyapi_records_flushed",
                "Records confirmed by MongoDB, dead letters included.",
                g.records_flushed.load(Relaxed),
            ),
            (
                "busyapi_records_replayed_duplicate",
                "Replayed records MongoDB already had (duplicate key).",
                g.records_replayed_duplicate.load(Relaxed),
            ),
            (
                "busyapi_events_deduplicated",
                "Records not stored because MongoDB already had their (patientId, eventId): an event sent again.",
                g.events_deduplicated.load(Relaxed),
            ),
            (
                "busyapi_dead_letters",
                "Records MongoDB refused for good, stored in the dead-letter collection instead.",
                g.dead_letters.load(Relaxed),
            ),
            (
                "busyapi_connections_refused",
                "Connections closed at once because the cap was reached.",
                g.connections_refused.load(Relaxed),
            ),
            (
                "busyapi_id_collisions",
                "Documents MongoDB held under ids this node had just handed out (a reused node id).",
                g.id_collisions.load(Relaxed),
            ),
            (
                "busyapi_accept_errors",
                "Failed accepts (out of descriptors or memory); the loop pauses and retries.",
                g.accept_errors.load(Relaxed),
            ),
            (
                "busyapi_connections_timed_out",
                "Connections closed by a read timeout.",
                g.connections_timed_out.load(Relaxed),
            ),
            (
                "busyapi_tls_handshakes_failed",
                "TLS handshakes that failed: not TLS, a version refused, or too slow.",
                g.tls_handshakes_failed.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            counter(enc, name, help, v)?;
        }
        Ok(())
    }

    fn gauges(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gg = &self.gauges;
        let gauges = [
            (
                "busyapi_wal_backlog_records",
                "Records in the WAL not yet in MongoDB.",
                gg.wal_backlog_records as i64,
            ),
            (
                "busyapi_wal_backlog_bytes",
                "WAL bytes not yet in MongoDB.",
                gg.wal_backlog_bytes as i64,
            ),
            (
                "busyapi_wal_max_bytes",
                "The quota of undelivered WAL bytes (--wal-max-bytes); at it POSTs get 503.",
                gg.wal_max_bytes as i64,
            ),
            (
                "busyapi_wal_segments",
                "WAL segment files on disk.",
                gg.wal_segments as i64,
            ),
            (
                "busyapi_wal_writable",
                "1 while WAL appends succeed.",
                i64::from(gg.wal_writable),
            ),
            (
                "busyapi_mongo_up",
                "1 while MongoDB answers.",
                i64::from(gg.mongo_up),
            ),
            (
                "busyapi_ready",
                "1 while /readyz answers 200.",
                i64::from(gg.ready),
            ),
            (
                "busyapi_connections_open",
                "Open client connections.",
                gg.connections_open as i64,
            ),
        ];
        for (name, help, v) in gauges {
            gauge(enc, name, help, v)?;
        }
        let up = ConstGauge::new(gg.uptime_seconds);
        up.encode(enc.encode_descriptor(
            "busyapi_uptime_seconds",
            "Seconds since start.",
            None,
            up.metric_type(),
        )?)
    }
}

fn histograms(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let g = &*GLOBAL;
    let histograms = [
        (
            "busyapi_wal_fsync_seconds",
            "Time of one WAL fdatasync.",
            &g.fsync_seconds,
        ),
        (
            "busyapi_wal_commit_records",
            "Records per group commit.",
            &g.commit_records,
        ),
        (
            "busyapi_wal_commit_hold_seconds",
            "Time a group commit was held back so that its fdatasync served more records.",
            &g.commit_hold_seconds,
        ),
        (
            "busyapi_flush_batch_seconds",
            "Time of one insert batch.",
            &g.flush_seconds,
        ),
        (
            "busyapi_flush_batch_records",
            "Records per insert batch.",
            &g.flush_records,
        ),
    ];
    for (name, help, h) in histograms {
        histogram(enc, name, help, h)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram,
) -> Result<(), std::fmt::Error> {
    let (sum, count, buckets) = h.snapshot();
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
}
