//! Start-up policy: what a node decides before its WAL takes its first
//! request. Today that is one question, where the ids of a data directory
//! with no history start ([`fresh_floor`]); `main.rs` only wires it to
//! [`crate::wal::open`] and to the stop signals.
//!
//! A directory recovery finds no history in (see [`crate::wal`],
//! invariant 2) may belong to a node id that ran before on a lost disk.
//! Its ids already in MongoDB must not be handed out again, so the floor
//! is this node's highest seq there, found with one `_id` range query over
//! [`Id::range_of`] the node. `--fresh-dir-ids` says what to do when
//! MongoDB cannot answer.

use std::time::{Duration, Instant};

use crate::config::{Config, FreshDirIds};
use crate::sink::mongo::MongoSink;
use crate::wal::{Id, WalError};

/// Pause between two questions to an unreachable MongoDB at a fresh start.
const FRESH_FLOOR_RETRY_MS: u64 = 1_000;
/// How often a wait before listening looks for a stop request.
const STOP_POLL_MS: u64 = 50;

/// The floor of a data directory with no history (see [`crate::wal::open`]):
/// this node's highest seq in MongoDB. `ask-mongodb` asks once and, if
/// MongoDB is unreachable, starts from 0 (the node must serve while MongoDB
/// is down); `wait-for-mongodb` asks until MongoDB answers, and
/// `stop_requested` returning true meanwhile ends the wait with an error
/// (nothing is acknowledged yet).
pub fn fresh_floor(
    config: &Config,
    mut stop_requested: impl FnMut() -> bool,
) -> Result<u64, WalError> {
    let node = config.node_id;
    if config.fresh_dir_ids == FreshDirIds::FromOne {
        return Ok(0);
    }
    let sink = MongoSink::connect(&config.mongodb_uri, &config.database, &config.collection)
        .map_err(|e| WalError::FreshFloor(e.to_string()))?;
    log::info!("new data directory: asking MongoDB for node {node}'s highest id");
    let mut last_error = String::new();
    loop {
        let e = match sink.highest_id(Id::range_of(node)) {
            Ok(found) => {
                let seq = found.map_or(0, Id::seq);
                log::info!("MongoDB holds node {node}'s ids up to seq {seq}");
                return Ok(seq);
            }
            Err(e) => e,
        };
        if config.fresh_dir_ids == FreshDirIds::AskMongodb {
            log::warn!(
                "could not ask MongoDB where node {node}'s ids start ({e}); starting at 1. If this node id stored usages before, ids MongoDB holds are handed out again and counted in busyapi_id_collisions_total; --fresh-dir-ids wait-for-mongodb waits instead"
            );
            return Ok(0);
        }
        if e.to_string() != last_error {
            last_error = e.to_string();
            log::warn!("waiting for MongoDB to learn where ids start ({e}); not listening yet");
        }
        let retry_at = Instant::now() + Duration::from_millis(FRESH_FLOOR_RETRY_MS);
        if crate::wait::until(
            retry_at,
            Duration::from_millis(STOP_POLL_MS),
            &mut stop_requested,
        ) {
            return Err(WalError::FreshFloor("stopped by a signal".into()));
        }
    }
}
