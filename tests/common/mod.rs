//! Test harness: the real busyapi binary and the real dev MongoDB
//! (SecantusDB) as child processes, and a raw HTTP/1.1 client.
//!
//! `secantusd-py` is found through `BUSYAPI_SECANTUSD`, else in the
//! project's `.venv` (which `scripts/test.sh` creates). If it is missing the
//! tests fail with a message saying how to install it: they never skip.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::sync::Client;

pub const USAGE: &str = r#"{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}"#;

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

fn secantusd() -> PathBuf {
    if let Ok(p) = std::env::var("BUSYAPI_SECANTUSD") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py");
    assert!(
        p.exists(),
        "the dev MongoDB (secantusd-py) is not installed: run scripts/dev-mongo.sh install, or use scripts/test.sh"
    );
    p
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < until,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A dev MongoDB server on its own port and storage directory.
pub struct Mongo {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Run under a watchdog that stops it when the test process is gone
    /// (for the shared instance, which lives in a static and is never
    /// dropped). Such an instance cannot be killed to fake an outage.
    watched: bool,
}

impl Mongo {
    pub fn start() -> Mongo {
        Mongo::start_with(false)
    }

    fn start_with(watched: bool) -> Mongo {
        let mut m = Mongo {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            watched,
        };
        m.restart();
        m
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("secantusd.log")).expect("log file");
        let mut cmd = if self.watched {
            // The watchdog ends the server once this test process is gone.
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(concat!(
                    r#""$@" & child=$!; trap 'kill $child 2>/dev/null' EXIT; "#,
                    r#"while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done"#
                ))
                .arg("watchdog")
                .arg(secantusd())
                .env("WATCH_PID", std::process::id().to_string());
            c
        } else {
            Command::new(secantusd())
        };
        let child = cmd
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--log-level",
                "WARNING",
            ])
            .arg("--storage-path")
            .arg(self.dir.path().join("db"))
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(30), "the dev MongoDB to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the server (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        assert!(
            !self.watched,
            "the shared dev MongoDB cannot be killed; use Mongo::start()"
        );
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::with_uri_str(format!("{}/?serverSelectionTimeoutMS=5000", self.uri()))
            .expect("client")
    }

    /// Every `_id` in `db.usages`, sorted.
    pub fn ids(&self, db: &str) -> Vec<i64> {
        let coll = self.client().database(db).collection::<Document>("usages");
        let mut ids: Vec<i64> = coll
            .find(doc! {})
            .projection(doc! {"_id": 1})
            .run()
            .expect("find")
            .map(|d| d.expect("doc").get_i64("_id").expect("_id is an Int64"))
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn count(&self, db: &str) -> u64 {
        self.client()
            .database(db)
            .collection::<Document>("usages")
            .count_documents(doc! {})
            .run()
            .expect("count")
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        if !self.watched {
            self.kill();
        }
    }
}

/// One dev MongoDB shared by the tests of a test binary that do not stop it;
/// each test uses its own database.
pub fn shared_mongo() -> &'static Mongo {
    static MONGO: OnceLock<Mongo> = OnceLock::new();
    MONGO.get_or_init(|| Mongo::start_with(true))
}

/// A busyapi process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

/// How to start a server.
#[derive(Clone, Default)]
pub struct Opts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub data_dir: Option<PathBuf>,
    pub mongo_uri: Option<String>,
    pub database: Option<String>,
}

impl Opts {
    pub fn mongo(mut self, uri: String, database: &str) -> Opts {
        self.mongo_uri = Some(uri);
        self.database = Some(database.to_owned());
        self
    }

