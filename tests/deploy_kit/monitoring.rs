//! The alerting rules, the Prometheus scrape configuration and the Grafana
//! dashboard: accepted by the real `promtool` (and its unit tests of the
//! rules pass), every metric they name is one the real binary exports,
//! every alert tells the operator what to do and links docs that exist, and
//! the dashboard shows every family busyapi exports.

use std::collections::BTreeSet;
use std::process::Command;

use super::*;
use common::{Opts, Scrape, Server};

const RULES: &str = "prometheus/busyapi-alerts.yml";
const RULE_TESTS: &str = "prometheus/busyapi-alerts.test.yml";
const SCRAPE_CONFIG: &str = "prometheus/prometheus.yml";
const DASHBOARD: &str = "grafana/busyapi-dashboard.json";

/// Metrics the kit may name before busyapi exports them, each with the
/// change that adds it. Remove a name once that change has landed: the
/// test below fails as soon as the binary exports a name still listed.
const NOT_YET_EXPORTED: &[(&str, &str)] = &[];

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new(required("promtool"))
        .args(args)
        .current_dir(kit("prometheus"))
        .output()
        .expect("run promtool")
}

fn rule_list() -> Vec<Yaml> {
    let doc = manifest(RULES);
    items(&doc["groups"], "groups")
        .iter()
        .flat_map(|g| items(&g["rules"], "a group's rules").clone())
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_the_scrape_config_and_the_rules_pass_their_unit_tests() {
    assert_ok(
        &promtool(&["check", "rules", "busyapi-alerts.yml"]),
        "promtool check rules",
    );
    // check config also loads and checks every rule file it names.
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert_ok(&out, "promtool check config");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("busyapi-alerts.yml"),
        "prometheus.yml does not load the kit's rules"
    );
    assert_ok(
        &promtool(&["test", "rules", "busyapi-alerts.test.yml"]),
        "promtool test rules",
    );

    // The unit tests cover the alerts an operator is paged for first.
    let tested = read(RULE_TESTS);
    for alert in ["BusyapiMongoDown", "BusyapiNotReady"] {
        assert!(
            tested.contains(&format!("alertname: {alert}")),
            "{RULE_TESTS} has no case for {alert}"
        );
    }
}

#[test]
fn the_scrape_config_targets_the_kits_admin_port_under_the_job_name_the_rules_match() {
    let config = manifest(SCRAPE_CONFIG);
    let jobs = items(&config["scrape_configs"], "scrape_configs");
    assert_eq!(jobs.len(), 1, "one scrape job");
    let job = text(&jobs[0]["job_name"], "job_name");
    let down = rule_list()
        .into_iter()
        .find(|r| r["alert"].as_str() == Some("BusyapiDown"))
        .expect("a BusyapiDown rule");
    assert!(
        text(&down["expr"], "expr").contains(&format!("job=\"{job}\"")),
        "BusyapiDown does not match the scrape job {job:?}"
    );
    // /metrics is served on the admin address only.
    let listen = &env_file("busyapi.env")["BUSYAPI_ADMIN_LISTEN"];
    let port = listen.rsplit_once(':').expect("host:port").1;
    for target in items(&jobs[0]["static_configs"][0]["targets"], "targets") {
        let target = text(target, "a target");
        assert_eq!(
            target.rsplit_once(':').map(|(_, p)| p),
            Some(port),
            "{target} is not on busyapi.env's port ({listen})"
        );
    }
}

/// Every identifier that starts with `busyapi_` in `text`: PromQL's metric
/// names (labels and functions never carry the prefix).
fn busyapi_names(text: &str, into: &mut BTreeSet<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = text;
    while let Some(at) = rest.find("busyapi_") {
        let starts_word = !rest[..at].ends_with(is_ident);
        let tail = &rest[at..];
        let end = tail.find(|c| !is_ident(c)).unwrap_or(tail.len());
        if starts_word {
            into.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
}

/// The names a query may use (each family; a histogram's `_bucket`,
/// `_sum` and `_count`), from the `# TYPE` lines of a scrape.
fn queryable(scrape: &Scrape) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut families, mut series) = (BTreeSet::new(), BTreeSet::new());
    for rest in scrape
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
    {
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        families.insert(name.to_owned());
        if kind == "histogram" {
            series.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        } else {
            series.insert(name.to_owned());
        }
    }
    (families, series)
}

