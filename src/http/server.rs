//! The accept loops: one coroutine per connection, a cap on open
//! connections, and a clean stop at shutdown.
//!
//! There is one listener on `--listen` and, when `--admin-listen` is set,
//! one on that address; each has its accept loop, and each connection
//! carries the [`Exposure`] of the listener it came in on, which decides
//! what paths it may ask for.
//!
//! The server owns its control state, the [`Admission`]: the caps are
//! checked there before a connection is served, and at shutdown
//! [`Server::stop`] waits there for the requests in progress, on either
//! listener, to finish.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use may::net::TcpListener;

use super::admission::Admission;
use super::auth::AuthMode;
use super::conn;
use super::response::{self, Conn};
use super::routes::Exposure;
use super::tls::Tls;
use crate::app::App;
use crate::limits::{ACCEPT_RETRY_MS, COROUTINE_STACK_BYTES, LISTEN_BACKLOG};
use crate::metrics::GLOBAL;
use crate::wait;

/// How often the stop looks again for requests in progress.
const DRAIN_POLL_MS: u64 = 10;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding or listening on one of the addresses failed.
    #[error("could not listen on {addr} (--{flag}): {source}")]
    Listen {
        /// The flag that named the address.
        flag: &'static str,
        /// The address, as configured.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The accept loop's coroutine could not be started.
    #[error("could not start the accept loop: {0}")]
    Spawn(std::io::Error),
}

/// The running accept loops.
pub struct Server {
    /// The address `--listen` is bound to (the port when it said 0).
    pub local_addr: SocketAddr,
    /// The address `--admin-listen` is bound to, when it is set.
    pub admin_addr: Option<SocketAddr>,
    /// Set by [`Server::stop`]. Not `App::shutting_down`: during
    /// `--shutdown-drain-ms` new connections are still accepted and served,
    /// so a load balancer's health check gets its 503 rather than a reset.
    stopping: Arc<AtomicBool>,
    /// The connection cap and the requests in progress.
    admission: Arc<Admission>,
    /// Each listener's accept loop, with the address it is bound to.
    loops: Vec<(SocketAddr, may::coroutine::JoinHandle<()>)>,
    /// `--listen`'s certificate, when it speaks TLS; reloaded on SIGHUP.
    tls: Option<Arc<Tls>>,
}

/// One listener, bound and not yet accepting.
struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    /// The routes it serves.
    exposure: Exposure,
    /// Its certificate, if it speaks TLS.
    tls: Option<Arc<Tls>>,
}

