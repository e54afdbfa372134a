//! Admission: how many connections the server takes, and whether any of
//! them still has a request in progress.
//!
//! This is the HTTP server's control state, and the server owns it (as
//! mini-redis's listener owns its connection semaphore): the accept loop
//! admits a connection only under `--max-connections`, and the shutdown
//! drain asks the server, which asks this, whether requests are still in
//! progress. `/metrics` and `/api/stats` read the open count; they are not
//! where the limit lives.
//!
//! Both counts are plain atomics. One accept loop admits, so the check
//! against the cap and the increment cannot race another admission; the
//! decrements come from connections ending on any worker.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// The connection cap and the two counts it keeps.
#[derive(Debug)]
pub struct Admission {
    /// `--max-connections`: a connection past it is answered 503 and closed,
    /// so a flood of sockets cannot run the process out of descriptors.
    max_connections: u64,
    /// Connections admitted and not yet ended; `busyapi_connections_open`.
    open: AtomicU64,
    /// Connections with a request partly received or being handled. The
    /// shutdown drain waits for this to reach zero.
    requests_in_flight: AtomicU64,
}

impl Admission {
    /// Admission for at most `max_connections` open connections.
    pub fn new(max_connections: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections: max_connections as u64,
            open: AtomicU64::new(0),
            requests_in_flight: AtomicU64::new(0),
        })
    }

    /// Admits one more connection, counted open until the returned guard
    /// drops; `None` at the cap. Called by the accept loop alone.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        if self.open.load(Relaxed) >= self.max_connections {
            return None;
        }
        self.open.fetch_add(1, Relaxed);
        Some(Admitted {
            admission: self.clone(),
            request_in_flight: false,
        })
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Connections with a request in progress now.
    pub fn requests_in_flight(&self) -> u64 {
        self.requests_in_flight.load(Relaxed)
    }
}

/// An admitted connection: counted open while it lives, and among the
/// requests in flight while it says so. It goes with the connection into
/// its coroutine, so both counts fall however that ends, or if the
/// coroutine never starts.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    /// Whether this connection is counted in `requests_in_flight`.
    request_in_flight: bool,
}

impl Admitted {
    /// The admission this connection was counted in.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Counts this connection among those with a request in progress
    /// (`true`: bytes of a request are buffered or being handled), or no
    /// longer (`false`). Saying the same twice changes nothing.
    pub fn set_request_in_flight(&mut self, busy: bool) {
        if self.request_in_flight == busy {
            return;
        }
        self.request_in_flight = busy;
        let count = &self.admission.requests_in_flight;
        if busy {
            count.fetch_add(1, Relaxed);
        } else {
            count.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.set_request_in_flight(false);
        self.admission.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_admitted_up_to_the_cap_and_again_once_one_ends() {
        let admission = Admission::new(2);
        let first = admission.admit().expect("under the cap");
        let second = admission.admit().expect("under the cap");
        assert!(admission.admit().is_none(), "the third is over the cap");
        assert_eq!(admission.connections_open(), 2);
        drop(first);
        assert_eq!(admission.connections_open(), 1);
        let third = admission.admit().expect("room again");
        drop((second, third));
        assert_eq!(admission.connections_open(), 0);
    }

    #[test]
    fn requests_in_flight_count_busy_connections_once_each_until_they_end() {
        let admission = Admission::new(4);
        let mut a = admission.admit().expect("a");
        let mut b = admission.admit().expect("b");
        a.set_request_in_flight(true);
        a.set_request_in_flight(true);
        b.set_request_in_flight(true);
        assert_eq!(admission.requests_in_flight(), 2);
        a.set_request_in_flight(false);
        a.set_request_in_flight(false);
        assert_eq!(b.admission().requests_in_flight(), 1);
        drop(b);
        assert_eq!(admission.requests_in_flight(), 0, "an ending connection");
        assert_eq!(admission.connections_open(), 1);
    }
}
