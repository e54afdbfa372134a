//! Flags, environment and config file → a validated [`Config`].
//!
//! Every setting is a flag, an environment variable (`BUSYAPI_*`, and
//! `MONGODB_URI` for the URI) and a key of the TOML file named by
//! `--config` (the flag's long name with `_` for `-`). Where they disagree the
//! flag wins over the environment and the environment over the file: the
//! file's values become clap's defaults, so clap applies that order itself.
//!
//! Everything is checked once, here, at start; a bad value names its flag
//! and the process exits with code 2 (clap's own exit code for usage errors;
//! `main` prints the error).
//!
//! # Adding a flag
//!
//! A flag is one field of [`Config`], and everything about it is written
//! there, once, in three lines of attributes under its `///` doc (which is
//! its `--help` text):
//!
//! ```text
//! /// Longest wait for a batch to fill before it is sent anyway.
//! #[arg(long, env = "BUSYAPI_FLUSH_INTERVAL_MS")]         // name, variable
//! #[arg(default_value_t = FLUSH_INTERVAL_MS_DEFAULT)]     // default
//! #[arg(value_parser = within(1, FLUSH_INTERVAL_MS_MAX))] // bounds
//! pub flush_interval_ms: u64,
//! ```
//!
//! The flag's long name and its file key come from the field's name, so
//! name it with its unit last. Its default is a `*_DEFAULT` constant in
//! [`crate::limits`], beside the reason for its value; a byte size is shown
//! in its unit with `default_value = bytes_text(X_DEFAULT)`. Its bounds are
//! its value parser, one of `config::values`' (`within`, `at_least`, `at_most`,
//! `bytes_within`, `bytes_at_least`, or a name check), with the bounds in
//! `limits` too. The rest follows: the code reads the field
//! (`app.config.flush_interval_ms`), `--help` lists the flag with its
//! variable and default, the file accepts the key, and a value out of
//! bounds, from wherever it came, is refused naming the flag. A rule that
//! relates two flags goes in `Config::check_relations`. Last, add a row
//! to the README's configuration table: `tests/readme.rs` checks the table
//! against `--help`.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::http::auth::AuthMode;
use crate::limits::*;
use crate::sink::Concern;

mod file;
mod values;
use file::{apply_file, config_path};
use values::{
    Refused, at_least, at_most, bytes_at_least, bytes_text, bytes_within, cores, mongodb_name,
    mongodb_uri, within,
};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or environment variable clap refused (or `--help`/`--version`).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The `--config` file could not be read or parsed.
    #[error("--config {path}: {reason}")]
    File {
        /// The file as named by `--config`.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A value out of its flag's bounds, wherever it was set.
    #[error("--{flag}: {reason}")]
    Invalid {
        /// The flag's long name, without `--`.
        flag: String,
        /// Which bound it broke.
        reason: String,
    },
}

/// Where the ids of a data directory with no WAL and no checkpoint start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FreshDirIds {
    /// Above the highest id of this node already in MongoDB, so a node id
    /// that ran before on a lost or new disk does not hand out its old ids.
    /// If MongoDB is unreachable at that first start, the node serves
    /// anyway from 1 and says so (id collisions are then counted).
    AskMongodb,
    /// Like `ask-mongodb`, but a node that cannot ask waits for MongoDB
    /// before it listens: it never risks an id MongoDB already holds.
    WaitForMongodb,
    /// At 1, without asking MongoDB: only for a node id that has never
    /// stored anything (tests, a brand-new collection).
    FromOne,
}

