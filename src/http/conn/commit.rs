//! Handing staged records to the WAL: one submission per call, waited for
//! (yielding the coroutine) until its commit is durable, then a 201 for
//! each record, or the commit's 503 for each. Nothing is answered 201
//! before the WAL has fdatasync'd it.

use std::mem;
use std::time::{Duration, Instant};

use super::Connection;
use crate::http::ApiError;
use crate::http::response::{self, Conn as ConnHeader};
use crate::metrics::{self, Route};
use crate::wal::PROMPT_THINK_US;
use crate::wal::{Id, Submission};

impl Connection<'_> {
    /// A retried event the window still knows: `201` with the id its first
    /// record got, after the responses of the usages staged before it.
    pub(super) fn answer_retry(&mut self, id: Id, conn: ConnHeader) {
        self.commit_staged();
        response::write_created(&mut self.wbuf, id.raw(), conn);
        metrics::count_request(Route::Usages, 201);
        metrics::count_retry_answered();
    }

    /// Sends the staged usages to the WAL as one submission, waits (yielding
    /// the coroutine) for the commit, and writes a 201 or a 503 for each.
    pub(super) fn commit_staged(&mut self) {
        if self.staged_conns.is_empty() {
            return;
        }
        let count = self.staged_conns.len();
        match self.commit(count) {
            Ok(first_id) => {
                self.pending.acknowledged(&self.app.retries, first_id);
                for (i, conn) in self.staged_conns.iter().enumerate() {
                    let id = first_id.plus(i as u64).raw();
                    response::write_created(&mut self.wbuf, id, *conn);
                    metrics::count_request(Route::Usages, 201);
                }
                metrics::count_acknowledged(count as u64);
            }
            Err(e) => {
                self.pending.clear();
                for conn in &self.staged_conns {
                    response::write_error(
                        &mut self.wbuf,
                        e.status(),
                        &e.to_string(),
                        *conn,
                        e.extra_headers(),
                        false,
                    );
                    metrics::count_request(Route::Usages, e.status());
                }
            }
        }
        self.staged_conns.clear();
    }

    /// Submits the `count` records in `staged` as one submission and waits
    /// (yielding the coroutine) for its commit: their first id, or why
    /// none of them is durable. `staged` comes back empty.
    pub(super) fn commit(&mut self, count: usize) -> Result<Id, ApiError> {
        let prompt = self
            .last_reply
            .is_some_and(|t| t.elapsed() < Duration::from_micros(PROMPT_THINK_US));
        let sub = Submission {
            staged: mem::take(&mut self.staged),
            count: count as u32,
            reply: self.reply_tx.clone(),
            prompt,
        };
        let outcome = match self.app.lanes.submit(self.lane, sub) {
            Err((e, sub)) => {
                self.staged = sub.staged;
                Err(e.into())
            }
            Ok(()) => match self.reply_rx.recv() {
                Ok(reply) => {
                    self.last_reply = Some(Instant::now());
                    self.staged = reply.staged;
                    reply.first_id.map_err(ApiError::from)
                }
                Err(_) => Err(crate::wal::CommitError::Write.into()),
            },
        };
        self.staged.clear();
        outcome
    }
}
