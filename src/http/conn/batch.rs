//! Batch POSTs on a connection: a JSON array or NDJSON of usages, one WAL
//! submission, one `201 {"ids": [...]}`.
//!
//! # All or nothing
//! Every usage is validated and staged before anything is submitted; a
//! bad one unstages the whole batch and gets a 400 naming its index. The
//! batch then goes to the WAL as a submission of its own, which the
//! writer never splits across commits (`wal::lanes::Lanes::drain_into`):
//! one write and one fdatasync cover all of its records, and the 201 is
//! written only after it. Usages staged before the batch in the same round
//! are committed first, so responses stay in request order.
//!
//! # Body caps
//! A single usage stays under `--max-body-bytes`, a batch under
//! `--batch-max-bytes`. A JSON body's framing does not say which it is, so
//! the cap framing applies is chosen from what is known: the media type,
//! then the body's first non-blank byte once it has arrived (`[` is a
//! batch). Until then a body may grow to the larger cap; once whole, it
//! is checked against its own ([`Connection::body_over_cap`]).

use std::collections::HashMap;

use super::{Connection, now_ms};
use crate::http::auth::Verified;
use crate::http::request::{ContentType, Framing, Head};
use crate::http::response::{self, Conn as ConnHeader};
use crate::http::routes::Action;
use crate::http::{ApiError, HttpError};
use crate::ingest::BatchForm;
use crate::ingest::batch::is_array;
use crate::metrics::{self, Route};
use crate::wal::{Id, Submission};

/// One usage of a batch, as its 201 will name it.
#[derive(Clone, Copy)]
enum Slot {
    /// A retry the window knows: its first id, nothing written.
    Known(Id),
    /// Staged: this record's place in the batch's submission.
    Staged(u64),
}

/// A batch that passed validation, staged and not yet submitted.
struct Staged {
    slots: Vec<Slot>,
    /// Records staged: the submission's records.
    records: usize,
    /// Usages the retry window answered.
    known: usize,
}

impl Staged {
    /// What the key's rate limit charges for this batch: its usages, not
    /// one request. `handle_batch` takes it before anything is submitted,
    /// and a batch refused 429 is unstaged whole like an invalid one.
    fn usages(&self) -> usize {
        self.slots.len()
    }
}

/// Whether a usage POST's body is a batch, and in which form.
pub(super) fn batch_form(head: &Head<'_>, body: &[u8]) -> Option<BatchForm> {
    match head.content_type {
        ContentType::Ndjson => Some(BatchForm::Ndjson),
        _ if is_array(body) => Some(BatchForm::Array),
        _ => None,
    }
}