/// The validated configuration of busyapi, durable ingestion of
/// inhaler-usage events into MongoDB: every flag, parsed and checked. Each
/// field's doc is its `--help` text.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "busyapi",
    version,
    about,
    long_about = None,
    max_term_width = 100
)]
pub struct Config {
    /// TOML file with any of these settings (keys are the long flag names with
    /// '_' for '-'). Flags and environment variables override it.
    #[arg(long, env = "BUSYAPI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "BUSYAPI_LISTEN")]
    #[arg(default_value_t = LISTEN_DEFAULT)]
    pub listen: SocketAddr,
    /// Address of the operational endpoints (/metrics, /api/stats, the status
    /// page, /openapi.json). When set, --listen answers only /api/usages,
    /// /healthz and /readyz; the probes are on both. Keep it off the public
    /// interface [default: unset, everything on --listen].
    #[arg(long, env = "BUSYAPI_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) for TLS on --listen; needs --tls-key.
    /// TLS 1.2 and 1.3 only; reloaded on SIGHUP [default: unset, plain HTTP].
    #[arg(long, env = "BUSYAPI_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert; reloaded with
    /// it on SIGHUP [default: unset].
    #[arg(long, env = "BUSYAPI_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Directory of the write-ahead log and the delivery checkpoint. Put it on
    /// persistent disk: it holds acknowledged records not yet in MongoDB.
    #[arg(long, env = "BUSYAPI_DATA_DIR")]
    #[arg(default_value = DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// MongoDB connection string (a mongod, a replica set or a mongos).
    #[arg(long, env = "MONGODB_URI")]
    #[arg(default_value = MONGODB_URI_DEFAULT)]
    #[arg(value_parser = mongodb_uri)]
    pub mongodb_uri: String,
    /// Database that receives the usages.
    #[arg(long, env = "BUSYAPI_DATABASE")]
    #[arg(default_value = DATABASE_DEFAULT)]
    #[arg(value_parser = mongodb_name)]
    pub database: String,
    /// Collection that receives the usages.
    #[arg(long, env = "BUSYAPI_COLLECTION")]
    #[arg(default_value = COLLECTION_DEFAULT)]
    #[arg(value_parser = mongodb_name)]
    pub collection: String,
    /// Collection that receives each usage MongoDB refuses for good (a
    /// validator, a duplicate on another unique index), with its error, so
    /// that delivery goes on; see the README on replaying them.
    #[arg(long, env = "BUSYAPI_DEAD_LETTER_COLLECTION")]
    #[arg(default_value = DEAD_LETTER_COLLECTION_DEFAULT)]
    #[arg(value_parser = mongodb_name)]
    pub dead_letter_collection: String,
    /// This node's id, 0 to 1023; part of every id it hands out, so each node
    /// behind a load balancer needs its own.
    #[arg(long, env = "BUSYAPI_NODE_ID")]
    #[arg(default_value_t = NODE_ID_DEFAULT)]
    #[arg(value_parser = within(0, NODE_ID_MAX))]
    pub node_id: u32,
    /// Where ids start on a data directory with no WAL and no checkpoint:
    /// above this node's highest id in MongoDB (if MongoDB answers, or
    /// waiting until it does), or at 1.
    #[arg(long, env = "BUSYAPI_FRESH_DIR_IDS", value_enum)]
    #[arg(default_value_t = FreshDirIds::AskMongodb)]
    pub fresh_dir_ids: FreshDirIds,
    /// Worker threads [default: the number of cores]. They are pinned one per
    /// CPU only when the process may run on exactly that many CPUs.
    #[arg(long, env = "BUSYAPI_WORKERS")]
    #[arg(default_value_t = cores(), hide_default_value = true)]
    #[arg(value_parser = within(1, WORKERS_MAX))]
    pub workers: usize,
    /// Quota of WAL bytes not yet in MongoDB; above it POSTs get 503 with
    /// Retry-After. Accepts suffixes KiB, MiB, GiB (or K, M, G).
    #[arg(long, env = "BUSYAPI_WAL_MAX_BYTES")]
    #[arg(default_value = bytes_text(WAL_MAX_BYTES_DEFAULT))]
    #[arg(value_parser = bytes_at_least(WAL_MAX_BYTES_MIN))]
    pub wal_max_bytes: u64,
    /// Size of one WAL segment file. Segments are preallocated (zero-filled
    /// ahead of use) and deleted once MongoDB has every record in them.
    #[arg(long, env = "BUSYAPI_WAL_SEGMENT_BYTES")]
    #[arg(default_value = bytes_text(SEGMENT_BYTES_DEFAULT))]
    #[arg(value_parser = bytes_within(SEGMENT_BYTES_MIN, SEGMENT_BYTES_LIMIT))]
    pub wal_segment_bytes: u64,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, env = "BUSYAPI_MAX_BODY_BYTES")]
    #[arg(default_value = bytes_text(BODY_BYTES_MAX_DEFAULT as u64))]
    #[arg(value_parser = bytes_within(BODY_BYTES_MAX_MIN, BODY_BYTES_MAX_LIMIT))]
    pub max_body_bytes: usize,
    /// Usages one batch POST (a JSON array, or NDJSON) may hold; more get
    /// 413 and nothing of the batch is written.
    #[arg(long, env = "BUSYAPI_BATCH_MAX_RECORDS")]
    #[arg(default_value_t = BATCH_RECORDS_MAX_DEFAULT)]
    #[arg(value_parser = within(1, BATCH_RECORDS_LIMIT))]
    pub batch_max_records: usize,
    /// Largest accepted batch body (a JSON array, or NDJSON); larger ones get
    /// 413. A single usage stays under --max-body-bytes.
    #[arg(long, env = "BUSYAPI_BATCH_MAX_BYTES")]
    #[arg(default_value = bytes_text(BATCH_BYTES_MAX_DEFAULT as u64))]
    #[arg(value_parser = bytes_within(BATCH_BYTES_MAX_MIN, BATCH_BYTES_MAX_LIMIT))]
    pub batch_max_bytes: usize,
    /// Longest a WAL commit is held back so that one fdatasync serves more
    /// records; only while more records are expected (0: never hold).
    #[arg(long, env = "BUSYAPI_COMMIT_DELAY_MAX_US")]
    #[arg(default_value_t = COMMIT_DELAY_MAX_US_DEFAULT)]
    #[arg(value_parser = within(0, COMMIT_DELAY_MAX_US_LIMIT))]
    pub commit_delay_max_us: u64,
    /// Records per insert command (one batch).
    #[arg(long, env = "BUSYAPI_FLUSH_MAX_RECORDS")]
    #[arg(default_value_t = FLUSH_MAX_RECORDS_DEFAULT)]
    #[arg(value_parser = within(1, FLUSH_MAX_RECORDS_LIMIT))]
    pub flush_max_records: usize,
    /// Longest wait for a batch to fill before it is sent anyway.
    #[arg(long, env = "BUSYAPI_FLUSH_INTERVAL_MS")]
    #[arg(default_value_t = FLUSH_INTERVAL_MS_DEFAULT)]
    #[arg(value_parser = within(1, FLUSH_INTERVAL_MS_MAX))]
    pub flush_interval_ms: u64,
    /// Insert commands (batches) in flight at once.
    #[arg(long, env = "BUSYAPI_FLUSH_CONCURRENCY")]
    #[arg(default_value_t = FLUSH_CONCURRENCY_DEFAULT)]
    #[arg(value_parser = within(1, FLUSH_CONCURRENCY_MAX))]
    pub flush_concurrency: usize,
    /// Write concern of the inserts; a segment is deleted only after it.
    #[arg(long, env = "BUSYAPI_WRITE_CONCERN", value_enum)]
    #[arg(default_value_t = Concern::Journaled)]
    pub write_concern: Concern,
    /// At shutdown, how long the flusher may keep delivering the backlog.
    #[arg(long, env = "BUSYAPI_SHUTDOWN_GRACE_SECS")]
    #[arg(default_value_t = SHUTDOWN_GRACE_SECS_DEFAULT)]
    #[arg(value_parser = at_most(SHUTDOWN_GRACE_SECS_MAX))]
    pub shutdown_grace_secs: u64,
    /// At shutdown, how long /readyz reports 503 while requests are still
    /// served, so load balancers stop sending before the listener closes.
    #[arg(long, env = "BUSYAPI_SHUTDOWN_DRAIN_MS")]
    #[arg(default_value_t = SHUTDOWN_DRAIN_MS_DEFAULT)]
    #[arg(value_parser = at_most(SHUTDOWN_DRAIN_MS_MAX))]
    pub shutdown_drain_ms: u64,
    /// Time allowed to receive a request's headers.
    #[arg(long, env = "BUSYAPI_HEADER_READ_TIMEOUT_MS")]
    #[arg(default_value_t = HEADER_READ_TIMEOUT_MS_DEFAULT)]
    #[arg(value_parser = within(READ_TIMEOUT_MS_MIN, READ_TIMEOUT_MS_MAX))]
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive a request's body once its headers are in.
    #[arg(long, env = "BUSYAPI_BODY_READ_TIMEOUT_MS")]
    #[arg(default_value_t = BODY_READ_TIMEOUT_MS_DEFAULT)]
    #[arg(value_parser = within(READ_TIMEOUT_MS_MIN, READ_TIMEOUT_MS_MAX))]
    pub body_read_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this.
    #[arg(long, env = "BUSYAPI_IDLE_TIMEOUT_MS")]
    #[arg(default_value_t = IDLE_TIMEOUT_MS_DEFAULT)]
    #[arg(value_parser = within(READ_TIMEOUT_MS_MIN, READ_TIMEOUT_MS_MAX))]
    pub idle_timeout_ms: u64,
    /// Open connections at most; further ones get 503 and are closed.
    #[arg(long, env = "BUSYAPI_MAX_CONNECTIONS")]
    #[arg(default_value_t = CONNECTIONS_MAX_DEFAULT)]
    #[arg(value_parser = at_least(1_usize))]
    pub max_connections: usize,
    /// TOML file of the API keys usages are accepted with: a [[key]] table per
    /// key, with its id and the SHA-256 of the key (see the README).
    /// Re-read on SIGHUP [default: none: usages need no key].
    #[arg(long, env = "BUSYAPI_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Whether POST /api/usages needs an API key [default: required with
    /// --api-keys-file, else off].
    #[arg(long, env = "BUSYAPI_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// Usages per second one API key may send, for keys whose entry sets no
    /// rate_per_s; above it (and its burst) they get 429 with Retry-After.
    #[arg(long, env = "BUSYAPI_KEY_RATE_PER_S")]
    #[arg(default_value_t = KEY_RATE_PER_S_DEFAULT)]
    #[arg(value_parser = within(1, KEY_RATE_PER_S_MAX))]
    pub key_rate_per_s: u64,
    /// Usages one API key may send at once above its rate, for keys whose
    /// entry sets no burst.
    #[arg(long, env = "BUSYAPI_KEY_BURST")]
    #[arg(default_value_t = KEY_BURST_DEFAULT)]
    #[arg(value_parser = within(1, KEY_BURST_MAX))]
    pub key_burst: u64,
    /// Per-request metrics counters (true/false).
    #[arg(long, env = "BUSYAPI_METRICS")]
    #[arg(default_value_t = METRICS_DEFAULT)]
    #[arg(action = clap::ArgAction::Set)]
    pub metrics: bool,
}

