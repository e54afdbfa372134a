//! The Kubernetes manifests in `scripts/deploy/k8s/`: they parse, the
//! kustomization applies them all, each pod keeps its WAL on its own volume,
//! and the numbers they share with busyapi and with each other agree.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use super::*;
use common::{Opts, Server};

/// The environment variables busyapi reads, from its own `--help`.
fn busyapi_env_vars() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .arg("--help")
        .output()
        .expect("busyapi --help");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().expect("a name").to_owned())
        .collect()
}

fn config_map() -> BTreeMap<String, String> {
    let cm = manifest("k8s/configmap.yaml");
    assert_eq!(text(&cm["kind"], "kind"), "ConfigMap");
    cm["data"]
        .as_hash()
        .expect("ConfigMap data")
        .iter()
        .map(|(k, v)| {
            (
                text(k, "a key").to_owned(),
                text(v, "ConfigMap values are strings").to_owned(),
            )
        })
        .collect()
}

fn container(sts: &Yaml) -> &Yaml {
    let containers = items(&sts["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "one busyapi container per pod");
    &containers[0]
}

fn env_var<'a>(c: &'a Yaml, name: &str) -> &'a Yaml {
    items(&c["env"], "env")
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the container sets no {name}"))
}

#[test]
fn every_kubernetes_manifest_parses_and_the_kustomization_lists_each_one() {
    let dir = kit("k8s");
    let mut files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("scripts/deploy/k8s")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    assert!(files.remove("kustomization.yaml"), "a kustomization.yaml");
    for f in &files {
        for doc in manifests(&format!("k8s/{f}")) {
            assert!(
                doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                "{f}: apiVersion and kind"
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{f}: metadata.name"
            );
        }
    }
    let k = manifest("k8s/kustomization.yaml");
    let listed: BTreeSet<String> = items(&k["resources"], "resources")
        .iter()
        .map(|r| text(r, "a resource").to_owned())
        .collect();
    assert_eq!(
        listed, files,
        "the kustomization applies every manifest, and only those"
    );
}

#[test]
fn the_statefulset_keeps_each_pods_wal_on_its_own_volume_and_probes_readyz_and_healthz() {
    let sts = manifest("k8s/statefulset.yaml");
    assert_eq!(
        text(&sts["kind"], "kind"),
        "StatefulSet",
        "a StatefulSet: each pod's WAL must outlive the pod"
    );
    assert_eq!(text(&sts["apiVersion"], "apiVersion"), "apps/v1");
    let claims = items(&sts["spec"]["volumeClaimTemplates"], "volumeClaimTemplates");
    assert_eq!(claims.len(), 1);
    let claim = text(&claims[0]["metadata"]["name"], "claim name");
    assert_eq!(
        text(&claims[0]["spec"]["accessModes"][0], "accessModes"),
        "ReadWriteOnce"
    );
    let c = container(&sts);
    let data_dir = config_map()
        .remove("BUSYAPI_DATA_DIR")
        .expect("BUSYAPI_DATA_DIR in the ConfigMap");
    let mounted = items(&c["volumeMounts"], "volumeMounts").iter().any(|m| {
        m["name"].as_str() == Some(claim) && m["mountPath"].as_str() == Some(data_dir.as_str())
    });
    assert!(
        mounted,
        "the claim {claim} is mounted at the data dir {data_dir}"
    );
    assert_eq!(
        text(
            &sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "whenScaled"
        ),
        "Retain"
    );

    assert_eq!(
        text(&c["readinessProbe"]["httpGet"]["path"], "readiness path"),
        "/readyz"
    );
    assert_eq!(
        text(&c["livenessProbe"]["httpGet"]["path"], "liveness path"),
        "/healthz"
    );
    let listen = config_map()
        .remove("BUSYAPI_LISTEN")
        .expect("BUSYAPI_LISTEN");
    let port = &items(&c["ports"], "ports")[0];
    assert_eq!(
        listen.rsplit(':').next(),
        Some(
            int(&port["containerPort"], "containerPort")
                .to_string()
                .as_str()
        )
    );
    let port_name = text(&port["name"], "port name");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["port"].as_str(),
            Some(port_name),
            "{probe} uses the named port"
        );
    }
}

