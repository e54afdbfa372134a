//! The project's own scripts, run for real: `scripts/run.sh` adds a data
//! directory and a dev MongoDB only where nothing else configures them, and
//! `scripts/dev-mongo.sh` refuses a port that another server answers on
//! instead of taking that server for its own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::common::shared_mongo;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn run_sh_leaves_the_data_dir_and_mongodb_to_a_config_file_that_sets_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("from-the-file");
    let config = tmp.path().join("busyapi.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nmongodb_uri = \"{}\"\n",
            data_dir.display(),
            shared_mongo().uri()
        ),
    )
    .expect("write the config file");
    let mut child = Command::new(format!("{ROOT}/scripts/run.sh"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("BUSYAPI_BIN", env!("CARGO_BIN_EXE_busyapi"))
        .env_remove("MONGODB_URI")
        .env_remove("BUSYAPI_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run scripts/run.sh");
    let pgid = child.id() as i32;
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = Vec::new();
    for line in stderr.lines() {
        let line = line.expect("a log line");
        let up = line.contains("listening on http://");
        log.push(line);
        if up {
            break;
        }
    }
    // SAFETY: kill(2) on the process group this test started.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let out = child.wait_with_output().expect("run.sh's exit");
    let log = log.join("\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains(&format!("WAL recovered in {}", data_dir.display())),
        "the file's data_dir was not used:\n{log}"
    );
    assert!(
        !stdout.contains("dev MongoDB"),
        "a dev MongoDB was started although the file names one:\n{stdout}"
    );
}

#[test]
fn dev_mongo_sh_refuses_a_port_another_server_answers_on() {
    // Bound at once on a port the kernel picks: asking for a free port and
    // binding it after can lose the port to another socket in between.
    let other = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = other.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(format!("{ROOT}/scripts/dev-mongo.sh"))
        .args(["start", &port.to_string()])
        .arg(dir.path())
        .output()
        .expect("run scripts/dev-mongo.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "it took the other server for its own"
    );
    assert!(stderr.contains("already in use"), "{stderr}");
}
