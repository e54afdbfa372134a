//! `busyapi-admin shard`, checked on the wire: a recording TCP proxy sits
//! between the tool and the real dev MongoDB and decodes every message the
//! tool sends (the MongoDB wire protocol: a 16-byte header, then for
//! `OP_MSG` flag bits and sections, the kind-0 section holding the command
//! as BSON). The dev server is not a mongos, so it refuses the sharding
//! commands; what is checked is that the tool sends exactly the commands its
//! module doc lists, in order and with those arguments, and that it reports
//! the refusal as documented.
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use mongodb::bson::{Bson, Document, doc};

use common::{Mongo, free_port};

/// `OP_MSG`, the opcode of every command a current driver sends.
const OP_MSG: i32 = 2013;
/// `OP_MSG` flag: a CRC-32C follows the sections.
const CHECKSUM_PRESENT: u32 = 1;
/// Commands the driver sends on its own: handshake, monitoring, sessions.
const DRIVER_COMMANDS: [&str; 5] = ["hello", "isMaster", "ismaster", "ping", "endSessions"];
/// Fields the driver adds to every command.
const DRIVER_FIELDS: [&str; 5] = [
    "$db",
    "lsid",
    "$clusterTime",
    "$readPreference",
    "txnNumber",
];

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
                ],
            },
        ),
        (
            "admin".into(),
            doc! {"shardCollection": format!("{db}.{coll}"), "key": {"patientId": "hashed"}},
        ),
    ]
}

/// Commands seen on the wire, in the order they were sent.
type Recorded = Arc<Mutex<Vec<Document>>>;

/// A TCP proxy to `upstream` that records the kind-0 body of every `OP_MSG`
/// a client sends. Its threads end with the test process.
fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let recorded: Recorded = Arc::default();
    let rec = recorded.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let server = TcpStream::connect(upstream).expect("connect to the dev MongoDB");
            let (mut c2, mut s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(Shutdown::Write);
            });
            let rec = rec.clone();
            std::thread::spawn(move || relay_requests(client, server, &rec));
        }
    });
    (addr, recorded)
}

/// Forwards client → server message by message, recording commands.
fn relay_requests(mut client: TcpStream, mut server: TcpStream, rec: &Recorded) {
    loop {
        let mut header = [0u8; 16];
        if client.read_exact(&mut header).is_err() {
            let _ = server.shutdown(Shutdown::Write);
            return;
        }
        let len = i32_at(&header, 0);
        let opcode = i32_at(&header, 12);
        assert!(
            (16..48 << 20).contains(&len),
            "message length {len} out of range"
        );
        let mut rest = vec![0u8; len as usize - 16];
        client.read_exact(&mut rest).expect("a whole message");
        if opcode == OP_MSG {
            rec.lock().expect("recorded").push(op_msg_command(&rest));
        }
        server.write_all(&header).expect("forward");
        server.write_all(&rest).expect("forward");
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The kind-0 section of an `OP_MSG` body (the bytes after the header):
/// `flagBits: u32`, then sections up to the optional checksum. Kind 0 is one
/// BSON document; kind 1 is a size, an identifier and documents.
fn op_msg_command(body: &[u8]) -> Document {
    let flags = u32::from_le_bytes(body[..4].try_into().expect("flagBits"));
    let end = body.len() - if flags & CHECKSUM_PRESENT != 0 { 4 } else { 0 };
    let mut at = 4;
    let mut command = None;
    while at < end {
        let kind = body[at];
        let size = i32_at(body, at + 1) as usize;
        match kind {
            0 => {
                let doc =
                    Document::from_reader(&body[at + 1..at + 1 + size]).expect("a BSON command");
                assert!(
                    command.replace(doc).is_none(),
                    "OP_MSG with two kind-0 sections"
                );
            }
            1 => {}
            other => panic!("OP_MSG section of unknown kind {other}"),
        }
        at += 1 + size;
    }
    assert_eq!(at, end, "OP_MSG sections overrun the message");
    command.expect("OP_MSG without a kind-0 section")
}

/// The tool's commands as (database, command without the driver's fields).
fn tool_commands(rec: &Recorded) -> Vec<(String, Document)> {
    rec.lock()
        .expect("recorded")
        .iter()
        .filter(|c| {
            c.keys()
                .next()
                .is_some_and(|k| !DRIVER_COMMANDS.contains(&k.as_str()))
        })
        .map(|c| {
            let db = c
                .get_str("$db")
                .expect("every OP_MSG command names its $db")
                .to_owned();
            let mut c = c.clone();
            for f in DRIVER_FIELDS {
                c.remove(f);
            }
            (db, c)
        })
        .collect()
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
    let mongo = Mongo::start();
    let (proxy, rec) = recording_proxy(format!("127.0.0.1:{}", mongo.port).parse().expect("addr"));
    let out = admin(&[
        "shard",
        "--mongodb-uri",
        &format!("mongodb://{proxy}/?directConnection=true&serverSelectionTimeoutMS=5000"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sent = tool_commands(&rec);
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
        matches!(sent[1].1.get("indexes"), Some(Bson::Array(a)) if a.len() == 2),
        "both indexes in one createIndexes"
    );
}

#[test]
fn on_a_server_that_is_not_a_mongos_every_step_is_tried_and_the_tool_fails_saying_a_sharded_cluster_is_needed()
 {
    let mongo = Mongo::start();
    let (proxy, rec) = recording_proxy(format!("127.0.0.1:{}", mongo.port).parse().expect("addr"));
    let out = admin(&[
        "shard",
        "--mongodb-uri",
        &format!("mongodb://{proxy}/?directConnection=true&serverSelectionTimeoutMS=5000"),
        "--database",
        "clinic",
        "--collection",
        "events",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}");
    assert_eq!(
        tool_commands(&rec),
        documented("clinic", "events"),
        "stdout:\n{stdout}"
    );
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