#[test]
fn the_admin_port_is_the_configmaps_admin_address_and_prometheus_is_told_to_scrape_it() {
    let sts = manifest("k8s/statefulset.yaml");
    let admin = config_map()
        .remove("BUSYAPI_ADMIN_LISTEN")
        .expect("BUSYAPI_ADMIN_LISTEN");
    let admin_port = admin.rsplit(':').next().expect("host:port");
    let port = items(&container(&sts)["ports"], "ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .expect("a port named admin");
    assert_eq!(
        int(&port["containerPort"], "containerPort").to_string(),
        admin_port
    );
    let annotations = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        text(&annotations["prometheus.io/port"], "prometheus.io/port"),
        admin_port
    );
    assert_eq!(
        text(&annotations["prometheus.io/path"], "prometheus.io/path"),
        "/metrics"
    );
}

#[test]
fn termination_grace_outlasts_the_drain_and_the_flushers_grace_and_the_drain_outlasts_readiness() {
    let sts = manifest("k8s/statefulset.yaml");
    let cm = config_map();
    let drain_ms: i64 = cm["BUSYAPI_SHUTDOWN_DRAIN_MS"].parse().expect("drain ms");
    let grace_secs: i64 = cm["BUSYAPI_SHUTDOWN_GRACE_SECS"]
        .parse()
        .expect("grace secs");
    let tgps = int(
        &sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        tgps * 1000 > drain_ms + grace_secs * 1000,
        "{tgps} s must exceed drain {drain_ms} ms + grace {grace_secs} s"
    );
    // Until the pod is out of every endpoint list it must keep serving.
    let r = &container(&sts)["readinessProbe"];
    let readiness_ms = int(&r["periodSeconds"], "periodSeconds")
        * int(&r["failureThreshold"], "failureThreshold")
        * 1000;
    assert!(
        drain_ms > readiness_ms,
        "drain {drain_ms} ms must outlast readiness detection {readiness_ms} ms"
    );
}

#[test]
fn the_node_id_is_the_pod_ordinal_and_the_hpa_never_outgrows_the_id_range() {
    let sts = manifest("k8s/statefulset.yaml");
    let id = env_var(container(&sts), "BUSYAPI_NODE_ID");
    assert_eq!(
        text(&id["valueFrom"]["fieldRef"]["fieldPath"], "fieldPath"),
        "metadata.labels['apps.kubernetes.io/pod-index']",
        "the ordinal label the StatefulSet controller sets on each pod"
    );
    let hpa = manifest("k8s/hpa.yaml");
    assert!(
        int(&hpa["spec"]["maxReplicas"], "maxReplicas") <= 1024,
        "node ids are 0..1023"
    );
}

#[test]
fn the_hpa_scales_the_statefulset_on_cpu() {
    let hpa = manifest("k8s/hpa.yaml");
    let sts = manifest("k8s/statefulset.yaml");
    assert_eq!(text(&hpa["apiVersion"], "apiVersion"), "autoscaling/v2");
    assert_eq!(text(&hpa["kind"], "kind"), "HorizontalPodAutoscaler");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(text(&target["kind"], "target kind"), "StatefulSet");
    assert_eq!(target["name"], sts["metadata"]["name"]);
    let metrics = items(&hpa["spec"]["metrics"], "metrics");
    assert!(
        metrics
            .iter()
            .any(|m| m["resource"]["name"].as_str() == Some("cpu")
                && m["resource"]["target"]["type"].as_str() == Some("Utilization"))
    );
    let min = int(&hpa["spec"]["minReplicas"], "minReplicas");
    assert!(
        min >= 2 && min <= int(&hpa["spec"]["maxReplicas"], "maxReplicas"),
        "at least two pods, so one can restart"
    );
    let cpu = &container(&sts)["resources"]["requests"]["cpu"];
    assert!(
        cpu.as_str().is_some() || cpu.as_i64().is_some(),
        "utilization needs a CPU request"
    );
}