impl Connection<'_> {
    /// The body cap framing applies to this request (see the module doc);
    /// `body_start` is what has arrived of the body so far.
    pub(super) fn body_cap(
        &self,
        head: &Head<'_>,
        action: &Result<Action, ApiError>,
        body_start: &[u8],
    ) -> usize {
        let single = self.app.config.max_body_bytes;
        let batch = self.app.config.batch_max_bytes;
        let either = single.max(batch);
        if !matches!(action, Ok(Action::Ingest)) {
            return single;
        }
        match (head.content_type, head.framing) {
            (ContentType::Ndjson, _) => batch,
            (ContentType::Other, _) => single,
            (_, Framing::Length(n)) if n <= single => single,
            (_, Framing::Length(n)) => match body_start.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => batch,
                Some(_) => single,
                // Over both caps it cannot be taken, whatever it is.
                None if n > either => single,
                None => either,
            },
            (_, Framing::Chunked) => either,
        }
    }

    /// A whole usage body over its own cap (a single usage under the
    /// batch cap, or a batch under a larger single cap): the 413 framing
    /// could not decide before the body was all here.
    pub(super) fn body_over_cap(&self, head: &Head<'_>, body: &[u8]) -> Option<HttpError> {
        let single = self.app.config.max_body_bytes;
        let batch = self.app.config.batch_max_bytes;
        if body.len() <= single.min(batch) {
            return None;
        }
        let cap = if batch_form(head, body).is_some() {
            batch
        } else {
            single
        };
        (body.len() > cap).then_some(HttpError::BodyTooLarge { max_bytes: cap })
    }

    /// Answers a batch POST: validates and stages every usage, submits
    /// them as one, and writes `201 {"ids": [...]}` after the fsync.
    pub(super) fn handle_batch(
        &mut self,
        head: &Head<'_>,
        form: BatchForm,
        body: &[u8],
        conn: ConnHeader,
        who: Option<Verified>,
    ) {
        // Singles staged before it are answered first, and the batch is a
        // submission of its own.
        self.commit_staged();
        if head.idempotency_key.is_some() {
            let e = HttpError::IdempotencyKeyOnBatch.into();
            return self.respond_error(Route::Usages, &e, conn, false);
        }
        let source = who.as_ref().map(|v| v.id.as_str());
        let staged = self.stage_batch(body, form, source).and_then(|staged| {
            // The key's rate limit counts usages, not requests.
            self.charge(who.as_ref(), staged.usages() as u64)?;
            Ok(staged)
        });
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                self.staged.clear();
                self.pending.clear();
                return self.refuse_batch(&e, conn);
            }
        };
        debug_assert!(staged.usages() >= staged.records);
        let first_id = if staged.records == 0 {
            // Every usage was a retry the window knows: nothing to write.
            Ok(Id::from_raw(0))
        } else {
            self.commit(staged.records)
        };
        match first_id {
            Ok(first_id) => self.answer_batch(&staged, first_id, conn),
            Err(e) => {
                self.pending.clear();
                self.refuse_batch(&e, conn);
            }
        }
    }

    /// Validates and stages a batch; on an error the caller unstages.
    fn stage_batch(
        &mut self,
        body: &[u8],
        form: BatchForm,
        source: Option<&str>,
    ) -> Result<Staged, ApiError> {
        let window = &self.app.retries;
        let (staged, pending) = (&mut self.staged, &mut self.pending);
        let received_at_ms = now_ms();
        let mut slots = Vec::new();
        let (mut records, mut known) = (0_usize, 0_usize);
        // The batch's own events, so one sent twice in it is one record.
        let mut events: HashMap<(Vec<u8>, Vec<u8>), u64> = HashMap::new();
        let max_records = self.app.config.batch_max_records;
        self.parser
            .parse_batch(body, form, max_records, |_, usage| {
                if let Some(event) = usage.event_id {
                    let mut digits = itoa::Buffer::new();
                    let patient = usage.patient_id.as_bytes(&mut digits);
                    if let Some(id) = window.first_id(patient, event.as_bytes()) {
                        slots.push(Slot::Known(id));
                        known += 1;
                        return;
                    }
                    let key = (patient.to_vec(), event.as_bytes().to_vec());
                    if let Some(&k) = events.get(&key) {
                        slots.push(Slot::Staged(k));
                        return;
                    }
                    events.insert(key, records as u64);
                    pending.push(records, patient, event.as_bytes());
                }
                Submission::stage(staged, &usage, source, received_at_ms);
                slots.push(Slot::Staged(records as u64));
                records += 1;
            })
            .map_err(ApiError::from)?;
        Ok(Staged {
            slots,
            records,
            known,
        })
    }

    /// The batch's records are durable from `first_id` on: its 201.
    fn answer_batch(&mut self, staged: &Staged, first_id: Id, conn: ConnHeader) {
        if staged.records > 0 {
            self.pending.acknowledged(&self.app.retries, first_id);
        }
        let ids: Vec<u64> = staged
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Known(id) => id.raw(),
                Slot::Staged(k) => first_id.plus(*k).raw(),
            })
            .collect();
        response::write_created_batch(&mut self.wbuf, &ids, conn);
        metrics::count_request(Route::Usages, 201);
        metrics::count_acknowledged(staged.records as u64);
        metrics::count_batch(staged.usages() as u64);
        for _ in 0..staged.known {
            metrics::count_retry_answered();
        }
    }

    /// A batch refused whole: a usage's error names its index.
    fn refuse_batch(&mut self, e: &ApiError, conn: ConnHeader) {
        match e {
            ApiError::Batch(b) if b.index().is_some() => {
                let index = b.index().unwrap_or_default();
                let status = e.status();
                response::write_error_at(&mut self.wbuf, status, &e.to_string(), index, conn);
                metrics::count_request(Route::Usages, status);
            }
            _ => self.respond_error(Route::Usages, e, conn, false),
        }
    }
}
