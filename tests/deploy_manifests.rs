//! The manifests in deploy/ parse, have the kinds and fields they need, fit
//! together (service accounts, roles, bindings), and keep edge RBAC minimal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use e2e_tests::repo;
use serde::Deserialize;
use serde_json::Value;

fn docs() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    let mut files = vec![];
    for dir in ["deploy", "deploy/rbac", "deploy/crds"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in yaml_serde::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            let kind = v["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: document without kind", f.display()))
                .to_owned();
            assert!(
                v["apiVersion"].is_string(),
                "{}: {kind} without apiVersion",
                f.display()
            );
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {kind} without name", f.display()))
                .to_owned();
            assert!(
                out.insert((kind.clone(), name.clone()), v).is_none(),
                "{kind} {name} defined twice"
            );
        }
    }
    out
}

fn get<'a>(d: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    d.get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("missing {kind} {name}"))
}

#[test]
fn manifests_fit_together() {
    let d = docs();
    for crd in [
        "devices.devices.kubeedge.io",
        "devicemodels.devices.kubeedge.io",
        "devicestatuses.devices.kubeedge.io",
    ] {
        get(&d, "CustomResourceDefinition", crd);
    }
    // Every workload's service account exists and is bound to an existing role.
    for (kind, name) in [
        ("Deployment", "device-controller"),
        ("DaemonSet", "edgecore-dmi"),
    ] {
        let sa = get(&d, kind, name)["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_owned();
        get(&d, "ServiceAccount", &sa);
        let binding = get(&d, "ClusterRoleBinding", name);
        assert_eq!(binding["subjects"][0]["name"], sa.as_str());
        get(
            &d,
            "ClusterRole",
            binding["roleRef"]["name"].as_str().unwrap(),
        );
    }
    // The controller runs more than one replica and knows who it is (leader election).
    let ctl = get(&d, "Deployment", "device-controller");
    assert!(ctl["spec"]["replicas"].as_i64().unwrap() >= 2);
    let env = ctl["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("POD_NAME") && env.contains("POD_NAMESPACE"),
        "{env}"
    );
    let lease_rules = get(&d, "Role", "device-controller-leader")["rules"].to_string();
    assert!(lease_rules.contains("leases"), "{lease_rules}");
}

#[test]
fn edgecore_daemonset_uses_the_host_socket_directory_and_its_node_name() {
    let d = docs();
    let ds = get(&d, "DaemonSet", "edgecore-dmi");
    let spec = &ds["spec"]["template"]["spec"];
    let volumes = spec["volumes"].to_string();
    assert!(volumes.contains("/etc/kubeedge"), "{volumes}");
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--source", "kubernetes"]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--dmi-socket", "/etc/kubeedge/dmi.sock"]),
        "{args:?}"
    );
    let node = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert!(spec["nodeSelector"].is_object());
}

