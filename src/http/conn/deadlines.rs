//! The read deadlines of a connection: which phase it is in (idle, head,
//! body), how long the next read may wait, and what a missed deadline
//! gets (a 408 mid-request, a quiet close when idle).

use std::io;
use std::time::{Duration, Instant};

use super::Connection;
use crate::http::HttpError;
use crate::http::socket::whole_ms_up;
use crate::metrics::{self, Route};

impl Connection<'_> {
    /// The read timeout for the current phase, or `None` if its deadline
    /// has passed. Idle reads keep one fixed value so the socket option is
    /// not touched on the hot path.
    pub(super) fn next_timeout(&self) -> Option<Duration> {
        let c = &self.app.config;
        let deadline = if self.rpos == self.rend {
            self.idle_since + Duration::from_millis(c.idle_timeout_ms)
        } else if let Some(head_done) = self.head_done {
            head_done + Duration::from_millis(c.body_read_timeout_ms)
        } else {
            self.request_started.unwrap_or(self.idle_since)
                + Duration::from_millis(c.header_read_timeout_ms)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            None
        } else if self.rpos == self.rend {
            Some(Duration::from_millis(c.idle_timeout_ms))
        } else {
            Some(whole_ms_up(left))
        }
    }

    /// A deadline passed: mid-request that is a 408, idle it is a quiet close.
    pub(super) fn timed_out(&mut self) -> io::Result<bool> {
        metrics::GLOBAL
            .connections_timed_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.rpos != self.rend {
            self.fail(Route::Other, HttpError::Timeout.into(), false);
            self.write_out()?;
        }
        Ok(false)
    }
}