/// Every string in a JSON document, and whether it is a query (`expr`).
fn json_strings<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<(bool, &'a str)>) {
    match v {
        serde_json::Value::String(s) => out.push((key == "expr", s)),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, key, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| json_strings(v, k, out)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The names the rules and the dashboard query, and those they mention in
/// prose (annotations, panel descriptions, templating).
fn kit_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut queried, mut mentioned) = (BTreeSet::new(), BTreeSet::new());
    for rule in rule_list() {
        busyapi_names(text(&rule["expr"], "expr"), &mut queried);
        for (_, v) in rule["annotations"].as_hash().expect("annotations") {
            busyapi_names(text(v, "an annotation"), &mut mentioned);
        }
    }
    let dash = dashboard();
    let mut strings = Vec::new();
    json_strings(&dash, "", &mut strings);
    for (is_query, s) in strings {
        busyapi_names(
            s,
            if is_query {
                &mut queried
            } else {
                &mut mentioned
            },
        );
    }
    (queried, mentioned)
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_one_busyapi_exports() {
    let s = Server::start(Opts::default());
    let scrape = Scrape::of(&s);
    let (families, series) = queryable(&scrape);
    let pending: BTreeSet<&str> = NOT_YET_EXPORTED.iter().map(|(n, _)| *n).collect();
    for (name, change) in NOT_YET_EXPORTED {
        assert!(
            !families.contains(*name),
            "busyapi now exports {name} ({change} has landed): remove it from NOT_YET_EXPORTED"
        );
    }
    let (queried, mentioned) = kit_names();
    assert!(queried.len() >= 10, "too few names found: {queried:?}");
    let unknown: Vec<&String> = queried
        .iter()
        .filter(|n| !series.contains(*n) && !pending.contains(n.as_str()))
        .chain(
            mentioned
                .iter()
                .filter(|n| !families.contains(*n) && !series.contains(*n)),
        )
        .collect();
    assert!(
        unknown.is_empty(),
        "the kit names metrics busyapi does not export: {unknown:?}\nexported: {series:?}"
    );
    for name in &pending {
        assert!(
            queried.contains(*name),
            "{name} is in NOT_YET_EXPORTED but nothing queries it"
        );
    }
}

#[test]
fn the_dashboard_shows_every_family_busyapi_exports_and_its_queries_parse() {
    let s = Server::start(Opts::default());
    let (families, _) = queryable(&Scrape::of(&s));
    let dash = dashboard();
    let mut strings = Vec::new();
    json_strings(&dash["panels"], "", &mut strings);
    let queries: Vec<&str> = strings
        .iter()
        .filter(|(q, _)| *q)
        .map(|(_, s)| *s)
        .collect();
    let shown = |family: &str| {
        queries.iter().any(|q| {
            let mut names = BTreeSet::new();
            busyapi_names(q, &mut names);
            names.iter().any(|n| {
                n == family
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| n.strip_suffix(s) == Some(family))
            })
        })
    };
    let missing: Vec<&String> = families.iter().filter(|f| !shown(f)).collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");

    // promtool parses PromQL only in rule files: each panel query becomes a
    // recording rule, with Grafana's variables replaced by what they expand to.
    let rules: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q
                .replace("$__rate_interval", "1m")
                .replace("$__range", "6h")
                .replace("$instance", ".*");
            format!(
                "      - record: busyapi:dashboard_query_{i}\n        expr: {}\n",
                serde_json::to_string(&q).expect("a JSON string is a YAML string")
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &file,
        format!(
            "groups:\n  - name: dashboard\n    rules:\n{}",
            rules.concat()
        ),
    )
    .expect("write rules");
    let out = promtool(&["check", "rules", file.to_str().expect("utf-8 path")]);
    assert_ok(&out, "promtool check rules on the dashboard's queries");
}

#[test]
fn every_alert_says_what_it_means_and_what_to_do_and_links_a_doc_heading_that_exists() {
    let rules = rule_list();
    assert!(rules.len() >= 7, "{} rules", rules.len());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for rule in &rules {
        let name = text(&rule["alert"], "alert");
        let severity = text(&rule["labels"]["severity"], "severity");
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity}"
        );
        let a = &rule["annotations"];
        assert!(
            text(&a["summary"], "summary").len() >= 20,
            "{name}: summary too short"
        );
        assert!(
            text(&a["description"], "description").len() >= 100,
            "{name}: the description must say what to do"
        );
        let runbook = text(&a["runbook"], "runbook");
        let (path, heading) = runbook
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} has no #heading"));
        let doc = std::fs::read_to_string(repo.join(path))
            .unwrap_or_else(|e| panic!("{name}: runbook {runbook}: {e}"));
        assert!(
            common::anchors_of(&doc).contains(heading),
            "{name}: {path} has no heading #{heading}"
        );
    }
}
