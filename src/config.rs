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

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::limits::*;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("--config {path}: {reason}")]
    File { path: String, reason: String },
    #[error("--{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
}

/// The write concern of the `insert` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriteConcernMode {
    /// `w:1, j:true`: acknowledged once journaled on the primary.
    Journaled,
    /// `w:"majority", j:true`: for replica sets; survives a failover.
    Majority,
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

/// busyapi: durable ingestion of inhaler-usage events into MongoDB.
#[derive(Debug, Parser)]
#[command(name = "busyapi", version, about, max_term_width = 100)]
pub struct Args {
    /// TOML file with any of these settings (keys are the long flag names with
    /// '_' for '-'). Flags and environment variables override it.
    #[arg(long, env = "BUSYAPI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "BUSYAPI_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Directory of the write-ahead log and the delivery checkpoint. Put it on
    /// persistent disk: it holds acknowledged records not yet in MongoDB.
    #[arg(long, env = "BUSYAPI_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// MongoDB connection string (a mongod, a replica set or a mongos).
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017")]
    pub mongodb_uri: String,
    /// Database that receives the usages.
    #[arg(long, env = "BUSYAPI_DATABASE", default_value = "busyapi")]
    pub database: String,
    /// Collection that receives the usages.
    #[arg(long, env = "BUSYAPI_COLLECTION", default_value = "usages")]
    pub collection: String,
    /// Collection that receives each usage MongoDB refuses for good (a
    /// validator, a duplicate on another unique index), with its error, so
    /// that delivery goes on; see the README on replaying them.
    #[arg(long, env = "BUSYAPI_DEAD_LETTER_COLLECTION", default_value = DEAD_LETTER_COLLECTION_DEFAULT)]
    pub dead_letter_collection: String,
    /// This node's id, 0 to 1023; part of every id it hands out, so each node
    /// behind a load balancer needs its own.
    #[arg(long, env = "BUSYAPI_NODE_ID", default_value_t = 0)]
    pub node_id: u32,
    /// Where ids start on a data directory with no WAL and no checkpoint:
    /// above this node's highest id in MongoDB (if MongoDB answers, or
    /// waiting until it does), or at 1.
    #[arg(
        long,
        env = "BUSYAPI_FRESH_DIR_IDS",
        value_enum,
        default_value = "ask-mongodb"
    )]
    pub fresh_dir_ids: FreshDirIds,
    /// Worker threads [default: the number of cores]. They are pinned one per
    /// CPU only when the process may run on exactly that many CPUs.
    #[arg(long, env = "BUSYAPI_WORKERS")]
    pub workers: Option<usize>,
    /// Quota of WAL bytes not yet in MongoDB; above it POSTs get 503 with
    /// Retry-After. Accepts suffixes KiB, MiB, GiB (or K, M, G).
    #[arg(long, env = "BUSYAPI_WAL_MAX_BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub wal_max_bytes: u64,
    /// Size of one WAL segment file. Segments are preallocated (zero-filled
    /// ahead of use) and deleted once MongoDB has every record in them.
    #[arg(long, env = "BUSYAPI_WAL_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub wal_segment_bytes: u64,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, env = "BUSYAPI_MAX_BODY_BYTES", default_value = "16KiB", value_parser = parse_bytes)]
    pub max_body_bytes: u64,
    /// Longest a WAL commit is held back so that one fdatasync serves more
    /// records; only while more records are expected (0: never hold).
    #[arg(long, env = "BUSYAPI_COMMIT_DELAY_MAX_US", default_value_t = COMMIT_DELAY_MAX_US_DEFAULT)]
    pub commit_delay_max_us: u64,
    /// Records per insert command (one batch).
    #[arg(long, env = "BUSYAPI_FLUSH_MAX_RECORDS", default_value_t = FLUSH_MAX_RECORDS_DEFAULT)]
    pub flush_max_records: usize,
    /// Longest wait for a batch to fill before it is sent anyway.
    #[arg(long, env = "BUSYAPI_FLUSH_INTERVAL_MS", default_value_t = FLUSH_INTERVAL_MS_DEFAULT)]
    pub flush_interval_ms: u64,
    /// Insert commands (batches) in flight at once.
    #[arg(long, env = "BUSYAPI_FLUSH_CONCURRENCY", default_value_t = FLUSH_CONCURRENCY_DEFAULT)]
    pub flush_concurrency: usize,
    /// Write concern of the inserts; a segment is deleted only after it.
    #[arg(
        long,
        env = "BUSYAPI_WRITE_CONCERN",
        value_enum,
        default_value = "journaled"
    )]
    pub write_concern: WriteConcernMode,
    /// At shutdown, how long the flusher may keep delivering the backlog.
    #[arg(long, env = "BUSYAPI_SHUTDOWN_GRACE_SECS", default_value_t = SHUTDOWN_GRACE_SECS_DEFAULT)]
    pub shutdown_grace_secs: u64,
    /// At shutdown, how long /readyz reports 503 while requests are still
    /// served, so load balancers stop sending before the listener closes.
    #[arg(long, env = "BUSYAPI_SHUTDOWN_DRAIN_MS", default_value_t = 0)]
    pub shutdown_drain_ms: u64,
    /// Time allowed to receive a request's headers.
    #[arg(long, env = "BUSYAPI_HEADER_READ_TIMEOUT_MS", default_value_t = HEADER_READ_TIMEOUT_MS_DEFAULT)]
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive a request's body once its headers are in.
    #[arg(long, env = "BUSYAPI_BODY_READ_TIMEOUT_MS", default_value_t = BODY_READ_TIMEOUT_MS_DEFAULT)]
    pub body_read_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this.
    #[arg(long, env = "BUSYAPI_IDLE_TIMEOUT_MS", default_value_t = IDLE_TIMEOUT_MS_DEFAULT)]
    pub idle_timeout_ms: u64,
    /// Open connections at most; further ones get 503 and are closed.
    #[arg(long, env = "BUSYAPI_MAX_CONNECTIONS", default_value_t = CONNECTIONS_MAX_DEFAULT)]
    pub max_connections: usize,
    /// Per-request metrics counters (true/false).
    #[arg(long, env = "BUSYAPI_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
}

