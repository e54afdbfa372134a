//! Quarantine copies are durable before the bytes they keep are cut.
//!
//! What matters here is a power cut, which a test cannot make: a SIGKILL
//! leaves the page cache, and with it every unsynced file and name, in
//! place. So the real binary runs under `strace`, and the test reads the
//! order of its syscalls during recovery: the copy's data is synced, then
//! the quarantine directory (the copy's name), and only then is the
//! original truncated or its header overwritten.

use std::process::{Command, Stdio};

use super::*;

/// The syscalls that make recovery's copies and cuts durable.
const TRACED: &str = "trace=fdatasync,fsync,ftruncate,pwrite64";

#[test]
fn recovery_syncs_each_quarantine_copy_and_its_directory_before_cutting_the_original() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    post_many(&server, 5);
    stop(&mut server);
    server.restart();
    post_many(&server, 5);
    stop(&mut server);
    let [first, second] = segment::list(&dir).expect("list")[..] else {
        panic!("two segments expected");
    };
    // The first segment's header is rebuilt, the second's tail is cut.
    rewrite(&dir, first, |bytes| bytes[20] ^= 0x01);
    let end = logical_end(&dir, second);
    rewrite(&dir, second, |bytes| {
        bytes.truncate(end);
        bytes.extend_from_slice(&[0xa5; 100]);
    });

    let trace = recovery_trace(&dir);
    let quarantine = dir.join(QUARANTINE_DIR).display().to_string();
    let overwrite = format!("{}>, \"BUSYWAL1", segment::path_of(&dir, first).display());
    let truncate = format!("{}>, {end})", segment::path_of(&dir, second).display());
    for (no, cut) in [(first, overwrite), (second, truncate)] {
        let cut_at = trace
            .iter()
            .position(|l| l.contains(&cut))
            .unwrap_or_else(|| panic!("no cut of segment {no} in:\n{}", trace.join("\n")));
        let copy = format!("{quarantine}/{no:020}-");
        let copied_at = trace[..cut_at]
            .iter()
            .rposition(|l| l.contains("sync") && l.contains(&copy))
            .unwrap_or_else(|| panic!("segment {no} cut before its copy was synced"));
        let dir_synced = format!("{quarantine}>)");
        assert!(
            trace[copied_at..cut_at]
                .iter()
                .any(|l| l.contains("sync") && l.contains(&dir_synced)),
            "segment {no} cut before the quarantine directory was synced:\n{}",
            trace[copied_at..=cut_at].join("\n")
        );
    }
}

/// Starts busyapi on `dir` under strace, stops it once it listens
/// (recovery is over), and returns the traced syscalls, paths resolved.
fn recovery_trace(dir: &Path) -> Vec<String> {
    let strace = common::which("strace")
        .expect("strace is not installed: scripts/test.sh installs it (apt-get install strace)");
    let out = dir.with_file_name("strace.out");
    let mut child = Command::new(strace)
        .args(["-f", "-y", "-qq", "-e", TRACED, "-o"])
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_busyapi"))
        .args(["--listen", "127.0.0.1:0", "--fresh-dir-ids", "from-one"])
        .args(["--wal-segment-bytes", "1MiB", "--shutdown-grace-secs", "0"])
        .args([
            "--mongodb-uri",
            &format!("mongodb://127.0.0.1:{}", common::free_port()),
        ])
        .arg("--data-dir")
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run busyapi under strace");
    let lines = common::stderr_lines(&mut child);
    let until = std::time::Instant::now() + STOP;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("busyapi did not start under strace");
            }
        }
    }
    // busyapi wrote its pid into the lock file; SIGTERM goes to it, and
    // strace exits with it.
    let pid: i32 = fs::read_to_string(dir.join("lock"))
        .expect("read the lock file")
        .trim()
        .parse()
        .expect("a pid in the lock file");
    // SAFETY: kill(2) on the pid of our own child's tracee.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let until = std::time::Instant::now() + STOP;
    while child.try_wait().expect("try_wait").is_none() {
        assert!(std::time::Instant::now() < until, "busyapi did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::read_to_string(&out)
        .expect("read the trace")
        .lines()
        .map(String::from)
        .collect()
}
