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
//! With `--admin-listen` the admin address has a pool of its own, capped
//! at [`ADMIN_CONNECTIONS_MAX`]: a flood on the public address cannot lock
//! monitoring out, nor the admin address take the public's connections.
//! The open count that `/metrics` shows and the requests in progress that
//! the drain waits for cover both.
//!
//! The counts are plain atomics. Each pool has one accept loop that admits
//! into it, so the check against its cap and the increment cannot race
//! another admission; the decrements come from connections ending on any
//! worker.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use super::routes::Exposure;
use crate::limits::ADMIN_CONNECTIONS_MAX;

/// The connection caps and the counts they keep.
#[derive(Debug)]
pub struct Admission {
    /// `--max-connections`: a connection past it is answered 503 and closed,
    /// so a flood of sockets cannot run the process out of descriptors.
    max_connections: u64,
    /// Connections admitted on `--listen` and not yet ended.
    open: AtomicU64,
    /// Connections admitted on `--admin-listen` and not yet ended; capped
    /// at [`ADMIN_CONNECTIONS_MAX`], apart from `open`.
    admin_open: AtomicU64,
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
            admin_open: AtomicU64::new(0),
            requests_in_flight: AtomicU64::new(0),
        })
    }

    /// Admits one more connection on a listener that serves `exposure`,
    /// counted open until the returned guard drops; `None` at that
    /// listener's cap. Called by that listener's accept loop alone.
    pub fn admit(self: &Arc<Self>, exposure: Exposure) -> Option<Admitted> {
        let (open, max) = self.pool(exposure);
        if open.load(Relaxed) >= max {
            return None;
        }
        open.fetch_add(1, Relaxed);
        Some(Admitted {
            admission: self.clone(),
            exposure,
            request_in_flight: false,
        })
    }

    /// The count and the cap of the listener that serves `exposure`.
    fn pool(&self, exposure: Exposure) -> (&AtomicU64, u64) {
        match exposure {
            Exposure::Admin => (&self.admin_open, ADMIN_CONNECTIONS_MAX as u64),
            Exposure::Public | Exposure::Both => (&self.open, self.max_connections),
        }
    }

    /// Connections open now, on every listener.
    pub fn connections_open(&self) -> u64 {
        self.open.load(Relaxed) + self.admin_open.load(Relaxed)
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
    /// The routes of the listener it came in on.
    exposure: Exposure,
    /// Whether this connection is counted in `requests_in_flight`.
    request_in_flight: bool,
}

impl Admitted {
    /// The admission this connection was counted in.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The routes this connection may ask for: its listener's.
    pub fn exposure(&self) -> Exposure {
        self.exposure
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
        self.admission.pool(self.exposure).0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_admitted_up_to_the_cap_and_again_once_one_ends() {
        let admission = Admission::new(2);
        let first = admission.admit(Exposure::Both).expect("under the cap");
        let second = admission.admit(Exposure::Both).expect("under the cap");
        assert!(
            admission.admit(Exposure::Both).is_none(),
            "the third is over the cap"
        );
        assert_eq!(admission.connections_open(), 2);
        drop(first);
        assert_eq!(admission.connections_open(), 1);
        let third = admission.admit(Exposure::Both).expect("room again");
        drop((second, third));
        assert_eq!(admission.connections_open(), 0);
    }

    #[test]
    fn the_admin_address_has_its_own_cap_and_the_open_count_covers_both() {
        let admission = Admission::new(1);
        let public = admission.admit(Exposure::Public).expect("under the cap");
        assert!(admission.admit(Exposure::Public).is_none(), "public full");
        let admin: Vec<_> = (0..ADMIN_CONNECTIONS_MAX)
            .map(|_| admission.admit(Exposure::Admin).expect("admin has room"))
            .collect();
        assert!(admission.admit(Exposure::Admin).is_none(), "admin full");
        assert_eq!(
            admission.connections_open(),
            1 + ADMIN_CONNECTIONS_MAX as u64
        );
        assert_eq!(admin[0].exposure(), Exposure::Admin);
        drop(admin);
        assert!(admission.admit(Exposure::Public).is_none(), "still full");
        drop(public);
        assert_eq!(admission.connections_open(), 0);
    }

    #[test]
    fn requests_in_flight_count_busy_connections_once_each_until_they_end() {
        let admission = Admission::new(4);
        let mut a = admission.admit(Exposure::Both).expect("a");
        let mut b = admission.admit(Exposure::Both).expect("b");
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
