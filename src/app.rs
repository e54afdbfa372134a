//! The state every part reads: configuration, the WAL handles, and the
//! health flags that readiness and the status page report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::Config;
use crate::http::auth::Auth;
use crate::metrics;
use crate::retry_window::RetryWindow;
use crate::wal::{Lanes, WalShared};

/// Built once in `main.rs` after the WAL is open and shared, in an `Arc`,
/// by the HTTP server, the flusher and the stop sequence.
pub struct App {
    /// The validated configuration, fixed for the life of the process.
    pub config: Config,
    /// The committed view of the log and the backlog counters.
    pub wal: Arc<WalShared>,
    /// Where connections queue records for the WAL writer.
    pub lanes: Arc<Lanes>,
    /// The API keys and the check of a usage's key; reloaded on SIGHUP.
    pub auth: Auth,
    /// Set by the first SIGTERM/SIGINT: readiness fails and keep-alive ends
    /// after the current request. New connections are still served until
    /// the listener closes, `--shutdown-drain-ms` later.
    pub shutting_down: AtomicBool,
    /// Set by the flusher: whether MongoDB accepted the last attempt.
    pub mongo_up: AtomicBool,
    /// When this state was built; `busyapi_uptime_seconds` counts from here.
    pub started: Instant,
    /// The events this node acknowledged lately, so that a retry of one is
    /// answered with its first id and not written again. Empty at start.
    pub retries: RetryWindow,
}

/// Why the server is not ready for traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// A SIGTERM or SIGINT has started the ordered stop.
    #[error("shutting down")]
    ShuttingDown,
    /// The last WAL append failed (a full disk, say); it clears when an
    /// append succeeds again.
    #[error("the write-ahead log cannot be written")]
    WalUnwritable,
    /// Undelivered WAL bytes have reached `--wal-max-bytes`; POSTs get 503
    /// until the flusher has delivered enough.
    #[error("the write-ahead log backlog is over its quota")]
    OverQuota,
}

impl App {
    /// State for a process that has just started: not stopping, MongoDB not
    /// yet seen up, uptime counted from now.
    pub fn new(config: Config, wal: Arc<WalShared>, lanes: Arc<Lanes>, auth: Auth) -> App {
        App {
            config,
            auth,
            wal,
            lanes,
            shutting_down: AtomicBool::new(false),
            mongo_up: AtomicBool::new(false),
            started: Instant::now(),
            retries: RetryWindow::default(),
        }
    }

    /// Whether the ordered stop has begun (see [`crate::shutdown`]).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Whether undelivered WAL bytes have reached `--wal-max-bytes`.
    pub fn over_quota(&self) -> bool {
        self.wal.backlog_bytes() >= self.config.wal_max_bytes
    }

    /// Readiness: MongoDB being down is *not* a reason, the WAL absorbs it.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_shutting_down() {
            Err(NotReady::ShuttingDown)
        } else if !self.wal.is_writable() {
            Err(NotReady::WalUnwritable)
        } else if self.over_quota() {
            Err(NotReady::OverQuota)
        } else {
            Ok(())
        }
    }

    /// The gauges `/metrics` reports next to the counters, with the HTTP
    /// server's count of open connections, which the server keeps.
    pub fn gauges(&self, connections_open: u64) -> metrics::Gauges {
        metrics::Gauges {
            wal_backlog_records: self.wal.backlog_records(),
            wal_backlog_bytes: self.wal.backlog_bytes(),
            wal_max_bytes: self.config.wal_max_bytes,
            wal_segments: self.wal.segment_count() as u64,
            wal_writable: self.wal.is_writable(),
            mongo_up: self.mongo_up.load(Ordering::Relaxed),
            ready: self.readiness().is_ok(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            connections_open,
            keys: self
                .auth
                .counts()
                .into_iter()
                .map(|k| (k.id.to_string(), k.requests, k.limited))
                .collect(),
        }
    }
}
