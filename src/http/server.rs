//! The accept loop: one coroutine per connection, a cap on open
//! connections, and a clean stop at shutdown.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use may::net::TcpListener;

use super::conn;
use super::response::{self, Conn};
use crate::app::App;
use crate::limits::COROUTINE_STACK_BYTES;
use crate::metrics::GLOBAL;

/// Decrements the open-connection gauge however the coroutine ends.
struct OpenGuard;

impl Drop for OpenGuard {
    fn drop(&mut self) {
        GLOBAL.connections_open.fetch_sub(1, Relaxed);
    }
}

/// A running accept loop.
pub struct Server {
    pub local_addr: SocketAddr,
    handle: may::coroutine::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and starts accepting.
    pub fn start(app: Arc<App>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(app.config.listen)?;
        let local_addr = listener.local_addr()?;
        let builder = may::coroutine::Builder::new().name("accept".into());
        // SAFETY: may's spawn is unsafe because a coroutine must not keep a
        // thread-local borrow across a yield; the accept loop and the
        // connections touch thread-locals (metrics, Date cache) only inside
        // calls that do not yield.
        let handle = unsafe { builder.spawn(move || accept_loop(&listener, &app)) }?;
        Ok(Server { local_addr, handle })
    }

    /// Stops accepting: the loop sees `shutting_down` on its next wake-up,
    /// which a throwaway connection to ourselves provides at once. The
    /// listener is closed when the loop returns.
    pub fn stop(self) {
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = std::net::TcpStream::connect_timeout(&wake, std::time::Duration::from_secs(1));
        let _ = self.handle.join();
    }
}

fn accept_loop(listener: &TcpListener, app: &Arc<App>) {
    let mut accepted: usize = 0;
    for stream in listener.incoming() {
        if app.is_shutting_down() {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        if GLOBAL.connections_open.load(Relaxed) >= app.config.max_connections as u64 {
            GLOBAL.connections_refused.fetch_add(1, Relaxed);
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
        }
        GLOBAL.connections_open.fetch_add(1, Relaxed);
        accepted = accepted.wrapping_add(1);
        let lane = accepted % app.lanes.count();
        let app = app.clone();
        let builder =
            may::coroutine::Builder::new().stack_size(COROUTINE_STACK_BYTES / size_of::<usize>());
        // SAFETY: as for the accept loop above.
        let spawned = unsafe {
            builder.spawn(move || {
                let _open = OpenGuard;
                conn::serve(stream, &app, lane);
            })
        };
        if spawned.is_err() {
            GLOBAL.connections_open.fetch_sub(1, Relaxed);
        }
    }
    log::info!("stopped accepting connections");
}