impl Config {
    /// Reads flags, environment and file, and validates the result.
    pub fn load(argv: &[String]) -> Result<Config, ConfigError> {
        let mut cmd = Config::command();
        if let Some(path) = config_path(argv) {
            cmd = apply_file(cmd, &path)?;
        }
        let matches = cmd
            .try_get_matches_from_mut(argv)
            .map_err(|e| refusal(&cmd, e))?;
        let config = Config::from_arg_matches(&matches)?;
        config.check_relations()?;
        Ok(config)
    }

    /// `--auth` as given, or its default: `required` with a keys file.
    pub fn auth_mode(&self) -> AuthMode {
        match (self.auth, &self.api_keys_file) {
            (Some(mode), _) => mode,
            (None, Some(_)) => AuthMode::Required,
            (None, None) => AuthMode::Off,
        }
    }

    /// The rules between flags, which no one flag's parser can check.
    fn check_relations(&self) -> Result<(), ConfigError> {
        if self.auth == Some(AuthMode::Required) && self.api_keys_file.is_none() {
            return Err(ConfigError::Invalid {
                flag: "auth".into(),
                reason: "required needs --api-keys-file (the keys to require)".into(),
            });
        }
        // In one collection a dead letter would meet the refusal it fled.
        if self.dead_letter_collection == self.collection {
            return Err(ConfigError::Invalid {
                flag: "dead-letter-collection".into(),
                reason: "must differ from --collection".into(),
            });
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(invalid("tls-cert", "needs --tls-key")),
            (None, Some(_)) => return Err(invalid("tls-key", "needs --tls-cert")),
            _ => {}
        }
        // One address cannot serve two route sets (port 0 picks two ports).
        if self.admin_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(ConfigError::Invalid {
                flag: "admin-listen".into(),
                reason: "must differ from --listen".into(),
            });
        }
        Ok(())
    }
}

fn invalid(flag: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        flag: flag.into(),
        reason: reason.into(),
    }
}

/// A value one of [`values`]' parsers refused becomes [`ConfigError::Invalid`]
/// with the name of its flag; any other error stays clap's.
fn refusal(cmd: &clap::Command, e: clap::Error) -> ConfigError {
    let refused = e.source().and_then(|s| s.downcast_ref::<Refused>());
    // clap names the argument as it shows it: `--node-id <NODE_ID>`.
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(shown)) => cmd
            .get_arguments()
            .find(|a| a.to_string() == *shown)
            .and_then(|a| a.get_long()),
        _ => None,
    };
    match (refused, flag) {
        (Some(Refused(reason)), Some(flag)) => ConfigError::Invalid {
            flag: flag.to_owned(),
            reason: reason.clone(),
        },
        _ => ConfigError::Clap(e),
    }
}

#[cfg(test)]
mod tests;
