//! The systemd unit: it restarts always, keeps the WAL in its state
//! directory, outlasts the stop sequence, and passes `systemd-analyze
//! verify` where systemd is.

use std::process::Command;

use super::*;

/// `[Section]` → key → values (a key may repeat).
fn unit_file(path: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']))
    {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{path}: not key=value: {line}"));
        assert!(!current.is_empty(), "{path}: {k} outside a section");
        sections
            .entry(current.clone())
            .or_default()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_restarts_always_keeps_the_wal_and_outlasts_the_stop_sequence() {
    let unit = unit_file("busyapi.service");
    let service = &unit["Service"];
    let one = |k: &str| -> &str {
        service
            .get(k)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("[Service] {k}"))
    };
    assert_eq!(one("Restart"), "always");
    assert!(
        one("LimitNOFILE").parse::<u64>().expect("LimitNOFILE") > 10_000,
        "above --max-connections"
    );
    let state = one("StateDirectory");
    assert!(
        one("ExecStart").contains(&format!("--data-dir /var/lib/{state}")),
        "the WAL is in the state directory"
    );
    assert!(
        one("EnvironmentFile").starts_with('/'),
        "a required env file (MONGODB_URI, node id)"
    );
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "ProtectHome",
        "DynamicUser",
    ] {
        assert!(service.contains_key(key), "hardening: {key}");
    }
    let env = env_file("busyapi.env");
    let drain_s = env["BUSYAPI_SHUTDOWN_DRAIN_MS"]
        .parse::<u64>()
        .expect("drain")
        / 1000;
    let grace_s: u64 = env["BUSYAPI_SHUTDOWN_GRACE_SECS"].parse().expect("grace");
    let stop_s: u64 = one("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop_s > drain_s + grace_s,
        "TimeoutStopSec {stop_s} s vs drain {drain_s} s + grace {grace_s} s"
    );
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
    assert!(
        one("ExecStart").contains("--auth required --api-keys-file /etc/busyapi/api-keys.toml"),
        "usages need a key"
    );
    assert_eq!(
        one("ExecReload"),
        "/bin/kill -HUP $MAINPID",
        "reload is SIGHUP"
    );
    let keys = busyapi::http::auth::parse(&read("api-keys.toml")).expect("api-keys.toml parses");
    assert!(
        keys.iter().all(|k| k.digest == [0; 32]),
        "the shipped file holds only a placeholder no key matches"
    );

    // systemd's own check, where systemd is: the unit as shipped, with
    // ExecStart pointed at the binary just built (verify wants it to exist).
    if let Some(analyze) = which("systemd-analyze") {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busyapi.service");
        std::fs::write(
            &path,
            read("busyapi.service")
                .replace("/usr/local/bin/busyapi", env!("CARGO_BIN_EXE_busyapi")),
        )
        .expect("write");
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze verify");
        assert_ok(&out, "systemd-analyze verify");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.trim().is_empty(),
            "systemd-analyze verify has remarks:\n{said}"
        );
    }
}
