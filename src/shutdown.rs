//! The ordered stop on SIGTERM or SIGINT, and the reload on SIGHUP.
//!
//! SIGHUP stops nothing: it runs every [`Reloader`] of [`Running`], in
//! order, on this thread (the API keys), then reloads the server's TLS
//! certificate; connections are not touched. Each logs its own outcome and
//! keeps what it had when its files do not pass. Before the server runs
//! and once a stop has begun, SIGHUP is ignored.
//!
//! 1. Readiness turns 503 (`shutting_down`) and responses say
//!    `Connection: close`; for `--shutdown-drain-ms` requests are still
//!    served, new connections' too, so a load balancer's checks see the 503
//!    and it stops sending before anything is refused.
//! 2. The listener closes.
//! 3. Requests already in progress finish (bounded by the read timeouts):
//!    the server, which counts them, says when ([`Server::stop`]).
//! 4. The WAL writer commits what is queued and stops; every acknowledged
//!    record was fsynced before its 201, so the WAL is complete.
//! 5. The flusher delivers the backlog for up to `--shutdown-grace-secs`;
//!    what it cannot deliver stays in the WAL for the next start.
//! 6. The process exits 0.
//!
//! A second signal exits at once with status 130. Nothing acknowledged is
//! lost that way either: it is all in the WAL.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::app::App;
use crate::flusher::Flusher;
use crate::http::server::Server;

/// Exit status after a second signal (128 + SIGINT, as shells report it).
const FORCED_EXIT_CODE: i32 = 130;

/// Why the ordered stop could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// Installing the SIGTERM/SIGINT handlers, or starting the thread that
    /// watches for a second signal, failed.
    #[error("could not install signal handlers: {0}")]
    Signals(#[from] std::io::Error),
}

/// Something re-read on SIGHUP (see the module doc).
pub type Reloader = Box<dyn Fn() + Send>;

/// Everything the stop sequence stops.
pub struct Running {
    /// Run, in order, on every SIGHUP until the stop begins.
    pub reloaders: Vec<Reloader>,
    /// The stop sets `shutting_down` here and takes its drain and grace
    /// durations from the config.
    pub app: Arc<App>,
    /// Closed after the drain, then waited on until in-flight requests end.
    pub server: Server,
    /// The WAL writer thread, joined once it has committed what was queued.
    pub writer: JoinHandle<()>,
    /// Delivers the backlog for up to `--shutdown-grace-secs`, then stops.
    pub flusher: Flusher,
}

/// Takes over SIGTERM, SIGINT and SIGHUP. Call before anything can be told
/// to stop (before the listener opens), so an early signal is not the
/// default "terminate now" but the ordered stop (or, for SIGHUP, a reload).
pub fn install() -> Result<Signals, ShutdownError> {
    Ok(Signals::new([SIGTERM, SIGINT, SIGHUP])?)
}

/// Whether `sig` asks for the stop (SIGHUP asks for a reload).
pub fn is_stop(sig: i32) -> bool {
    sig != SIGHUP
}

impl Running {
    /// What SIGHUP does: every part that reads files reads them again, and
    /// keeps what it had if they do not load (each logs which): the
    /// reloaders, then the server's TLS certificate.
    fn reload(&self) {
        log::info!("received SIGHUP; reloading");
        for reload in &self.reloaders {
            reload();
        }
        self.server.reload();
    }
}

/// Runs the reloads on each SIGHUP; on SIGTERM or SIGINT stops
/// everything in order.
pub fn wait_and_stop(mut signals: Signals, mut running: Running) -> Result<(), ShutdownError> {
    let mut first = SIGTERM;
    for sig in signals.forever() {
        if is_stop(sig) {
            first = sig;
            break;
        }
        running.reload();
    }
    running.reloaders.clear();
    log::info!("received {}; shutting down", name(first));
    std::thread::Builder::new()
        .name("second-signal".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().find(|&sig| is_stop(sig)) {
                log::warn!(
                    "received {} again; exiting now (everything acknowledged is in the WAL)",
                    name(sig)
                );
                std::process::exit(FORCED_EXIT_CODE);
            }
        })?;
    stop(running);
    Ok(())
}

/// Steps 1 to 5 of the module doc.
pub fn stop(running: Running) {
    let Running {
        reloaders: _,
        app,
        server,
        writer,
        flusher,
    } = running;
    let c = &app.config;
    app.shutting_down.store(true, Relaxed);
    std::thread::sleep(Duration::from_millis(c.shutdown_drain_ms));
    server.stop(Duration::from_millis(
        c.header_read_timeout_ms.max(c.body_read_timeout_ms),
    ));
    app.lanes.stop();
    let _ = writer.join();
    app.wal.notify();
    log::info!(
        "WAL closed at id {}; delivering {} record(s) for up to {} s",
        app.wal.last_id(),
        app.wal.backlog_records(),
        c.shutdown_grace_secs
    );
    flusher.stop(Duration::from_secs(c.shutdown_grace_secs));
    log::info!(
        "stopped; {} record(s) remain in the WAL",
        app.wal.backlog_records()
    );
}

fn name(sig: i32) -> &'static str {
    if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
}
