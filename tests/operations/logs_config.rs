//! Logs and configuration: stderr is logfmt at the level `RUST_LOG` asks
//! for and never carries a patient's data, whatever the level; a setting
//! comes from the flag, else the environment, else the `--config` file; a
//! bad setting stops the start with code 2 and names itself; `--help`
//! documents every flag.

use std::io::Write;
use std::path::Path;

use super::*;
use common::{Opts, USAGE, shared_mongo, unique_patient_ids};

/// Levels as the log prints them.
const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// Every flag, with the environment variable that can set it too.
const FLAGS: [(&str, &str); 21] = [
    ("config", "BUSYAPI_CONFIG"),
    ("listen", "BUSYAPI_LISTEN"),
    ("data-dir", "BUSYAPI_DATA_DIR"),
    ("mongodb-uri", "MONGODB_URI"),
    ("database", "BUSYAPI_DATABASE"),
    ("collection", "BUSYAPI_COLLECTION"),
    ("node-id", "BUSYAPI_NODE_ID"),
    ("workers", "BUSYAPI_WORKERS"),
    ("wal-max-bytes", "BUSYAPI_WAL_MAX_BYTES"),
    ("max-body-bytes", "BUSYAPI_MAX_BODY_BYTES"),
    ("flush-max-records", "BUSYAPI_FLUSH_MAX_RECORDS"),
    ("flush-interval-ms", "BUSYAPI_FLUSH_INTERVAL_MS"),
    ("flush-concurrency", "BUSYAPI_FLUSH_CONCURRENCY"),
    ("write-concern", "BUSYAPI_WRITE_CONCERN"),
    ("shutdown-grace-secs", "BUSYAPI_SHUTDOWN_GRACE_SECS"),
    ("shutdown-drain-ms", "BUSYAPI_SHUTDOWN_DRAIN_MS"),
    ("header-read-timeout-ms", "BUSYAPI_HEADER_READ_TIMEOUT_MS"),
    ("body-read-timeout-ms", "BUSYAPI_BODY_READ_TIMEOUT_MS"),
    ("idle-timeout-ms", "BUSYAPI_IDLE_TIMEOUT_MS"),
    ("max-connections", "BUSYAPI_MAX_CONNECTIONS"),
    ("metrics", "BUSYAPI_METRICS"),
];