/// The validated configuration. Field docs are on [`Args`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub mongodb_uri: String,
    pub database: String,
    pub collection: String,
    pub dead_letter_collection: String,
    pub node_id: u32,
    pub fresh_dir_ids: FreshDirIds,
    pub workers: usize,
    pub wal_max_bytes: u64,
    pub wal_segment_bytes: u64,
    pub commit_delay_max_us: u64,
    pub max_body_bytes: usize,
    pub flush_max_records: usize,
    pub flush_interval_ms: u64,
    pub flush_concurrency: usize,
    pub write_concern: WriteConcernMode,
    pub shutdown_grace_secs: u64,
    pub shutdown_drain_ms: u64,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
    pub metrics: bool,
}

impl Config {
    /// Reads flags, environment and file, and validates the result.
    pub fn load(argv: &[String]) -> Result<Config, ConfigError> {
        let mut cmd = Args::command();
        if let Some(path) = config_path(argv) {
            cmd = apply_file(cmd, &path)?;
        }
        let matches = cmd.try_get_matches_from(argv)?;
        let args = Args::from_arg_matches(&matches)?;
        args.validate()
    }
}

/// `--config` from the arguments, or `BUSYAPI_CONFIG`.
fn config_path(argv: &[String]) -> Option<String> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(p.to_owned());
        }
    }
    std::env::var("BUSYAPI_CONFIG").ok()
}

