//! The deployment kit in `scripts/deploy/`, checked: every Kubernetes
//! manifest parses and carries what a durable node needs, the HAProxy and
//! nginx templates are accepted by the real `haproxy` and `nginx` binaries
//! (Debian packages; `scripts/test.sh` installs them, and these tests fail
//! rather than skip when they are missing), nginx with the kit's settings
//! really retries a refused POST on another node, and the systemd unit has
//! its required keys (and passes `systemd-analyze verify` where systemd is).
//! The Prometheus alerting rules pass `promtool check` and their unit tests,
//! and they and the Grafana dashboard name only metrics busyapi exports.
//!
//! Numbers that must agree across files (drain, grace, ports, names) are
//! read from the files themselves and compared, so the kit cannot drift.
//!
//! | module             | what it covers                                      |
//! |--------------------|-----------------------------------------------------|
//! | [`kubernetes`]     | manifests, StatefulSet, probes, grace, HPA, Secret  |
//! | [`load_balancers`] | HAProxy and nginx: accepted, drain, retry on 503    |
//! | [`tls`]            | HAProxy and nginx terminate TLS; TLS 1.1 refused    |
//! | [`systemd`]        | the unit's keys, its stop timeout, systemd's verify |
//! | [`scripts`]        | run.sh defers to a config file; dev-mongo.sh's port |
//! | [`monitoring`]     | alert rules, scrape config, Grafana dashboard       |
mod common;

#[path = "deploy_kit/kubernetes.rs"]
mod kubernetes;
#[path = "deploy_kit/load_balancers.rs"]
mod load_balancers;
#[path = "deploy_kit/monitoring.rs"]
mod monitoring;
#[path = "deploy_kit/scripts.rs"]
mod scripts;
#[path = "deploy_kit/systemd.rs"]
mod systemd;
#[path = "deploy_kit/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use yaml_rust2::{Yaml, YamlLoader};

use common::which;

fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(kit(path)).unwrap_or_else(|e| panic!("scripts/deploy/{path}: {e}"))
}

/// The one YAML document of a manifest file.
fn manifest(path: &str) -> Yaml {
    let mut docs = manifests(path);
    assert_eq!(docs.len(), 1, "{path} holds one document");
    docs.remove(0)
}

fn manifests(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn int(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {y:?}"))
}

fn items<'a>(y: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

/// A binary the kit is checked with: missing, the test fails and says how
/// to install it.
fn required(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed: `apt-get install {name}` (scripts/test.sh installs it); the kit is checked with the real binary, never skipped")
    })
}

/// `KEY=value` lines of an env file, comments skipped.
fn env_file(path: &str) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{path}: not KEY=value: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
