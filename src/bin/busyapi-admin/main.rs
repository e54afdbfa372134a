//! `busyapi-admin`: operator commands that the server itself never runs.
//!
//! ## `busyapi-admin keys new --id NAME`
//!
//! A fresh API key and its `[[key]]` entry for `--api-keys-file`; see
//! `keys.rs`.
//!
//! ## `busyapi-admin shard`
//!
//! ```text
//! busyapi-admin shard --mongodb-uri URI [--database busyapi] [--collection usages]
//! ```
//!
//! Shards the usages collection of a sharded cluster; `URI` must reach a
//! `mongos`. It sends exactly these commands, in this order (besides the
//! driver's own handshake and monitoring: `hello`/`isMaster`, and
//! `endSessions` when it used sessions):
//!
//! | step | database | command                                                                 |
//! |------|----------|-------------------------------------------------------------------------|
//! | 1    | `admin`  | `{enableSharding: "<db>"}`                                              |
//! | 2    | `<db>`   | `{createIndexes: "<coll>", indexes: [{key: {patientId: "hashed"}, name: "patientId_hashed"}, {key: {patientId: 1, timestamp: 1}, name: "patientId_1_timestamp_1"}, {key: {patientId: 1, eventId: 1}, name: "patientId_eventId_unique", unique: true, partialFilterExpression: {eventId: {$exists: true}}}]}` |
//! | 3    | `admin`  | `{shardCollection: "<db>.<coll>", key: {patientId: "hashed"}}`          |
//!
//! `<db>` and `<coll>` default to the server's own defaults (`busyapi`,
//! `usages`), read from `busyapi::config` so the two cannot drift apart.
//!
//! **Why a hashed `patientId`.** Writes come from every patient at once, so
//! hashing spreads them evenly over the shards, and every query by patient
//! (the `{patientId: 1, timestamp: 1}` index busyapi also creates) goes to
//! one shard. `_id` would be a poor key: it grows with each node's sequence,
//! so a ranged `_id` key sends every insert to the last chunk. Exactly-once
//! delivery still holds on the sharded collection: `_id` is unique per shard
//! only, but a replayed record carries the same `patientId` as the first
//! copy, so it lands on the same shard and meets its duplicate-key error.
//! The unique `{patientId: 1, eventId: 1}` index (one document per real
//! event) starts with the shard key's field for the same reason: both
//! copies of an event live on one shard, which can enforce it.
//!
//! **Failure.** Every step is idempotent (repeating the tool is safe). A step
//! the server refuses is reported with the server's code and message, and
//! the next step is still attempted, so one run shows every problem; on a
//! standalone mongod or a replica set, steps 1 and 3 fail with a note that a
//! sharded cluster (a mongos) is needed. If MongoDB cannot be reached or
//! authentication fails, the tool stops at that step. Exit status: 0 when all
//! steps succeeded, 1 when any failed, 2 for bad arguments.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use mongodb::ServerType;
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::EventHandler;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::ClientOptions;
use mongodb::sync::Client;

use busyapi::sink::mongo::EVENT_INDEX_NAME;

mod keys;

/// How long the driver looks for a server before a step fails, unless the
/// URI says otherwise. Long enough for a mongos under load, short enough for
/// a typo in the URI to show quickly.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The shard key: see the module doc.
const SHARD_KEY_FIELD: &str = "patientId";

#[derive(Debug, Parser)]
#[command(
    name = "busyapi-admin",
    version,
    about = "Operator commands for busyapi: its MongoDB, its API keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Shard the usages collection by hashed patientId (needs a mongos):
    /// enableSharding, createIndexes, shardCollection.
    Shard(ShardArgs),
    /// API keys for busyapi's --api-keys-file.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
}

#[derive(Debug, clap::Args)]
struct ShardArgs {
    /// Connection string of a mongos of the sharded cluster.
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: String,
    /// Database of the usages (busyapi's --database).
    #[arg(long, default_value = server_default("database"))]
    database: String,
    /// Collection of the usages (busyapi's --collection).
    #[arg(long, default_value = server_default("collection"))]
    collection: String,
}

/// The busyapi server's default for its flag `id`.
fn server_default(id: &str) -> String {
    busyapi::config::Config::command()
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_default_values().first())
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_else(|| panic!("busyapi's --{id} has a default"))
}

/// One command of the plan.
struct Step {
    /// The database the command is sent to.
    database: String,
    command: Document,
    /// A sharding command: only a mongos runs it.
    needs_mongos: bool,
}