/// Makes every key of the TOML file the default of its flag.
fn apply_file(mut cmd: clap::Command, path: &str) -> Result<clap::Command, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    for (key, value) in table {
        let id = key.replace('-', "_");
        if id == "config" || !cmd.get_arguments().any(|a| a.get_id() == id.as_str()) {
            return Err(err(format!("unknown setting '{key}'")));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(err(format!(
                    "'{key}' must be a string, number or boolean, not {}",
                    other.type_str()
                )));
            }
        };
        cmd = cmd.mut_arg(id, |a| a.default_value(text));
    }
    Ok(cmd)
}

/// `4096`, `16KiB`, `64MiB`, `4GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB`,
/// all binary multiples).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a byte size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit in '{s}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn check(ok: bool, flag: &'static str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            flag,
            reason: reason(),
        })
    }
}

impl Args {
    fn validate(self) -> Result<Config, ConfigError> {
        let workers = self
            .workers
            .unwrap_or_else(|| core_affinity::get_core_ids().map_or(1, |c| c.len().max(1)));
        check((1..=1024).contains(&workers), "workers", || {
            "must be 1 to 1024".into()
        })?;
        self.check_sizes()?;
        self.check_times()?;
        self.check_names()?;
        Ok(Config {
            listen: self.listen,
            data_dir: self.data_dir,
            mongodb_uri: self.mongodb_uri,
            database: self.database,
            collection: self.collection,
            dead_letter_collection: self.dead_letter_collection,
            node_id: self.node_id,
            fresh_dir_ids: self.fresh_dir_ids,
            workers,
            wal_max_bytes: self.wal_max_bytes,
            wal_segment_bytes: self.wal_segment_bytes,
            commit_delay_max_us: self.commit_delay_max_us,
            max_body_bytes: self.max_body_bytes as usize,
            flush_max_records: self.flush_max_records,
            flush_interval_ms: self.flush_interval_ms,
            flush_concurrency: self.flush_concurrency,
            write_concern: self.write_concern,
            shutdown_grace_secs: self.shutdown_grace_secs,
            shutdown_drain_ms: self.shutdown_drain_ms,
            header_read_timeout_ms: self.header_read_timeout_ms,
            body_read_timeout_ms: self.body_read_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            max_connections: self.max_connections,
            metrics: self.metrics,
        })
    }

    /// Ids, sizes and counts.
    fn check_sizes(&self) -> Result<(), ConfigError> {
        check(self.node_id <= NODE_ID_MAX, "node-id", || {
            format!("must be 0 to {NODE_ID_MAX}")
        })?;
        check(
            self.wal_max_bytes >= WAL_MAX_BYTES_MIN,
            "wal-max-bytes",
            || format!("must be at least {WAL_MAX_BYTES_MIN}"),
        )?;
        check(
            (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&self.wal_segment_bytes),
            "wal-segment-bytes",
            || format!("must be {SEGMENT_BYTES_MIN} to {SEGMENT_BYTES_LIMIT}"),
        )?;
        check(
            (64..=BODY_BYTES_MAX_LIMIT as u64).contains(&self.max_body_bytes),
            "max-body-bytes",
            || format!("must be 64 to {BODY_BYTES_MAX_LIMIT}"),
        )?;
        check(
            (1..=FLUSH_MAX_RECORDS_LIMIT).contains(&self.flush_max_records),
            "flush-max-records",
            || format!("must be 1 to {FLUSH_MAX_RECORDS_LIMIT}"),
        )?;
        check(
            (1..=16).contains(&self.flush_concurrency),
            "flush-concurrency",
            || "must be 1 to 16".into(),
        )?;
        check(self.max_connections >= 1, "max-connections", || {
            "must be at least 1".into()
        })
    }

