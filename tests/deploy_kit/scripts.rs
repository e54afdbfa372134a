//! The project's own scripts, run for real: `scripts/run.sh` adds a data
//! directory and a dev MongoDB only where nothing else configures them, and
//! `scripts/dev-mongo.sh` refuses a port that another server answers on
//! instead of taking that server for its own, and keeps an installed
//! virtualenv however pip writes its output.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
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

/// A `pip` that answers `show` with the wanted version first and the rest
/// of its output a moment later, as a slow pip can, and logs its calls.
const SLOW_PIP: &str = r#"#!/usr/bin/env bash
echo "pip $*" >> "$CALLS"
if [[ $1 == show ]]; then
  echo "Name: SecantusDB"
  echo "Version: $WANTED"
  sleep 0.3
  for _ in $(seq 200); do echo "Requires: pymongo"; done
fi
"#;

/// A `python3` that has venv (`-c 'import ensurepip, venv'` succeeds) but
/// logs and refuses making one, so a reinstall shows and goes no further.
const NO_VENV_PYTHON: &str = r#"#!/usr/bin/env bash
echo "python3 $*" >> "$CALLS"
[[ $1 == -c ]]
"#;

#[test]
fn dev_mongo_sh_keeps_an_installed_venv_when_pip_writes_after_the_version_line() {
    let script = std::fs::read_to_string(format!("{ROOT}/scripts/dev-mongo.sh")).expect("read");
    let wanted = script
        .lines()
        .find_map(|l| l.strip_prefix("SECANTUS_VERSION=\""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("SECANTUS_VERSION in dev-mongo.sh");
    let root = tempfile::tempdir().expect("tempdir");
    let bin = root.path().join(".venv/bin");
    std::fs::create_dir_all(&bin).expect("venv dir");
    std::fs::create_dir_all(root.path().join("scripts")).expect("scripts dir");
    std::fs::create_dir_all(root.path().join("fakebin")).expect("fakebin dir");
    for (path, text) in [
        ("scripts/dev-mongo.sh", script.as_str()),
        (".venv/bin/pip", SLOW_PIP),
        (".venv/bin/secantusd-py", "#!/bin/sh\n"),
        ("fakebin/python3", NO_VENV_PYTHON),
    ] {
        let path = root.path().join(path);
        std::fs::write(&path, text).expect("write a script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let calls = root.path().join("calls");
    let path = format!(
        "{}:{}",
        root.path().join("fakebin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(root.path().join("scripts/dev-mongo.sh"))
        .arg("install")
        .env("WANTED", wanted)
        .env("CALLS", &calls)
        .env("PATH", path)
        .output()
        .expect("run dev-mongo.sh install");
    let calls = std::fs::read_to_string(&calls).expect("pip was asked");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["pip show SecantusDB"],
        "an installed venv of the wanted version was made again"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
