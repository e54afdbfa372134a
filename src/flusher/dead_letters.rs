//! Documents MongoDB refuses for good: tried again, alone, up to
//! [`REFUSED_ATTEMPTS_MAX`] answers in a row, then stored in the dead-letter
//! collection; their batch is done only once MongoDB confirms that.

use std::collections::BTreeSet;

use mongodb::bson::DateTime;

use super::sender::Delivery;
use super::{Backoff, Settled};
use crate::limits::{
    DEAD_LETTER_IDS_LOGGED_MAX, DEAD_LETTERS_PER_COMMAND_MAX, REFUSED_ATTEMPTS_MAX,
};
use crate::sink::deadletter::{self, RefusedDocument};
use crate::sink::{Refusal, SinkError};

impl Delivery {
    /// Tries the documents of `command` that its answer refused again,
    /// alone, until each is stored or refused [`REFUSED_ATTEMPTS_MAX`]
    /// answers in a row, and returns the latter. `None` once the stop
    /// deadline has passed (the batch stays in the WAL).
    pub(super) fn refused_for_good(
        &self,
        command: &[u8],
        refused: Vec<Refusal>,
        settled: &mut Settled,
    ) -> Option<Vec<RefusedDocument>> {
        let mut docs = deadletter::take(command, refused);
        let mut backoff = Backoff::new();
        let mut answers = 1;
        while !docs.is_empty() {
            self.health.failed(&refusal(&docs, answers));
            if answers >= REFUSED_ATTEMPTS_MAX {
                break;
            }
            backoff.sleep_until(|| self.stop.expired());
            if self.stop.expired() {
                return None;
            }
            let again = deadletter::insert_command(&docs, &self.collection, self.concern);
            let (answer, _) = self.answered(&again, docs.len() as u64)?;
            settled.duplicates += answer.duplicates;
            settled.events_deduplicated += answer.events_deduplicated;
            docs = deadletter::take(&again, answer.refused);
            answers += 1;
        }
        Some(docs)
    }

    /// Stores `docs` in the dead-letter collection, in commands of at most
    /// [`DEAD_LETTERS_PER_COMMAND_MAX`], and says so in the log: ids and
    /// codes only, never a field. `None` once the stop deadline has passed.
    pub(super) fn dead_letter(
        &self,
        docs: Vec<RefusedDocument>,
        settled: &mut Settled,
    ) -> Option<()> {
        let (count, named) = (docs.len(), described(&docs));
        let replays_before = settled.duplicates;
        let mut letters = deadletter::into_dead_letters(docs, DateTime::now());
        while !letters.is_empty() {
            let rest = letters.split_off(letters.len().min(DEAD_LETTERS_PER_COMMAND_MAX));
            self.store_letters(letters, settled)?;
            letters = rest;
        }
        after_dead_letter_hook();
        let replayed = settled.duplicates - replays_before;
        log::error!(
            "moved {count} usage(s) MongoDB refused {REFUSED_ATTEMPTS_MAX} times in a row to the dead-letter collection {} ({replayed} of them already there, from before a restart): {named}; see the README on replaying dead letters",
            self.dead_letter_collection
        );
        Some(())
    }

    /// One command's worth of dead letters, until MongoDB has every one. A
    /// dead letter the dead-letter collection refuses too (a validator of
    /// its own?) has nowhere else to go: it is tried again for as long as
    /// that lasts, as every refused document was before dead letters.
    fn store_letters(&self, letters: Vec<RefusedDocument>, settled: &mut Settled) -> Option<()> {
        let collection = &self.dead_letter_collection;
        let mut command = deadletter::insert_command(&letters, collection, self.concern);
        let mut records = letters.len() as u64;
        let mut backoff = Backoff::new();
        loop {
            let (answer, _) = self.answered(&command, records)?;
            settled.dead_lettered += answer.inserted;
            settled.duplicates += answer.duplicates;
            if answer.refused.is_empty() {
                return Some(());
            }
            let refused = deadletter::take(&command, answer.refused);
            self.health.failed(&SinkError::Write(format!(
                "the dead-letter collection {collection} refuses {} dead letter(s), {}",
                refused.len(),
                codes(&refused)
            )));
            backoff.sleep_until(|| self.stop.expired());
            if self.stop.expired() {
                return None;
            }
            command = deadletter::insert_command(&refused, collection, self.concern);
            records = refused.len() as u64;
        }
    }
}

/// The error a refusal is counted and reported as.
fn refusal(docs: &[RefusedDocument], answers: u32) -> SinkError {
    SinkError::Write(format!(
        "{} document(s), {}, refused {answers} of {REFUSED_ATTEMPTS_MAX} times before the dead-letter collection",
        docs.len(),
        codes(docs)
    ))
}

/// `code 121, 11000`: the distinct codes of `docs`.
fn codes(docs: &[RefusedDocument]) -> String {
    let codes: BTreeSet<i32> = docs.iter().map(|d| d.refusal.code).collect();
    let codes: Vec<String> = codes.iter().map(i32::to_string).collect();
    format!("code {}", codes.join(", "))
}

/// `id 7 (code 121), id 9 (code 121) and 3 more`: at most
/// [`DEAD_LETTER_IDS_LOGGED_MAX`] ids.
fn described(docs: &[RefusedDocument]) -> String {
    let named: Vec<String> = docs
        .iter()
        .take(DEAD_LETTER_IDS_LOGGED_MAX)
        .map(|d| format!("id {} (code {})", d.id, d.refusal.code))
        .collect();
    let more = docs.len().saturating_sub(DEAD_LETTER_IDS_LOGGED_MAX);
    match more {
        0 => named.join(", "),
        n => format!("{} and {n} more", named.join(", ")),
    }
}

/// Failpoint `flusher::after_dead_letter`: MongoDB has the dead letters,
/// the checkpoint has not passed them; a crash here must not make a second
/// dead letter (nor lose the record) on replay.
fn after_dead_letter_hook() {
    fail::fail_point!("flusher::after_dead_letter", |_| {
        log::error!("failpoint flusher::after_dead_letter: aborting after confirmed dead letters");
        log::logger().flush();
        std::process::abort()
    });
}
