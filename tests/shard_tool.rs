//! `busyapi-admin shard`, checked on the wire: a recording TCP proxy sits
//! between the tool and the real dev MongoDB and decodes every message the
//! tool sends (the MongoDB wire protocol: a 16-byte header, then for
//! `OP_MSG` flag bits and sections, the kind-0 section holding the command
//! as BSON). The dev server is not a mongos, so it refuses the sharding
//! commands; what is checked is that the tool sends exactly the commands its
//! module doc lists, in order and with those arguments, and that it reports
//! the refusal as documented.
mod common;

use std::process::{Command, Output};

use mongodb::bson::{Bson, Document, doc};

use common::{Mongo, app_commands, free_port, recording_proxy};

/// The commands the tool's module doc promises, as (database, command).
fn documented(db: &str, coll: &str) -> Vec<(String, Document)> {
    vec![
        ("admin".into(), doc! {"enableSharding": db}),
        (
            db.into(),
            doc! {
                "createIndexes": coll,
                "indexes": [
                    {"key": {"patientId": "hashed"}, "name": "patientId_hashed"},
                    {"key": {"patientId": 1, "timestamp": 1}, "name": "patientId_1_timestamp_1"},
                    {
                        "key": {"patientId": 1, "eventId": 1},
                        "name": "patientId_eventId_unique",
                        "unique": true,
                        "partialFilterExpression": {"eventId": {"$exists": true}},
                    },
                ],
            },
        ),
        (
            "admin".into(),
            doc! {"shardCollection": format!("{db}.{coll}"), "key": {"patientId": "hashed"}},
        ),
    ]
}

/// Runs `busyapi-admin shard` through a recording proxy to a fresh dev
/// MongoDB; returns its output and the commands it sent.
fn shard_through_proxy(extra: &[&str]) -> (Output, Vec<(String, Document)>) {
    let mongo = Mongo::start();
    let (proxy, rec) = recording_proxy(format!("127.0.0.1:{}", mongo.port).parse().expect("addr"));
    let uri = format!("mongodb://{proxy}/?directConnection=true&serverSelectionTimeoutMS=5000");
    let out = admin(&[&["shard", "--mongodb-uri", &uri][..], extra].concat());
    (out, app_commands(&rec))
}

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busyapi-admin"))
        .args(args)
        .env_remove("MONGODB_URI")
        .output()
        .expect("run busyapi-admin")
}

#[test]
fn shard_sends_exactly_the_documented_commands_in_order_with_busyapis_defaults() {
    let (out, sent) = shard_through_proxy(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = sent
        .iter()
        .map(|(_, c)| c.keys().next().expect("a command").as_str())
        .collect();
    assert_eq!(
        names,
        ["enableSharding", "createIndexes", "shardCollection"],
        "stdout:\n{stdout}"
    );
    assert_eq!(sent, documented("busyapi", "usages"), "stdout:\n{stdout}");
    assert!(
        matches!(sent[1].1.get("indexes"), Some(Bson::Array(a)) if a.len() == 3),
        "all three indexes in one createIndexes"
    );
}

#[test]
fn on_a_server_that_is_not_a_mongos_every_step_is_tried_and_the_tool_fails_saying_a_sharded_cluster_is_needed()
 {
    let (out, sent) = shard_through_proxy(&["--database", "clinic", "--collection", "events"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}");
    assert_eq!(sent, documented("clinic", "events"), "stdout:\n{stdout}");
    let step = |n: usize| -> &str {
        let start = stdout
            .find(&format!("[{n}/3]"))
            .unwrap_or_else(|| panic!("step {n} reported:\n{stdout}"));
        let end = stdout[start..]
            .find("\n[")
            .map_or(stdout.len(), |e| start + e);
        &stdout[start..end]
    };
    for n in [1, 3] {
        let report = step(n);
        assert!(
            report.contains("FAILED"),
            "step {n} must fail on the dev server:\n{report}"
        );
        assert!(
            report.contains("sharded cluster") && report.contains("mongos"),
            "step {n} must say a sharded cluster is needed:\n{report}"
        );
    }
    assert!(step(2).contains("createIndexes"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("steps failed"),
        "a closing summary:\n{stdout}"
    );
}

#[test]
fn an_unreachable_mongodb_stops_the_tool_at_the_first_step_with_exit_status_1() {
    let uri = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=300",
        free_port()
    );
    let out = admin(&["shard", "--mongodb-uri", &uri]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}");
    assert!(
        stdout.contains("[1/3]") && stdout.contains("cannot reach MongoDB"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("[2/3]"),
        "no step after an unreachable server:\n{stdout}"
    );
}

#[test]
fn a_uri_that_is_not_a_mongodb_uri_is_a_usage_error_with_exit_status_2() {
    let out = admin(&["shard", "--mongodb-uri", "http://db.example"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mongodb-uri"));
}