    /// Intervals and timeouts.
    fn check_times(&self) -> Result<(), ConfigError> {
        check(
            self.commit_delay_max_us <= COMMIT_DELAY_MAX_US_LIMIT,
            "commit-delay-max-us",
            || format!("must be 0 to {COMMIT_DELAY_MAX_US_LIMIT}"),
        )?;
        check(
            (1..=60_000).contains(&self.flush_interval_ms),
            "flush-interval-ms",
            || "must be 1 to 60000".into(),
        )?;
        check(
            self.shutdown_grace_secs <= 3600,
            "shutdown-grace-secs",
            || "must be at most 3600".into(),
        )?;
        check(
            self.shutdown_drain_ms <= 60_000,
            "shutdown-drain-ms",
            || "must be at most 60000".into(),
        )?;
        for (flag, v) in [
            ("header-read-timeout-ms", self.header_read_timeout_ms),
            ("body-read-timeout-ms", self.body_read_timeout_ms),
            ("idle-timeout-ms", self.idle_timeout_ms),
        ] {
            check((100..=3_600_000).contains(&v), flag, || {
                "must be 100 to 3600000".into()
            })?;
        }
        Ok(())
    }

    /// The MongoDB connection string (parsed, without any network access)
    /// and the namespace.
    fn check_names(&self) -> Result<(), ConfigError> {
        if let Err(e) = mongodb::options::ConnectionString::parse(&self.mongodb_uri) {
            return Err(ConfigError::Invalid {
                flag: "mongodb-uri",
                reason: e.to_string(),
            });
        }
        for (flag, name) in [
            ("database", &self.database),
            ("collection", &self.collection),
            ("dead-letter-collection", &self.dead_letter_collection),
        ] {
            check(
                !name.is_empty() && !name.contains(['$', '\0', '/', ' ']),
                flag,
                || "must be non-empty, without '$', '/', spaces or NUL".into(),
            )?;
        }
        // In one collection a dead letter would meet the refusal it fled.
        check(
            self.dead_letter_collection != self.collection,
            "dead-letter-collection",
            || "must differ from --collection".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let argv: Vec<String> = std::iter::once("busyapi")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        Config::load(&argv)
    }

    #[test]
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert!(parse_bytes("4 parsecs").is_err());
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("99999999999999999999").is_err());
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--node-id", "1024"][..], "node-id"),
            (&["--workers", "0"][..], "workers"),
            (&["--wal-max-bytes", "10"][..], "wal-max-bytes"),
            (&["--max-body-bytes", "2GiB"][..], "max-body-bytes"),
            (&["--flush-max-records", "0"][..], "flush-max-records"),
            (&["--idle-timeout-ms", "1"][..], "idle-timeout-ms"),
            (&["--mongodb-uri", "http://x"][..], "mongodb-uri"),
            (&["--collection", "a$b"][..], "collection"),
            (
                &["--dead-letter-collection", "a b"][..],
                "dead-letter-collection",
            ),
            (
                &["--collection", "c", "--dead-letter-collection", "c"][..],
                "dead-letter-collection",
            ),
            (&["--wal-segment-bytes", "1KiB"][..], "wal-segment-bytes"),
            (&["--mongodb-uri", "mongodb://"][..], "mongodb-uri"),
        ] {
            match load(args) {
                Err(ConfigError::Invalid { flag: f, .. }) => assert_eq!(f, flag),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        assert!(matches!(
            load(&["--listen", "nowhere"]),
            Err(ConfigError::Clap(_))
        ));
    }

    #[test]
    fn a_config_file_fills_in_what_flags_do_not_say() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busyapi.toml");
        std::fs::write(
            &path,
            "node_id = 7\nflush-interval-ms = 20\nwal_max_bytes = \"64MiB\"\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf8");
        let c = load(&["--config", p, "--node-id", "9"]).expect("valid");
        assert_eq!(
            (c.node_id, c.flush_interval_ms, c.wal_max_bytes),
            (9, 20, 64 << 20)
        );
        std::fs::write(&path, "no_such_setting = 1\n").expect("write");
        assert!(matches!(
            load(&["--config", p]),
            Err(ConfigError::File { .. })
        ));
    }
}