/// The exact commands of the module doc, in order.
fn shard_plan(database: &str, collection: &str) -> [Step; 3] {
    [
        Step {
            database: "admin".into(),
            command: doc! {"enableSharding": database},
            needs_mongos: true,
        },
        Step {
            database: database.into(),
            command: doc! {
                "createIndexes": collection,
                "indexes": [
                    {"key": {SHARD_KEY_FIELD: "hashed"}, "name": "patientId_hashed"},
                    {"key": {SHARD_KEY_FIELD: 1, "timestamp": 1}, "name": "patientId_1_timestamp_1"},
                    {
                        "key": {SHARD_KEY_FIELD: 1, "eventId": 1},
                        "name": EVENT_INDEX_NAME,
                        "unique": true,
                        "partialFilterExpression": {"eventId": {"$exists": true}},
                    },
                ],
            },
            needs_mongos: false,
        },
        Step {
            database: "admin".into(),
            command: doc! {
                "shardCollection": format!("{database}.{collection}"),
                "key": {SHARD_KEY_FIELD: "hashed"},
            },
            needs_mongos: true,
        },
    ]
}

/// How a step ended.
enum Outcome {
    Done(Document),
    /// The server answered and said no; later steps still make sense.
    Refused(String),
    /// No answer (unreachable, timeout, authentication): stop here.
    Unreachable(String),
}

fn run_step(client: &Client, step: &Step) -> Outcome {
    let db = client.database(&step.database);
    match db.run_command(step.command.clone()).run() {
        Ok(reply) => Outcome::Done(reply),
        Err(e) => match *e.kind {
            ErrorKind::Command(ref c) => {
                Outcome::Refused(format!("{} ({}): {}", c.code_name, c.code, c.message))
            }
            ErrorKind::Write(WriteFailure::WriteConcernError(ref w)) => Outcome::Refused(format!(
                "write concern {} ({}): {}",
                w.code_name, w.code, w.message
            )),
            _ => Outcome::Unreachable(e.to_string()),
        },
    }
}

/// The server types the driver has seen, from its monitoring (no command of
/// our own is sent for it).
type Seen = Arc<Mutex<Vec<ServerType>>>;

fn connect(uri: &str) -> Result<(Client, Seen), String> {
    let mut opts = ClientOptions::parse(uri)
        .run()
        .map_err(|e| format!("--mongodb-uri: {e}"))?;
    opts.server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    opts.app_name.get_or_insert_with(|| "busyapi-admin".into());
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    opts.sdam_event_handler = Some(EventHandler::callback(move |ev: SdamEvent| {
        if let SdamEvent::ServerDescriptionChanged(ev) = ev {
            let t = ev.new_description.server_type();
            if t != ServerType::Unknown {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(t);
            }
        }
    }));
    let client = Client::with_options(opts).map_err(|e| format!("--mongodb-uri: {e}"))?;
    Ok((client, seen))
}

/// Why a sharding command failed, when the server type says it.
fn mongos_hint(seen: &Seen) -> String {
    let last = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .copied();
    let what = match last {
        Some(ServerType::Mongos | ServerType::LoadBalancer) => return String::new(),
        Some(ServerType::Standalone) => "a standalone mongod".to_owned(),
        Some(t @ (ServerType::RsPrimary | ServerType::RsSecondary | ServerType::RsOther)) => {
            format!("a replica set member ({t:?})")
        }
        Some(t) => format!("{t:?}"),
        None => "not known to be a mongos".to_owned(),
    };
    format!(
        "\n      the server is {what}: sharding needs a real sharded cluster; \
         point --mongodb-uri at one of its mongos routers"
    )
}

fn shard(args: &ShardArgs) -> ExitCode {
    let (client, seen) = match connect(&args.mongodb_uri) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busyapi-admin: {e}");
            return ExitCode::from(2);
        }
    };
    let plan = shard_plan(&args.database, &args.collection);
    println!(
        "sharding {}.{} by {{{SHARD_KEY_FIELD}: \"hashed\"}}",
        args.database, args.collection
    );
    let mut failed = 0;
    for (i, step) in plan.iter().enumerate() {
        println!(
            "[{}/{}] on {}: {}",
            i + 1,
            plan.len(),
            step.database,
            step.command
        );
        match run_step(&client, step) {
            Outcome::Done(mut reply) => {
                reply.remove("$clusterTime");
                reply.remove("operationTime");
                println!("      ok: {reply}");
            }
            Outcome::Refused(why) => {
                failed += 1;
                let hint = if step.needs_mongos {
                    mongos_hint(&seen)
                } else {
                    String::new()
                };
                println!("      FAILED: {why}{hint}");
            }
            Outcome::Unreachable(why) => {
                println!("      FAILED: cannot reach MongoDB: {why}");
                println!("stopped: the remaining steps need a reachable server");
                return ExitCode::FAILURE;
            }
        }
    }
    if failed == 0 {
        println!("done: {}.{} is sharded", args.database, args.collection);
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} steps failed", plan.len());
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Shard(args) => shard(&args),
        Cmd::Keys(cmd) => match keys::run(&cmd) {
            Ok(printed) => {
                print!("{}", printed.stdout);
                eprintln!("{}", printed.advice);
                ExitCode::SUCCESS
            }
            Err(failed) => {
                eprintln!("{}", failed.message);
                failed.code
            }
        },
    }
}
