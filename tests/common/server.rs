//! The busyapi binary as a child process, and what its `/api/stats` says.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{Http, Response};
use super::{free_port, wait_for};

/// Time for what a test acknowledged to reach MongoDB, from a few records
/// to the backlog of a kill loop or a rolling restart: the dev server
/// stores ~13-16K documents a second, and other suites may share the two
/// cores.
pub const DELIVERY: Duration = Duration::from_secs(120);

/// Time for a line the server has written to reach the harness's copy of
/// its log: the reader thread may wait for a core on a loaded machine.
pub const LOG_LINE_MAX: Duration = Duration::from_secs(10);

/// Time for a started server to listen: recovery of a small WAL and the
/// preallocation of a test-sized segment, on a loaded machine.
pub const START_MAX: Duration = Duration::from_secs(30);

/// A busyapi process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    open_file_limit: Option<u64>,
    ready_on_connect: bool,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread copying the running process's stderr into `logs`.
    log_reader: Option<JoinHandle<()>>,
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
    /// RLIMIT_NOFILE (soft and hard) the process starts with.
    pub open_file_limit: Option<u64>,
    /// See [`Opts::ready_on_connect`].
    pub ready_on_connect: bool,
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

    pub fn open_file_limit(mut self, n: u64) -> Opts {
        self.open_file_limit = Some(n);
        self
    }

    pub fn data_dir(mut self, p: &Path) -> Opts {
        self.data_dir = Some(p.to_path_buf());
        self
    }

    /// For a log level that hides the "listening on" line `start` waits for
    /// (`RUST_LOG=warn`): the harness picks the port itself, and the server
    /// has started once that port takes a connection.
    pub fn ready_on_connect(mut self) -> Opts {
        self.ready_on_connect = true;
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
        // Without a MongoDB nothing could tell a fresh data directory where
        // its ids start; tests that give one get the production default.
        if opts.mongo_uri.is_none() {
            args.extend(["--fresh-dir-ids".to_owned(), "from-one".to_owned()]);
        }
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
            open_file_limit: opts.open_file_limit,
            ready_on_connect: opts.ready_on_connect,
            logs: Arc::default(),
            log_reader: None,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        if self.ready_on_connect && self.args[1].ends_with(":0") {
            // No log line will say which port the kernel picked.
            self.args[1] = format!("127.0.0.1:{}", free_port());
        }
        let mut child = self.command().spawn().expect("start busyapi");
        let (announced, reader) = read_log(&mut child, self.logs.clone());
        self.log_reader = Some(reader);
        let addr = if self.ready_on_connect {
            let addr = self.args[1].parse().expect("listen address");
            accepting(&mut child, addr).then_some(addr)
        } else {
            let announced = announced.recv_timeout(START_MAX).ok();
            announced.map(|a| a.parse().expect("listen address"))
        };
        let Some(addr) = addr else {
            // Not left running after the test: nothing else would stop it.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "busyapi did not start; its log:\n{}",
                self.logs.lock().expect("logs").join("\n")
            )
        };
        self.addr = addr;
        self.child = Some(child);
    }

    /// The busyapi command line, environment and limits of this server.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busyapi"));
        cmd.args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(n) = self.open_file_limit {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is
            // async-signal-safe and touches only `lim`.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd
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

    /// The next start goes without environment variable `key` (a
    /// failpoint, say).
    pub fn drop_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The process's resident set (`VmRSS` of `/proc/PID/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
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
                self.read_log_to_the_end();
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

    /// Waits for the log reader to copy what the exited process wrote last:
    /// its stderr ends with it, so [`Server::logs`] then holds every line.
    fn read_log_to_the_end(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let until = Instant::now() + LOG_LINE_MAX;
            while !reader.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Waits until a log line contains `needle`. The harness reads stderr
    /// on its own thread, so a line the server wrote before a response can
    /// reach [`Server::logs`] after the test has read that response; only
    /// lines before "listening" are there as soon as `start` returns.
    pub fn wait_for_log(&self, needle: &str) {
        showing_log_on_timeout(self, || {
            wait_for(LOG_LINE_MAX, &format!("a log line with {needle:?}"), || {
                self.logs().contains(needle)
            });
        });
    }

    pub fn connect(&self) -> Http {
        Http::connect(self.addr)
    }

    /// The `--admin-listen` address, as the server announced it before it
    /// said it listens (so it is in the logs once `start` returns).
    pub fn admin_addr(&self) -> SocketAddr {
        let logs = self.logs();
        let rest = logs
            .split("admin endpoints")
            .nth(1)
            .and_then(|l| l.split(" on http://").nth(1))
            .unwrap_or_else(|| panic!("no admin address announced; log:\n{logs}"));
        let addr = rest.split_whitespace().next().unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|e| panic!("admin address {addr:?}: {e}"))
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

    /// GET of an operational path (`/metrics`, `/api/stats`) on a fresh
    /// connection: to the `--admin-listen` address when the server has one.
    pub fn ops_get(&self, path: &str) -> Response {
        if !self.logs().contains("admin endpoints") {
            return self.get(path);
        }
        let mut c = Http::connect(self.admin_addr());
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        c.response()
    }

    /// Reads `/api/stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_slice(&self.ops_get("/api/stats").body).expect("stats JSON")
    }

    /// An unsigned number from `/api/stats`.
    pub fn stat(&self, key: &str) -> u64 {
        let stats = self.stats();
        stats[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {stats}"))
    }

    /// `(acknowledged, lastId)` from `/api/stats`: what has been written.
    pub fn written(&self) -> (u64, u64) {
        let stats = self.stats();
        let n = |k: &str| {
            stats[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} in {stats}"))
        };
        (n("acknowledged"), n("lastId"))
    }
}

/// Waits until `addr` takes a connection: false if `child` exits first or
/// [`START_MAX`] passes.
fn accepting(child: &mut Child, addr: SocketAddr) -> bool {
    let until = Instant::now() + START_MAX;
    while Instant::now() < until && child.try_wait().expect("try_wait").is_none() {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Copies `child`'s stderr, line by line, into `logs` on a thread of its
/// own; the address of the "listening on" line comes out of the receiver.
fn read_log(
    child: &mut Child,
    logs: Arc<Mutex<Vec<String>>>,
) -> (Receiver<String>, JoinHandle<()>) {
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let announced = line.split_once("listening on http://");
            let announced = announced.or_else(|| line.split_once("listening on https://"));
            let addr = announced.map(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            });
            // The line is in `logs` before `start` returns, so a test
            // that reads the logs right away sees the listening line.
            logs.lock().expect("logs").push(line);
            if let Some(addr) = addr {
                let _ = tx.send(addr);
            }
        }
    });
    (rx, reader)
}

/// The lines `child` writes to its piped stderr, read to the end on a
/// thread of their own: a full or closed pipe would block or fail the
/// child's later log lines.
pub fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits for the backlog to reach MongoDB; on a timeout, shows the log.
pub fn wait_drained(s: &Server) {
    showing_log_on_timeout(s, || {
        wait_for(DELIVERY, "the WAL backlog to reach MongoDB", || {
            s.stat("walBacklogRecords") == 0
        });
    });
}

/// Runs `wait` (a [`wait_for`]); if it times out, prints `s`'s log first.
fn showing_log_on_timeout(s: &Server, wait: impl FnOnce()) {
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(wait));
    if let Err(e) = waited {
        eprintln!("busyapi's log:\n{}", s.logs());
        std::panic::resume_unwind(e);
    }
}