#[test]
fn the_mongodb_uri_comes_from_the_secret_and_every_setting_is_one_busyapi_reads() {
    let sts = manifest("k8s/statefulset.yaml");
    let secret = manifest("k8s/secret.yaml");
    let c = container(&sts);
    let from = &env_var(c, "MONGODB_URI")["valueFrom"]["secretKeyRef"];
    assert_eq!(from["name"], secret["metadata"]["name"]);
    let key = text(&from["key"], "secret key");
    assert!(text(&secret["stringData"][key], "the URI").starts_with("mongodb"));
    let cm_name = &manifest("k8s/configmap.yaml")["metadata"]["name"];
    assert!(
        items(&c["envFrom"], "envFrom")
            .iter()
            .any(|e| &e["configMapRef"]["name"] == cm_name)
    );

    let known = busyapi_env_vars();
    let set: Vec<String> = config_map()
        .into_keys()
        .chain(env_file("busyapi.env").into_keys())
        .collect();
    for name in set {
        assert!(
            known.contains(&name),
            "{name} is not a busyapi setting (busyapi --help lists {known:?})"
        );
    }
}

/// The keys file as the `busyapi-api-keys` Secret holds it.
fn api_keys_file() -> String {
    let secret = manifest("k8s/api-keys-secret.yaml");
    text(&secret["stringData"]["api-keys.toml"], "api-keys.toml").to_owned()
}

#[test]
fn usages_need_an_api_key_whose_file_is_the_mounted_secret() {
    let cm = config_map();
    assert_eq!(cm["BUSYAPI_AUTH"], "required");
    let path = Path::new(&cm["BUSYAPI_API_KEYS_FILE"]);
    let sts = manifest("k8s/statefulset.yaml");
    let volumes = items(&sts["spec"]["template"]["spec"]["volumes"], "volumes");
    let keys = volumes
        .iter()
        .find(|v| v["secret"]["secretName"].as_str() == Some("busyapi-api-keys"))
        .expect("a volume of the busyapi-api-keys Secret");
    let mount = items(&container(&sts)["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == keys["name"])
        .expect("the keys volume is mounted");
    assert!(
        mount["subPath"].is_badvalue(),
        "a subPath mount never updates"
    );
    let dir = text(&mount["mountPath"], "mountPath");
    assert_eq!(path, Path::new(dir).join("api-keys.toml"));
    let entries = busyapi::http::auth::parse(&api_keys_file()).expect("the keys file parses");
    assert!(!entries.is_empty());
}

#[test]
fn busyapi_starts_and_is_ready_with_the_configmaps_settings() {
    // Listen addresses and data dir come from the harness (flags win over
    // the environment; a fixed admin port could be taken on this machine);
    // everything else is the ConfigMap's, the keys file that of the Secret,
    // at a path of the test's own.
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("api-keys.toml");
    std::fs::write(&keys, api_keys_file()).expect("write the keys file");
    let mut opts = Opts::default().arg("--admin-listen 127.0.0.1:0");
    for (k, v) in config_map() {
        opts = opts.env(&k, &v);
    }
    let mut server = Server::start(opts.env("BUSYAPI_API_KEYS_FILE", &keys.display().to_string()));
    assert_eq!(server.get("/readyz").status, 200, "log:\n{}", server.logs());
    assert_eq!(server.get("/metrics").status, 404, "not on the public port");
    let mut admin = common::Http::connect(server.admin_addr());
    admin.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(admin.response().status, 200, "on the admin port");
    assert_eq!(server.post(common::USAGE).status, 401, "usages need a key");
    assert!(server.terminate(Duration::from_secs(60)).success());
}

#[test]
fn the_services_select_the_pods_and_the_headless_one_governs_the_statefulset() {
    let sts = manifest("k8s/statefulset.yaml");
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let services = manifests("k8s/services.yaml");
    assert_eq!(
        services.len(),
        2,
        "a headless Service and a ClusterIP Service"
    );
    for s in &services {
        assert_eq!(text(&s["kind"], "kind"), "Service");
        for (k, v) in s["spec"]["selector"].as_hash().expect("selector") {
            assert_eq!(
                &labels[text(k, "label")],
                v,
                "the pods carry the selector's labels"
            );
        }
        let port_name = text(&container(&sts)["ports"][0]["name"], "port name");
        assert_eq!(
            s["spec"]["ports"][0]["targetPort"].as_str(),
            Some(port_name)
        );
        for port in items(&s["spec"]["ports"], "ports") {
            assert_ne!(
                port["targetPort"].as_str(),
                Some("admin"),
                "a Service exposes the admin port"
            );
        }
    }
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(headless["metadata"]["name"], sts["spec"]["serviceName"]);
    assert!(
        services
            .iter()
            .any(|s| s["spec"]["type"].as_str() == Some("ClusterIP"))
    );
}