impl Server {
    /// Binds `--listen` (and `--admin-listen`, when set) and starts
    /// accepting, `--listen` over TLS with `tls` ([`Tls::from_config`]).
    /// Both are bound before either accepts, so a server that cannot have
    /// both serves neither.
    pub fn start(app: Arc<App>, tls: Option<Arc<Tls>>) -> Result<Server, ServerError> {
        let c = &app.config;
        // The route set of each listener. With keys required, the public
        // address answers only usages and the probes (the operational
        // endpoints need no key, so they must not face devices). Otherwise,
        // without an admin address the one listener serves everything.
        let keys_required = c.auth_mode() == AuthMode::Required;
        let public = if c.admin_listen.is_some() || keys_required {
            Exposure::Public
        } else {
            Exposure::Both
        };
        if keys_required && c.admin_listen.is_none() {
            log::warn!(
                "API keys are required and --admin-listen is not set: /metrics, /api/stats, \
                 the status page and /openapi.json are not served; set --admin-listen to reach them"
            );
        }
        // TLS is for the address devices reach; the admin address is
        // private and stays plain.
        let mut bound = vec![bind("listen", c.listen, public, tls.clone())?];
        if let Some(addr) = c.admin_listen {
            bound.push(bind("admin-listen", addr, Exposure::Admin, None)?);
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let admission = Admission::new(c.max_connections);
        let local_addr = bound[0].addr;
        let admin_addr = bound.get(1).map(|b| b.addr);
        let mut loops = Vec::with_capacity(bound.len());
        for b in bound {
            let (addr, app, admit, stop) =
                (b.addr, app.clone(), admission.clone(), stopping.clone());
            let builder = may::coroutine::Builder::new().name("accept".into());
            // SAFETY: may's spawn is unsafe because a coroutine must not keep
            // a thread-local borrow across a yield; the accept loop and the
            // connections touch thread-locals (metrics, Date cache) only
            // inside calls that do not yield.
            let handle = unsafe { builder.spawn(move || accept_loop(&b, &app, &admit, &stop)) }
                .map_err(ServerError::Spawn)?;
            loops.push((addr, handle));
        }
        Ok(Server {
            local_addr,
            admin_addr,
            stopping,
            admission,
            loops,
            tls,
        })
    }

    /// Whether `--listen` speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads again what the server reads from files (the TLS certificate
    /// and key), for SIGHUP; what does not load is kept as it was.
    pub fn reload(&self) {
        if let Some(tls) = &self.tls {
            tls.reload();
        }
    }

    /// Stops accepting, then waits until no connection has a request in
    /// progress, for `requests_grace` at most. Each accept loop sees
    /// `stopping` on its next wake-up, which a throwaway connection to
    /// ourselves provides at once; a listener is closed when its loop
    /// returns.
    pub fn stop(self, requests_grace: Duration) {
        self.stopping.store(true, Relaxed);
        for (addr, handle) in self.loops {
            let mut wake = addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = std::net::TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            let _ = handle.join();
        }
        let requests_deadline = Instant::now() + requests_grace;
        wait::until(
            requests_deadline,
            Duration::from_millis(DRAIN_POLL_MS),
            || self.admission.requests_in_flight() == 0,
        );
    }
}

/// Binds `addr`, named by `--flag`, for a listener serving `exposure`.
fn bind(
    flag: &'static str,
    addr: SocketAddr,
    exposure: Exposure,
    tls: Option<Arc<Tls>>,
) -> Result<Bound, ServerError> {
    let listen = |source| ServerError::Listen { flag, addr, source };
    let listener = bind_exclusive(addr).map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    Ok(Bound {
        listener,
        addr,
        exposure,
        tls,
    })
}

/// Binds `addr` for this process alone. may's own `bind` sets
/// `SO_REUSEPORT`, which lets a second busyapi bind the same port and take
/// half of its connections; started by mistake on another data directory
/// with the same node id, it would hand out the same ids, and MongoDB's
/// duplicate `_id` would make one of each pair vanish. A plain bind fails
/// with "address in use" instead.
fn bind_exclusive(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: listen(2) on a socket we own, to set the backlog std chose.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a listening TCP socket we own; may takes it over.
    Ok(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
}

fn accept_loop(bound: &Bound, app: &Arc<App>, admission: &Arc<Admission>, stopping: &AtomicBool) {
    let listener = &bound.listener;
    let mut failing = false;
    loop {
        let accepted = listener.accept().map(|(stream, _)| stream);
        if stopping.load(Relaxed) {
            break;
        }
        let mut stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // may returns a failed accept without yielding: retrying
                // at once would spin on this worker and starve every
                // connection and the WAL replies scheduled on it.
                GLOBAL.accept_errors.fetch_add(1, Relaxed);
                if !failing {
                    log::warn!(
                        "accept failed ({e}); retrying every {ACCEPT_RETRY_MS} ms while it fails"
                    );
                    failing = true;
                }
                may::coroutine::sleep(Duration::from_millis(ACCEPT_RETRY_MS));
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            log::info!("accepting connections again");
        }
        let Some(admitted) = admission.admit(bound.exposure) else {
            GLOBAL.connections_refused.fetch_add(1, Relaxed);
            // A TLS client could not read a plain 503, and a handshake to
            // send one would spend CPU when the server is fullest: it is
            // closed, and its client retries as after any reset.
            if bound.tls.is_some() {
                continue;
            }
            let mut out = Vec::new();
            response::write_error(
                &mut out,
                503,
                "too many open connections; retry later",
                Conn::Close,
                &[("Retry-After", "1")],
                false,
            );
            let _ = stream.write_all(&out);
            continue;
        };
        // may polls a socket on the worker numbered `fd % workers`; the
        // connection starts there and uses that worker's lane, so its I/O
        // wake-ups and its commit replies arrive on the same core.
        let lane = stream.as_raw_fd() as usize % app.lanes.count();
        let app = app.clone();
        let tls = bound.tls.as_deref().map(Tls::current);
        let builder = may::coroutine::Builder::new()
            .id(lane)
            .stack_size(COROUTINE_STACK_BYTES / size_of::<usize>());
        // SAFETY: as for the accept loop above. If the spawn fails, the
        // closure and `admitted` with it are dropped: the connection is no
        // longer counted.
        let _ = unsafe { builder.spawn(move || conn::serve(stream, tls, &app, admitted, lane)) };
    }
    match bound.listener.local_addr() {
        Ok(addr) => log::info!("stopped accepting connections on {addr}"),
        Err(_) => log::info!("stopped accepting connections"),
    }
}
