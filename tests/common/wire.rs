//! The MongoDB wire protocol recorded: a TCP proxy between a client and
//! the dev MongoDB that decodes every message the client sends (a 16-byte
//! header, then for `OP_MSG` flag bits and sections, the kind-0 section
//! holding the command as BSON), so tests can check which commands were
//! sent, in which order.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use mongodb::bson::Document;

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

/// Commands seen on the wire, in the order they were sent.
pub type Recorded = Arc<Mutex<Vec<Document>>>;

/// A TCP proxy to `upstream` that records the kind-0 body of every `OP_MSG`
/// a client sends. Its threads end with the test process.
pub fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    (addr, serve(listener, upstream, None))
}

/// The same proxy, except that a `stalled` command is never forwarded: its
/// client waits for an answer that does not come, as from a MongoDB busy
/// building an index over a large collection.
pub fn stalling_proxy(upstream: SocketAddr, stalled: &'static str) -> (SocketAddr, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    (addr, serve(listener, upstream, Some(stalled)))
}

/// The same proxy on `addr`, a port chosen earlier: a client pointed there
/// finds nothing listening until this is called, as when MongoDB comes back.
pub fn recording_proxy_at(addr: SocketAddr, upstream: SocketAddr) -> Recorded {
    serve(
        TcpListener::bind(addr).expect("bind the proxy"),
        upstream,
        None,
    )
}

fn serve(listener: TcpListener, upstream: SocketAddr, stalled: Option<&'static str>) -> Recorded {
    let recorded: Recorded = Arc::default();
    let rec = recorded.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            // An upstream that is down is a refused connection, as without
            // the proxy.
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(Shutdown::Write);
            });
            let rec = rec.clone();
            std::thread::spawn(move || relay_requests(client, server, &rec, stalled));
        }
    });
    recorded
}

/// Forwards client → server message by message, recording commands.
fn relay_requests(
    mut client: TcpStream,
    mut server: TcpStream,
    rec: &Recorded,
    stalled: Option<&str>,
) {
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
            let command = op_msg_command(&rest);
            let name = command.keys().next().cloned();
            rec.lock().expect("recorded").push(command);
            if name.is_some() && name.as_deref() == stalled {
                // Hold both sockets open, answer nothing, forever.
                loop {
                    std::thread::park();
                }
            }
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

/// The application's own commands as (database, command without the
/// driver's fields), in the order they were sent.
pub fn app_commands(rec: &Recorded) -> Vec<(String, Document)> {
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