#[test]
fn edge_rbac_reads_devices_and_writes_only_status() {
    let d = docs();
    let rules = get(&d, "ClusterRole", "edgecore-dmi")["rules"]
        .as_array()
        .unwrap()
        .clone();
    for r in &rules {
        let verbs: Vec<&str> = r["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for res in r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
        {
            if res.ends_with("/status") {
                assert_eq!(verbs, vec!["patch"], "{res}");
            } else {
                assert!(
                    verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
                    "{res}: {verbs:?}"
                );
            }
        }
    }
}

#[test]
fn mapper_daemonset_template_is_usable() {
    let d = docs();
    let ds = get(&d, "DaemonSet", "mapper-modbus");
    let spec = &ds["spec"]["template"]["spec"];
    assert!(spec["nodeSelector"].is_object());
    assert!(spec["volumes"].to_string().contains("/etc/kubeedge"));
    assert!(
        spec["volumes"].to_string().contains("CharDevice"),
        "serial device access"
    );
    // Its config is a valid mapper config with sockets under the shared host path.
    let cm = get(&d, "ConfigMap", "mapper-modbus");
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let cfg =
        mapper_sdk::MapperConfig::from_yaml("modbus", text, std::path::Path::new("config.yaml"))
            .unwrap();
    cfg.validate().unwrap();
    assert!(cfg.socket_path.starts_with("/etc/kubeedge"));
    assert_eq!(
        cfg.edgecore_sock,
        std::path::PathBuf::from("/etc/kubeedge/dmi.sock")
    );
    assert_eq!(cfg.protocol, "modbus");
}

#[test]
fn opcua_mapper_keeps_its_pki_on_the_host_and_passwords_in_a_secret() {
    let d = docs();
    let ds = get(&d, "DaemonSet", "mapper-opcua");
    let spec = &ds["spec"]["template"]["spec"];
    assert!(spec["nodeSelector"].is_object());
    let volumes = spec["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("mount {name}"))
    };
    assert_eq!(volume("kubeedge")["hostPath"]["path"], "/etc/kubeedge");
    // The config is a valid mapper config; its state directory (the PKI) is
    // a host path, mounted where the config says.
    let cm = get(&d, "ConfigMap", "mapper-opcua");
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let cfg =
        mapper_sdk::MapperConfig::from_yaml("opcua", text, std::path::Path::new("config.yaml"))
            .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.protocol, "opcua");
    assert!(cfg.socket_path.starts_with("/etc/kubeedge"));
    assert_eq!(
        cfg.edgecore_sock,
        std::path::PathBuf::from("/etc/kubeedge/dmi.sock")
    );
    let state = cfg.state_dir();
    let state_mount = mount("state");
    assert_eq!(
        std::path::Path::new(state_mount["mountPath"].as_str().unwrap()),
        state.as_path()
    );
    assert!(volume("state")["hostPath"]["path"].is_string());
    // Passwords: a Secret mounted read-only.
    assert!(volume("credentials")["secret"]["secretName"].is_string());
    assert_eq!(mount("credentials")["readOnly"], true);
}

/// Metric names (`edgecore_dmi_*`, `mapper_*`) written in backticks in the
/// metric tables of a source file's module docs.
fn documented_metrics(path: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("//! | `")) {
        let name = line["//! | `".len()..].split('`').next().unwrap();
        let name = name.strip_suffix("_total").unwrap_or(name);
        out.insert(format!("{prefix}{}", name.trim_start_matches(prefix)));
    }
    out
}

#[test]
fn grafana_dashboard_uses_only_metrics_that_exist() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut known = documented_metrics("edgecore-dmi/src/metrics.rs", "edgecore_dmi_");
    known.extend(documented_metrics("mapper-sdk/src/metrics.rs", ""));
    assert!(
        known.contains("edgecore_dmi_devices") && known.contains("mapper_reads"),
        "{known:?}"
    );
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        let names: Vec<&str> = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("edgecore_dmi_") || w.starts_with("mapper_"))
            .collect();
        assert!(!names.is_empty(), "no metric in `{e}`");
        for n in names {
            let base = n.strip_suffix("_total").unwrap_or(n);
            assert!(
                known.contains(base),
                "`{n}` in `{e}` is not a documented metric"
            );
        }
    }
}

/// Every `ghcr.io/edge-dmi/<name>` image a manifest runs is a `--target <name>`
/// stage of deploy/Dockerfile that copies the binary `<name>`.
#[test]
fn every_image_the_manifests_use_has_a_dockerfile_stage() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let mut images = std::collections::BTreeSet::new();
    for ((kind, name), d) in docs() {
        if kind != "DaemonSet" && kind != "Deployment" {
            continue;
        }
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap_or_else(|| panic!("{kind} {name}: no containers"))
        {
            let image = c["image"].as_str().unwrap_or_default();
            if let Some(rest) = image.strip_prefix("ghcr.io/edge-dmi/") {
                images.insert(rest.split(':').next().unwrap_or_default().to_owned());
            }
        }
    }
    assert!(
        images.contains("mapper-wasm") && images.contains("edgecore-dmi"),
        "{images:?}"
    );
    for image in images {
        assert!(
            dockerfile.contains(&format!(" AS {image}\n")),
            "deploy/Dockerfile has no stage {image}"
        );
        assert!(
            dockerfile.contains(&format!("/src/target/release/{image} ")),
            "deploy/Dockerfile's stage {image} does not copy the binary {image}"
        );
    }
}