    pub fn arg(mut self, a: &str) -> Opts {
        self.args.extend(a.split_whitespace().map(String::from));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Opts {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn data_dir(mut self, p: &Path) -> Opts {
        self.data_dir = Some(p.to_path_buf());
        self
    }
}

impl Server {
    /// Starts busyapi on a free loopback port. Without a MongoDB URI it gets
    /// one nobody listens on, so nothing is ever delivered.
    pub fn start(opts: Opts) -> Server {
        let (dir, data_dir) = match &opts.data_dir {
            Some(p) => (None, p.clone()),
            None => {
                let d = tempfile::tempdir().expect("tempdir");
                let p = d.path().join("data");
                (Some(d), p)
            }
        };
        let mut args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--mongodb-uri".to_owned(),
            opts.mongo_uri
                .clone()
                .unwrap_or_else(|| format!("mongodb://127.0.0.1:{}", free_port())),
            "--database".to_owned(),
            opts.database
                .clone()
                .unwrap_or_else(|| "busyapi_test".into()),
        ];
        args.extend(opts.args.iter().cloned());
        // Small segments: each start preallocates a segment and a spare, and
        // 64 MiB of zeros per test server is slow; tests that care say so.
        if !args.iter().any(|a| a.starts_with("--wal-segment-bytes")) {
            args.extend(["--wal-segment-bytes".to_owned(), "1MiB".to_owned()]);
        }
        let mut s = Server {
            child: None,
            addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir,
            args,
            env: opts.env.clone(),
            logs: Arc::default(),
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busyapi"));
        cmd.args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start busyapi");
        let stderr = child.stderr.take().expect("stderr");
        let logs = self.logs.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                logs.lock().expect("logs").push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "busyapi did not start; its log:\n{}",
                    self.logs.lock().expect("logs").join("\n")
                )
            });
        self.addr = addr.parse().expect("listen address");
        self.child = Some(child);
    }

    /// Starts the same server again (same data directory, a new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.args
            .splice(0..2, ["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        self.spawn();
    }

    /// Starts the same server again on the same address and data directory,
    /// as a process manager does: a load balancer's backend keeps its port.
    pub fn restart_on_same_port(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.args
            .splice(0..2, ["--listen".to_owned(), self.addr.to_string()]);
        self.spawn();
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Whether the process is still alive (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let until = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!(
                    "busyapi did not exit within {timeout:?}; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    pub fn connect(&self) -> Http {
        Http::connect(self.addr)
    }

    /// GET on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        let mut c = self.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        c.response()
    }

    /// POSTs a usage on a fresh connection.
    pub fn post(&self, body: &str) -> Response {
        let mut c = self.connect();
        c.post_json(body);
        c.response()
    }

    /// Reads `/api/stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_slice(&self.get("/api/stats").body).expect("stats JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The id of a 201.
    pub fn id(&self) -> u64 {
        assert_eq!(self.status, 201, "{}", self.text());
        self.json()["id"].as_u64().expect("id is an integer")
    }

    /// The `error` text of an error response.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("error is a string")
            .to_owned()
    }
}

/// A raw HTTP/1.1 connection.
pub struct Http {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn post_json(&mut self, body: &str) {
        let req = format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one response (Content-Length framed, as busyapi sends).
    pub fn try_response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let len = if status == 100 { 0 } else { len };
        while self.buf.len() < head_end + len {
            if !self.fill() {
                return None;
            }
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Some(Response {
            status,
            headers,
            body,
        })
    }

    pub fn response(&mut self) -> Response {
        self.try_response()
            .expect("a response before the connection closed")
    }

    /// Whether the server closed the connection (EOF with nothing pending).
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }
}

/// Keeps POSTing valid usages on `conns` keep-alive connections from as
/// many threads until `stop` is set or the server goes away; returns every
/// acknowledged id.
pub fn load(
    addr: SocketAddr,
    conns: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let handles: Vec<_> = (0..conns)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    let Ok(stream) = TcpStream::connect(addr) else { return ids };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut c = Http { stream, buf: Vec::new() };
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let body = format!(r#"{{"patientId": "p{t}-{n}", "timestamp": {n}, "medication": "Albuterol"}}"#);
                        let req = format!(
                            "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if c.stream.write_all(req.as_bytes()).is_err() {
                            break;
                        }
                        match c.try_response() {
                            Some(r) if r.status == 201 => ids.push(r.id()),
                            Some(r) if r.status == 503 => std::thread::sleep(Duration::from_millis(5)),
                            Some(r) => panic!("unexpected {}: {}", r.status, r.text()),
                            None => break,
                        }
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect()
    })
}
