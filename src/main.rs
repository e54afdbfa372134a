//! `busyapi`: parse the configuration, recover the WAL, start the writer,
//! the flusher and the HTTP server, and wait for a signal to stop. Only
//! wiring: start-up policy lives in [`busyapi::startup`].

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use busyapi::app::App;
use busyapi::config::{Config, ConfigError};
use busyapi::flusher::{Flusher, SinkFactory};
use busyapi::http::auth::Auth;
use busyapi::http::server::Server;
use busyapi::http::tls::Tls;
use busyapi::limits::{
    ADMIN_CONNECTIONS_MAX, COROUTINE_STACK_BYTES, FD_RESERVE, MALLOC_MMAP_THRESHOLD_BYTES,
};
use busyapi::shutdown::{self, Running};
use busyapi::sink::Sink;
use busyapi::sink::mongo::MongoSink;
use busyapi::{metrics, startup, wal};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let config = match Config::load(&argv) {
        Ok(c) => c,
        // clap prints usage errors, `--help` and `--version` itself and
        // exits 2 or 0; our own validation errors get the same shape.
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
    init_logging();
    // The keys file is configuration too: a bad one exits 2 at start.
    let auth = match Auth::start(&config) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config, auth) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("busyapi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: Config, auth: Auth) -> anyhow::Result<()> {
    let _failpoints = fail::FailScenario::setup();
    let mut signals = shutdown::install()?;
    let tls = Tls::from_config(&config)?;
    fit_connections_to_fd_limit(&mut config);
    fix_mmap_threshold();
    metrics::set_enabled(config.metrics);
    may::config()
        .set_workers(config.workers)
        .set_stack_size(COROUTINE_STACK_BYTES / size_of::<usize>());
    let pinned = pin_workers(config.workers);
    may::config().set_worker_pin(pinned);

    let Some(opened) = open_wal(&config, &mut signals)? else {
        log::info!("stopped before MongoDB answered; nothing was acknowledged");
        return Ok(());
    };
    let lanes = wal::Lanes::new(config.workers);
    lanes
        .start_notifiers()
        .context("could not start the WAL lane notifiers")?;
    let writer = wal::writer::spawn(
        lanes.clone(),
        opened.shared.clone(),
        opened.active,
        Duration::from_micros(config.commit_delay_max_us),
    )
    .context("could not start the WAL writer")?;
    let app = Arc::new(App::new(config, opened.shared, lanes, auth));

    let c = app.config.clone();
    let factory: SinkFactory = Box::new(move || {
        MongoSink::connect(&c.mongodb_uri, &c.database, &c.collection)
            .map(|s| Arc::new(s) as Arc<dyn Sink>)
    });
    let flusher = Flusher::start(app.clone(), factory, opened.resume)
        .context("could not start the flusher")?;
    let server = Server::start(app.clone(), tls).context("could not start the HTTP server")?;
    if let Some(admin) = server.admin_addr {
        log::info!(
            "admin endpoints (/metrics, /api/stats, /, /openapi.json) on http://{admin} only"
        );
    }
    log::info!(
        "busyapi {} node {} listening on {}://{} with {} {} worker(s)",
        env!("CARGO_PKG_VERSION"),
        app.config.node_id,
        if server.is_tls() { "https" } else { "http" },
        server.local_addr,
        app.config.workers,
        if pinned { "pinned" } else { "unpinned" }
    );
    let keys = app.clone();
    shutdown::wait_and_stop(
        signals,
        Running {
            reloaders: vec![Box::new(move || keys.auth.reload())],
            app,
            server,
            writer,
            flusher,
        },
    )?;
    Ok(())
}

/// Recovers the WAL, asking [`startup::fresh_floor`] for the floor of a
/// data directory with no history. `None`: a stop signal came while that
/// waited for MongoDB (nothing was acknowledged yet).
fn open_wal(config: &Config, signals: &mut Signals) -> anyhow::Result<Option<wal::Opened>> {
    let mut stopped = false;
    let opened = wal::open(
        &config.data_dir,
        config.node_id,
        config.wal_segment_bytes,
        || {
            startup::fresh_floor(config, || {
                // A SIGHUP while waiting is no stop; its reload is moot, as
                // nothing has been served with the keys or the certificate yet.
                stopped = signals.pending().any(shutdown::is_stop);
                stopped
            })
        },
    );
    if stopped {
        return Ok(None);
    }
    let opened = opened
        .with_context(|| format!("could not open the WAL in {}", config.data_dir.display()))?;
    Ok(Some(opened))
}

/// logfmt lines on stderr; the level comes from `RUST_LOG` (default info).
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn"))
        .format(|buf, record| {
            let msg = logfmt_quoted(&record.args().to_string());
            writeln!(
                buf,
                "ts={} level={} target={} msg=\"{}\"",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                msg
            )
        })
        .init();
}

/// Whether to pin may's workers, one per CPU of the affinity mask: only
/// when the process has exactly as many CPUs as workers (a machine or a
/// container sized to it, `taskset`, Kubernetes' static CPU manager). On a
/// shared host the mask holds every CPU, and pinning would put every
/// busyapi on that host on the same first CPUs of it.
fn pin_workers(workers: usize) -> bool {
    let cpus = core_affinity::get_core_ids().map_or(0, |ids| ids.len());
    if cpus != workers {
        log::info!(
            "not pinning the {workers} worker(s): this process may run on {cpus} CPU(s); give it exactly {workers} (taskset, a static CPU manager) to pin them"
        );
    }
    cpus == workers
}

/// Raises the soft open-file limit to the hard one, then lowers
/// `--max-connections` if connections could still run the process out of
/// descriptors: past the cap a client gets a 503, while out of descriptors
/// it would wait unanswered and the WAL could not open its next segment.
fn fit_connections_to_fd_limit(config: &mut Config) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above. It fails only above the kernel's nr_open.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let admin = if config.admin_listen.is_some() {
        ADMIN_CONNECTIONS_MAX as u64
    } else {
        0
    };
    let usable = lim.rlim_cur.saturating_sub(FD_RESERVE + admin).max(1);
    if config.max_connections as u64 > usable {
        log::warn!(
            "the open-file limit is {}: --max-connections lowered from {} to {} ({} descriptors kept for the WAL, MongoDB and the admin address); raise LimitNOFILE or ulimit -n to allow more",
            lim.rlim_cur,
            config.max_connections,
            usable,
            FD_RESERVE + admin
        );
        config.max_connections = usable as usize;
    }
}

/// Escapes a message for a logfmt quoted value: one line, whatever it holds.
fn logfmt_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Pins glibc's mmap threshold at [`MALLOC_MMAP_THRESHOLD_BYTES`], so that
/// large buffers are returned to the kernel when freed (see the constant).
#[cfg(target_env = "gnu")]
fn fix_mmap_threshold() {
    let bytes = libc::c_int::try_from(MALLOC_MMAP_THRESHOLD_BYTES).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a tunable of the allocator, under the
    // allocator's own locks; it touches no memory of ours.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) } != 1 {
        log::warn!("the allocator refused its mmap threshold; large buffers may stay resident");
    }
}

/// Other allocators return large blocks to the kernel by themselves.
#[cfg(not(target_env = "gnu"))]
fn fix_mmap_threshold() {}