/// Checks one line against `ts=<RFC 3339> level=<L> target=<t> msg="<m>"`
/// with every quote inside the message escaped.
fn assert_logfmt(line: &str) {
    let fail = |why: &str| -> ! { panic!("not logfmt ({why}): {line:?}") };
    let rest = line.strip_prefix("ts=").unwrap_or_else(|| fail("ts"));
    let (ts, rest) = rest.split_once(' ').unwrap_or_else(|| fail("ts"));
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(ts.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && ts.ends_with('Z'))
    {
        fail("ts is not RFC 3339 UTC");
    }
    let rest = rest.strip_prefix("level=").unwrap_or_else(|| fail("level"));
    let (level, rest) = rest.split_once(' ').unwrap_or_else(|| fail("level"));
    if !LEVELS.contains(&level) {
        fail("unknown level");
    }
    let rest = rest
        .strip_prefix("target=")
        .unwrap_or_else(|| fail("target"));
    let (target, rest) = rest.split_once(' ').unwrap_or_else(|| fail("target"));
    if target.is_empty() || target.contains('"') {
        fail("target");
    }
    let msg = rest
        .strip_prefix("msg=\"")
        .and_then(|m| m.strip_suffix('"'))
        .unwrap_or_else(|| fail("msg"));
    let mut escaped = false;
    for c in msg.chars() {
        match c {
            '"' if !escaped => fail("an unescaped quote in msg"),
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    if escaped {
        fail("msg ends in a lone backslash");
    }
}

fn level_of(line: &str) -> &str {
    line.split(" level=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
}

#[test]
fn every_log_line_is_logfmt_with_a_timestamp_a_level_a_target_and_a_quoted_message() {
    let mut s = Server::start(
        Opts::default()
            .env("RUST_LOG", "info")
            .arg("--shutdown-grace-secs 0"),
    );
    assert_eq!(s.post(USAGE).status, 201);
    assert_eq!(s.post("{").status, 400);
    // A warning quotes MongoDB's error, which has quotes of its own (the
    // open-auth warning at start is a WARN too, so wait for this one).
    wait_for(Duration::from_secs(30), "the MongoDB warning", || {
        s.logs().contains("MongoDB is unreachable")
    });
    assert_eq!(s.terminate(Duration::from_secs(30)).code(), Some(0));
    wait_for(Duration::from_secs(10), "the last log line", || {
        s.logs().contains("msg=\"stopped;")
    });
    let logs = s.logs();
    for line in logs.lines() {
        assert_logfmt(line);
    }
    let levels: BTreeSet<&str> = logs.lines().map(level_of).collect();
    assert!(levels.contains("INFO") && levels.contains("WARN"), "{logs}");
    assert!(
        !levels.contains("DEBUG") && !levels.contains("TRACE"),
        "RUST_LOG=info let through:\n{logs}"
    );
}

#[test]
fn a_data_dir_with_a_newline_a_quote_and_a_backslash_is_logged_escaped_and_every_line_stays_logfmt()
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("an \"odd\"\ndata\\dir");
    let s = Server::start(Opts::default().data_dir(&data));
    // Start-up logs the data directory ("WAL recovered in <dir>: ...")
    // before the "listening on" line that `Server::start` waits for.
    let logs = s.logs();
    for line in logs.lines() {
        assert_logfmt(line);
    }
    let escaped = data
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let recovered = format!("msg=\"WAL recovered in {escaped}: ");
    assert!(
        logs.lines().any(|l| l.contains(&recovered)),
        "no line holds {recovered:?}:\n{logs}"
    );
}

#[test]
fn rust_log_warn_hides_the_info_lines_and_keeps_the_warnings() {
    let mut s = Server::start(
        Opts::default()
            .env("RUST_LOG", "warn")
            .arg("--shutdown-grace-secs 0")
            .ready_on_connect(),
    );
    assert_eq!(s.post(USAGE).status, 201);
    wait_for(Duration::from_secs(30), "the MongoDB warning", || {
        s.logs().contains("MongoDB is unreachable")
    });
    assert_eq!(s.terminate(Duration::from_secs(30)).code(), Some(0));
    let logs = s.logs();
    for line in logs.lines() {
        assert_logfmt(line);
        assert!(
            matches!(level_of(line), "WARN" | "ERROR"),
            "RUST_LOG=warn let through: {line}"
        );
    }
    assert!(logs.lines().any(|l| level_of(l) == "WARN"), "{logs}");
}

#[test]
fn with_rust_log_trace_no_patient_data_and_no_body_content_reaches_the_logs() {
    const DB: &str = "operations_log_privacy";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    // A unique patientId makes MongoDB refuse the second usage with an
    // error message that quotes the key: that must not be logged either.
    unique_patient_ids(&coll);
    let marker = format!(
        "Zq{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let mut s = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .env("RUST_LOG", "trace")
            .arg("--shutdown-grace-secs 1"),
    );
    let usage = format!(
        r#"{{"patientId": "{marker}-patient", "timestamp": 1478009511000, "medication": "{marker}-medication"}}"#
    );
    let first = s.post(&usage).id();
    assert_eq!(s.post(&usage).status, 201);
    for bad in [
        format!(r#"{{"patientId": "{marker}-torn"#),
        format!(r#"{{"patientId": "{marker}", "timestamp": "{marker}", "medication": "x"}}"#),
        format!(r#"{{"patientId": "{marker}", "timestamp": 1, "medication": "x", "{marker}": 1}}"#),
        format!(
            r#"{{"patientId": "{marker}{}", "timestamp": 1, "medication": "x"}}"#,
            "p".repeat(200)
        ),
        format!(r#"[{{"patientId": "{marker}"}}]"#),
    ] {
        let r = s.post(&bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(
            !r.text().contains(&marker),
            "the 400 echoes the body: {}",
            r.text()
        );
    }
    wait_for(DELIVERY, "the first usage in MongoDB", || {
        mongo.ids(DB) == [first]
    });
    wait_for(DELIVERY, "MongoDB to refuse the second", || {
        metric(&s, "busyapi_mongo_errors_total{kind=\"write\"}") >= 1.0
    });
    assert_eq!(s.terminate(Duration::from_secs(30)).code(), Some(0));
    wait_for(Duration::from_secs(10), "the last log line", || {
        s.logs().contains("msg=\"stopped;")
    });
    let logs = s.logs();
    assert!(
        logs.lines().any(|l| level_of(l) == "TRACE"),
        "RUST_LOG=trace logged no trace line:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| level_of(l) == "ERROR" && l.contains("refused a document")),
        "MongoDB's refusal, the path that could quote the key, was not logged:\n{logs}"
    );
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(&marker)).collect();
    assert!(leaks.is_empty(), "patient data in the logs: {leaks:#?}");
}

/// Writes `text` to `name` in `dir`; returns its path as a string.
fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    path.to_str().expect("utf8").to_owned()
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        dir.path(),
        "busyapi.toml",
        "node_id = 7\nwal-max-bytes = \"3MiB\"\nflush_interval_ms = 20\nmetrics = true\n",
    );
    let config = format!("--config {file}");
    let env_node = ("BUSYAPI_NODE_ID", "8");
    for (opts, node) in [
        (Opts::default().arg(&config), 7),
        (Opts::default().arg(&config).env(env_node.0, env_node.1), 8),
        (
            Opts::default()
                .arg(&config)
                .env(env_node.0, env_node.1)
                .arg("--node-id 9"),
            9,
        ),
    ] {
        let s = Server::start(opts);
        let stats = s.stats();
        assert_eq!(stats["nodeId"], node, "{stats}");
        // What nothing overrides still comes from the file.
        assert_eq!(stats["walMaxBytes"], 3 << 20, "{stats}");
        // The node id is in every id the node hands out.
        let id = s.post(USAGE).id();
        assert_eq!(id >> 43, node, "id {id} is not from node {node}");
    }
}

/// Bad flag values; each message must name the flag (its first word).
const BAD_FLAGS: [&str; 22] = [
    "--node-id 5000",
    "--node-id=-1",
    "--wal-max-bytes lots",
    "--wal-max-bytes 10",
    "--workers 0",
    "--max-body-bytes 2GiB",
    "--flush-max-records 0",
    "--flush-interval-ms 0",
    "--flush-concurrency 99",
    "--write-concern sometimes",
    "--shutdown-grace-secs 4000",
    "--shutdown-drain-ms 70000",
    "--header-read-timeout-ms 1",
    "--body-read-timeout-ms 1",
    "--idle-timeout-ms 1",
    "--max-connections 0",
    "--mongodb-uri http://x",
    "--database a/b",
    "--collection a$b",
    "--listen nowhere",
    "--metrics maybe",
    "--no-such-flag",
];

/// Starts busyapi with `args` and `env` and expects it to refuse: exit
/// code 2, a message that contains `names`, and nothing started.
fn assert_refused_start(data: &Path, args: &[&str], env: &[(&str, &str)], names: &str) {
    let mut argv = vec!["--data-dir", data.to_str().expect("utf8")];
    argv.extend(args);
    let out = run_to_exit(&argv, env);
    let what = format!("{args:?} {env:?}");
    assert_eq!(out.code, Some(2), "{what}: {}", out.stderr);
    assert!(
        out.stderr.contains(names),
        "{what}: the message does not name {names}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("listening"), "{what} started");
    assert!(!data.exists(), "{what} made its WAL before refusing");
}

#[test]
fn a_bad_setting_in_the_file_the_environment_or_a_flag_exits_with_2_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for bad in BAD_FLAGS {
        let args: Vec<&str> = bad.split_whitespace().collect();
        let flag = args[0].split('=').next().expect("a flag");
        assert_refused_start(&data, &args, &[], flag);
    }
    for (var, value, flag) in [
        ("BUSYAPI_NODE_ID", "abc", "--node-id"),
        ("BUSYAPI_WAL_MAX_BYTES", "lots", "--wal-max-bytes"),
        ("BUSYAPI_IDLE_TIMEOUT_MS", "0", "--idle-timeout-ms"),
    ] {
        assert_refused_start(&data, &[], &[(var, value)], flag);
    }
    for (name, text, names) in [
        (
            "unknown.toml",
            "node_id = 1\nbogus_setting = 1\n",
            "bogus_setting",
        ),
        ("range.toml", "max_connections = 0\n", "--max-connections"),
        ("type.toml", "node_id = [1]\n", "node_id"),
        ("syntax.toml", "node_id = \n", "--config"),
    ] {
        let file = write_file(dir.path(), name, text);
        assert_refused_start(&data, &["--config", &file], &[], names);
    }
}

#[test]
fn help_documents_every_flag_with_its_environment_variable_and_its_default() {
    let out = run_to_exit(&["--help"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let help = out.stdout;
    // Each flag's block runs from its `--name` line to the next flag's.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed
            .strip_prefix("--")
            .filter(|_| line.starts_with("      --"))
        {
            let name = rest.split([' ', '\n']).next().unwrap_or_default();
            blocks.push((name.to_owned(), String::new()));
        } else if trimmed.starts_with('-') && line.starts_with("  -") {
            blocks.push((trimmed.to_owned(), String::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    for (flag, env) in FLAGS {
        let (_, block) = blocks
            .iter()
            .find(|(name, _)| name == flag)
            .unwrap_or_else(|| panic!("--help does not mention --{flag}:\n{help}"));
        assert!(
            block.contains(&format!("[env: {env}")),
            "--{flag} does not name {env}:\n{block}"
        );
    }
    // Flags added later are held to the same rule: every setting can come
    // from the environment and says its default (STYLE.md, rule 3).
    for (flag, block) in blocks.iter().filter(|(n, _)| !n.starts_with('-')) {
        assert!(
            block.contains("[env: "),
            "--{flag} names no variable:\n{block}"
        );
        if flag != "config" {
            assert!(
                block.contains("default"),
                "--{flag} does not give its default:\n{block}"
            );
        }
    }
}
