//! The deployment (`manifests/`, the `Dockerfile`), checked offline with real tools:
//! every kustomization renders and passes a strict schema check for the Kubernetes
//! versions EKS supports; the DaemonSet keeps its safety settings; the ConfigMap's
//! config passes `logferry check`; the alerts pass `promtool check rules` and their unit
//! tests (`tests/alerts/`); the IAM policies grant only what the sinks need.
//!
//! The tools are installed by `tests/install-tools.sh` into `$LOGFERRY_TOOLS/bin`
//! (default `/opt/logferry-tools/bin`), the only place looked at. A missing tool fails
//! the test, never skips it.
//!
//! The PrometheusRule is the one source of the alerts: the test renders it, takes its
//! `spec` (a plain Prometheus rules file) and writes it as `logferry.rules.json` beside
//! copies of `tests/alerts/*.yaml`, whose `rule_files` name that file. By hand:
//!
//! ```sh
//! T=/opt/logferry-tools/bin; d=$(mktemp -d); cp tests/alerts/*.yaml $d
//! $T/kubectl kustomize manifests/base | $T/python -c 'import sys,yaml,json; print(json.dumps(
//!   next(d for d in yaml.safe_load_all(sys.stdin) if d["kind"] == "PrometheusRule")["spec"]))' \
//!   > $d/logferry.rules.json && (cd $d && $T/promtool test rules *.yaml)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

const KUSTOMIZATIONS: &[&str] = &["base", "overlays/firehose", "overlays/cloudwatch", "overlays/s3"];

/// The Kubernetes versions EKS runs in standard or extended support (November 2026:
/// 1.31's extended support ends 2026-11-26). The kubernetes-validate wheel pinned in
/// tests/install-tools.sh has the schemas of 1.25 to 1.37.
const EKS_VERSIONS: &[&str] = &["1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0"];

/// Kinds that kubernetes-validate has no schema for (Prometheus Operator CRDs); they are
/// checked field by field below instead.
const CUSTOM_KINDS: &[&str] = &["PodMonitor", "PrometheusRule"];

/// The alerts issue 8 asks for, each with a runbook paragraph in README.md.
const ALERTS: &[&str] = &[
    "LogferryShippingLagHigh",
    "LogferryTailerFallingBehind",
    "LogferryBufferNearlyFull",
    "LogferryRecordsDropped",
    "LogferrySinkThrottled",
    "LogferryDataDirFailing",
    "LogferryLogsLostToRotation",
    "LogferryDown",
    "LogferryAbsent",
];

/// Metrics the alerts or the dashboard use before the code exports them (issue 5).
const FUTURE_METRICS: &[&str] = &["logferry_sink_throttled_total"];

const RULES_FILE: &str = "logferry.rules.json";

// ---------------------------------------------------------------------------------
// Tools, rendering, YAML

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from tests/install-tools.sh; missing, the test fails saying how to get it.
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("LOGFERRY_TOOLS").map(PathBuf::from).unwrap_or_else(|| "/opt/logferry-tools".into());
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: the deployment tests need promtool, kubectl, kubernetes-validate and \
         python; install them with `bash tests/install-tools.sh` (as root)",
        path.display()
    );
    path
}

/// Runs `cmd` with `stdin`; its stdout, or a panic that shows everything it said.
fn run(cmd: &mut Command, stdin: &[u8]) -> String {
    let out = output(cmd, stdin);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}{}", out.status, utf8(&out.stdout), utf8(&out.stderr));
    utf8(&out.stdout)
}

fn output(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}; run `bash tests/install-tools.sh`"));
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every document of a YAML stream, as JSON values (through the tools' PyYAML).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    const TO_JSON: &str =
        "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let json = run(Command::new(tool("python")).args(["-c", TO_JSON]), yaml.as_bytes());
    match serde_json::from_str(&json).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// One kustomization, rendered.
struct Rendered {
    name: &'static str,
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn all_of(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind`.
    fn one(&self, kind: &str) -> &Value {
        match self.all_of(kind)[..] {
            [o] => o,
            ref found => panic!("{}: expected one {kind}, found {}", self.name, found.len()),
        }
    }

    /// The ConfigMap's `logferry.toml`.
    fn config_text(&self) -> &str {
        self.one("ConfigMap")["data"]["logferry.toml"].as_str().unwrap_or_else(|| panic!("{}: no logferry.toml", self.name))
    }

    fn config(&self) -> toml::Table {
        self.config_text().parse().unwrap_or_else(|e| panic!("{}: logferry.toml: {e}", self.name))
    }
}

/// Every kustomization, rendered once for all the tests.
fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        KUSTOMIZATIONS
            .iter()
            .map(|&name| {
                let dir = repo().join("manifests").join(name);
                let yaml = run(Command::new(tool("kubectl")).arg("kustomize").arg(&dir), b"");
                let objects = yaml_docs(&yaml);
                Rendered { name, yaml, objects }
            })
            .collect()
    })
}

fn base() -> &'static Rendered {
    &rendered()[0]
}

/// `a.b.c` of a JSON value (`Null` where absent).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[key],
    })
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or_else(|| panic!("{path}: expected a string, got {}", at(v, path)))
}

/// The names `logferry_…` that appear in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("logferry_")
        .map(|(i, _)| text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

/// Every metric name the code registers (src/metrics/).
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("src/metrics")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            names.extend(metric_names(&std::fs::read_to_string(path).unwrap()));
        }
    }
    names
}

fn assert_known_metrics(exprs: &[String], what: &str) {
    let known = exported_metrics();
    for expr in exprs {
        for name in metric_names(expr) {
            assert!(
                known.contains(&name) || FUTURE_METRICS.contains(&name.as_str()),
                "{what}: {name} (in `{expr}`) is not a metric of src/metrics/"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Kubernetes objects

#[test]
fn every_kustomization_passes_the_schema_check_of_each_eks_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(tool("kubernetes-validate"));
    cmd.arg("--strict");
    for v in EKS_VERSIONS {
        cmd.args(["-k", v]);
    }
    let mut checked = 0;
    for r in rendered() {
        let file = dir.path().join(format!("{}.yaml", r.name.replace('/', "-")));
        std::fs::write(&file, &r.yaml).unwrap();
        cmd.arg(&file);
        checked += r.objects.iter().filter(|o| !CUSTOM_KINDS.contains(&o["kind"].as_str().unwrap())).count();
    }
    let report = run(&mut cmd, b"");
    let passed = report.lines().filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource ")).count();
    assert_eq!(passed, checked * EKS_VERSIONS.len(), "not every object passed for every version:\n{report}");
    for line in report.lines().filter(|l| !l.starts_with("INFO ")) {
        let about_crd = CUSTOM_KINDS.iter().any(|k| line.contains(&format!("Couldn't find schema for kind {k} ")));
        assert!(line.starts_with("WARN ") && about_crd, "unexpected from kubernetes-validate: {line}\n{report}");
    }
}

/// The check above would pass anything if strict mode or the schemas went missing.
#[test]
fn the_schema_check_refuses_a_misspelt_field() {
    let bad = base().yaml.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = output(Command::new(tool("kubernetes-validate")).args(["--strict", "-k", EKS_VERSIONS[0]]).arg(&file), b"");
    assert!(!out.status.success(), "a misspelt field passed:\n{}", utf8(&out.stdout));
    assert!(utf8(&out.stdout).contains("readOnlyRootFileSystem"), "{}", utf8(&out.stdout));
}

#[test]
fn everything_is_in_the_logging_namespace() {
    for r in rendered() {
        let ns = r.one("Namespace");
        assert_eq!(str_at(ns, "metadata.name"), "logging", "{}", r.name);
        assert_eq!(at(ns, "metadata.labels")["pod-security.kubernetes.io/enforce"], "privileged", "{}: hostPath and uid 0", r.name);
        for o in r.objects.iter().filter(|o| o["kind"] != "Namespace") {
            assert_eq!(at(o, "metadata.namespace"), "logging", "{}: {} {}", r.name, o["kind"], o["metadata"]["name"]);
        }
    }
}

#[test]
fn the_daemonset_is_locked_down() {
    for r in rendered() {
        let pod = at(r.one("DaemonSet"), "spec.template.spec");
        let c = &pod["containers"][0];
        let what = r.name;
        assert_eq!(str_at(pod, "securityContext.seccompProfile.type"), "RuntimeDefault", "{what}");
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{what}");
        assert!(sc["capabilities"]["add"].is_null(), "{what}: adds capabilities");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["privileged"], false, "{what}");
        assert_eq!(sc["runAsUser"], 0, "{what}: the logs are root's");
        assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
        assert_eq!(pod["serviceAccountName"], str_at(r.one("ServiceAccount"), "metadata.name"), "{what}");
        assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]), "{what}: tolerate every taint");
        assert_eq!(pod["priorityClassName"], "system-node-critical", "{what}");
        assert_eq!(c["resources"], serde_json::json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}), "{what}");
        assert_eq!(c["image"], format!("logferry:{}", env!("CARGO_PKG_VERSION")), "{what}: the image is this version");
    }
}

#[test]
fn the_daemonset_mounts_the_logs_read_only_and_only_the_data_dir_writable() {
    for r in rendered() {
        let pod = at(r.one("DaemonSet"), "spec.template.spec");
        let volumes: BTreeMap<&str, &Value> = pod["volumes"].as_array().unwrap().iter().map(|v| (str_at(v, "name"), v)).collect();
        let config = r.config();
        let data_dir = config["data_dir"].as_str().unwrap();
        for m in pod["containers"][0]["volumeMounts"].as_array().unwrap() {
            let (name, path) = (str_at(m, "name"), str_at(m, "mountPath"));
            let v = volumes.get(name).unwrap_or_else(|| panic!("{}: no volume {name}", r.name));
            let read_only = m["readOnly"] == true;
            if path == data_dir {
                assert!(!read_only, "{}: the data dir must be writable", r.name);
                assert_eq!(at(v, "hostPath.path"), data_dir, "{}: data dir on the node", r.name);
                assert_eq!(at(v, "hostPath.type"), "DirectoryOrCreate", "{}", r.name);
            } else {
                assert!(read_only, "{}: {path} must be read-only", r.name);
            }
            if let Some(host) = at(v, "hostPath.path").as_str() {
                assert_eq!(host, path, "{}: links on the node resolve only at the node's own paths", r.name);
            }
        }
        let mounted: BTreeSet<&str> = pod["containers"][0]["volumeMounts"].as_array().unwrap().iter().map(|m| str_at(m, "mountPath")).collect();
        for root in config["tail"]["roots"].as_array().unwrap() {
            let root = root.as_str().unwrap();
            assert!(mounted.iter().any(|m| Path::new(root).starts_with(m)), "{}: tail root {root} is not mounted", r.name);
        }
    }
}

#[test]
fn the_daemonset_runs_the_config_it_is_given() {
    for r in rendered() {
        let pod = at(r.one("DaemonSet"), "spec.template.spec");
        let c = &pod["containers"][0];
        assert_eq!(c["args"], serde_json::json!(["run", "--config", "/etc/logferry/logferry.toml"]), "{}", r.name);
        let config_volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "config").unwrap();
        assert_eq!(at(config_volume, "configMap.name"), at(r.one("ConfigMap"), "metadata.name"), "{}: the generated ConfigMap", r.name);
        let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "config").unwrap();
        assert_eq!(mount["mountPath"], "/etc/logferry", "{}", r.name);
        let env: BTreeMap<&str, &str> =
            c["env"].as_array().unwrap().iter().map(|e| (str_at(e, "name"), str_at(e, "valueFrom.fieldRef.fieldPath"))).collect();
        let want = BTreeMap::from([("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")]);
        assert_eq!(env, want, "{}: downward API", r.name);
    }
}

#[test]
fn probes_grace_period_and_rollout_fit_the_config() {
    for r in rendered() {
        let ds = r.one("DaemonSet");
        let pod = at(ds, "spec.template.spec");
        let c = &pod["containers"][0];
        let config = r.config();
        let listen = config["metrics"]["listen"].as_str().unwrap();
        let port = &c["ports"][0];
        assert_eq!(port["name"], "metrics", "{}", r.name);
        assert_eq!(Some(port["containerPort"].to_string().as_str()), listen.rsplit(':').next(), "{}: metrics.listen", r.name);
        assert_eq!(at(c, "livenessProbe.httpGet"), &serde_json::json!({"path": "/healthz", "port": "metrics"}), "{}", r.name);
        assert_eq!(at(c, "readinessProbe.httpGet"), &serde_json::json!({"path": "/readyz", "port": "metrics"}), "{}", r.name);
        let shutdown = humantime::parse_duration(config["shutdown_timeout"].as_str().unwrap()).unwrap();
        let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
        assert!(grace > shutdown, "{}: terminationGracePeriodSeconds {grace:?} must exceed shutdown_timeout {shutdown:?}", r.name);
        assert_eq!(at(ds, "spec.updateStrategy.type"), "RollingUpdate", "{}", r.name);
        assert_eq!(at(ds, "spec.updateStrategy.rollingUpdate.maxUnavailable"), "10%", "{}", r.name);
        assert_eq!(at(ds, "spec.updateStrategy.rollingUpdate.maxSurge"), 0, "{}: two pods would share the data dir", r.name);
    }
}

#[test]
fn the_service_account_carries_an_iam_role() {
    let role = |r: &Rendered| at(r.one("ServiceAccount"), "metadata.annotations")["eks.amazonaws.com/role-arn"].as_str().unwrap().to_string();
    for r in rendered() {
        let arn = role(r);
        assert!(arn.starts_with("arn:aws:iam::") && arn.contains(":role/"), "{}: {arn}", r.name);
    }
    assert!(role(&rendered()[1]).ends_with(":role/logferry-firehose"), "{}", role(&rendered()[1]));
    assert!(role(&rendered()[2]).ends_with(":role/logferry-cloudwatch"), "{}", role(&rendered()[2]));
}

#[test]
fn the_pod_monitor_scrapes_the_metrics_port_of_the_daemonset_pods() {
    for r in rendered() {
        let pm = r.one("PodMonitor");
        let ds = r.one("DaemonSet");
        assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1", "{}", r.name);
        let selector = at(pm, "spec.selector.matchLabels").as_object().unwrap();
        let pod_labels = at(ds, "spec.template.metadata.labels");
        assert!(!selector.is_empty(), "{}", r.name);
        for (k, v) in selector {
            assert_eq!(&pod_labels[k], v, "{}: the PodMonitor selects the DaemonSet's pods", r.name);
        }
        let endpoints = at(pm, "spec.podMetricsEndpoints").as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "{}", r.name);
        assert_eq!(endpoints[0]["port"], "metrics", "{}", r.name);
        assert_eq!(endpoints[0]["path"], "/metrics", "{}", r.name);
        let node_label = endpoints[0]["relabelings"].as_array().unwrap().iter().any(|rl| {
            rl["sourceLabels"] == serde_json::json!(["__meta_kubernetes_pod_node_name"]) && rl["targetLabel"] == "node"
        });
        assert!(node_label, "{}: the alerts and the dashboard need a node label", r.name);
        // The alerts select up{job="logferry"}: the job comes from this pod label.
        assert_eq!(pod_labels[str_at(pm, "spec.jobLabel")], "logferry", "{}", r.name);
    }
}

// ---------------------------------------------------------------------------------
// Alerts

fn rules_of(r: &Rendered) -> Vec<&Value> {
    let spec = &r.one("PrometheusRule")["spec"];
    spec["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook() {
    let rules = rules_of(base());
    let names: Vec<&str> = rules.iter().map(|r| str_at(r, "alert")).collect();
    assert_eq!(names, ALERTS, "the alerts");
    for rule in &rules {
        let name = str_at(rule, "alert");
        assert!(["warning", "critical"].contains(&str_at(rule, "labels.severity")), "{name}: severity");
        for key in ["summary", "description"] {
            assert!(str_at(rule, &format!("annotations.{key}")).len() > 20, "{name}: {key}");
        }
        let runbook = str_at(rule, "annotations.runbook_url");
        let anchor = format!("/README.md#{}", name.to_lowercase());
        assert!(runbook.starts_with("https://") && runbook.ends_with(&anchor), "{name}: runbook_url {runbook} should end in {anchor}");
    }
    let exprs: Vec<String> = rules.iter().map(|r| str_at(r, "expr").to_string()).collect();
    assert_known_metrics(&exprs, "PrometheusRule");
    for r in &rendered()[1..] {
        assert_eq!(r.one("PrometheusRule"), base().one("PrometheusRule"), "{}: the overlays keep the base's alerts", r.name);
    }
}

/// Every runbook_url anchor is a heading of README.md (`### LogferryShippingLagHigh`).
#[test]
fn every_alert_has_its_runbook_paragraph_in_the_readme() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let headings: BTreeSet<String> =
        readme.lines().filter(|l| l.starts_with('#')).map(|l| l.trim_start_matches('#').trim().to_lowercase()).collect();
    let missing: Vec<&&str> = ALERTS.iter().filter(|a| !headings.contains(&a.to_lowercase())).collect();
    assert!(missing.is_empty(), "README.md has no runbook heading for {missing:?} (runbook_url points at `### <AlertName>`)");
}

/// The rules file under test and copies of the unit tests, side by side.
fn alert_test_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = &base().one("PrometheusRule")["spec"];
    std::fs::write(dir.path().join(RULES_FILE), serde_json::to_string_pretty(spec).unwrap()).unwrap();
    for f in alert_test_files() {
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    dir
}

fn alert_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/alerts/*.yaml");
    files
}

#[test]
fn the_alerts_pass_promtool_check_and_their_unit_tests() {
    let dir = alert_test_dir();
    let promtool = tool("promtool");
    run(Command::new(&promtool).args(["check", "rules", RULES_FILE]).current_dir(dir.path()), b"");
    let tests: Vec<_> = alert_test_files().iter().map(|f| f.file_name().unwrap().to_owned()).collect();
    run(Command::new(&promtool).args(["test", "rules"]).args(&tests).current_dir(dir.path()), b"");
}

/// Each alert has a unit test where it fires and one where it stays quiet.
#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for f in alert_test_files() {
        let doc = yaml_docs(&std::fs::read_to_string(&f).unwrap()).remove(0);
        assert_eq!(doc["rule_files"], serde_json::json!([RULES_FILE]), "{}: rule_files", f.display());
        for group in doc["tests"].as_array().unwrap() {
            for case in group["alert_rule_test"].as_array().into_iter().flatten() {
                let name = str_at(case, "alertname").to_string();
                match case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                    true => fires.insert(name),
                    false => quiet.insert(name),
                };
            }
        }
    }
    for alert in ALERTS {
        assert!(fires.contains(*alert), "no test in tests/alerts makes {alert} fire");
        assert!(quiet.contains(*alert), "no test in tests/alerts has {alert} stay quiet");
    }
}

// ---------------------------------------------------------------------------------
// The config

#[test]
fn the_base_config_passes_logferry_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logferry.toml");
    std::fs::write(&file, base().config_text()).unwrap();
    let out = output(Command::new(env!("CARGO_BIN_EXE_logferry")).arg("check").arg("--config").arg(&file), b"");
    assert!(out.status.success(), "logferry check refused the base ConfigMap's config:\n{}", utf8(&out.stderr));
    assert!(utf8(&out.stdout).contains("is valid"), "{}", utf8(&out.stdout));
}

/// The overlays replace the whole file (logferry reads one); everything but `[sink]`
/// must stay the base's, and each must pass `logferry check`.
#[test]
fn the_overlays_change_only_the_sink() {
    let mut base_config = base().config();
    base_config.remove("sink");
    for r in &rendered()[1..] {
        let mut config = r.config();
        let sink = config.remove("sink").unwrap_or_else(|| panic!("{}: no [sink]", r.name));
        assert_eq!(config, base_config, "{}: differs from the base outside [sink]; change manifests/base/logferry.toml", r.name);
        assert_eq!(sink["type"].as_str(), r.name.strip_prefix("overlays/"), "{}: sink.type", r.name);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logferry.toml");
        std::fs::write(&file, r.config_text()).unwrap();
        let out = output(Command::new(env!("CARGO_BIN_EXE_logferry")).arg("check").arg("--config").arg(&file), b"");
        assert!(out.status.success(), "{}: {}", r.name, utf8(&out.stderr));
    }
}

// ---------------------------------------------------------------------------------
// Dashboard, IAM, Dockerfile

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(e)) = map.get("expr") {
                out.push(e.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// promtool parses each panel's query as a recording rule (with Grafana's variables
/// replaced), so a query that is not PromQL fails here, not on a dashboard.
#[test]
fn the_dashboard_queries_parse_and_use_known_metrics() {
    let text = std::fs::read_to_string(repo().join("manifests/grafana/logferry-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let titles = text.to_lowercase();
    for topic in ["lag", "throughput", "buffer", "throttl", "dropped"] {
        assert!(titles.contains(topic), "the dashboard shows nothing about {topic}");
    }
    assert_known_metrics(&exprs, "dashboard");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e.replace("$__rate_interval", "5m").replace("$node", ".*");
            serde_json::json!({"record": format!("logferry_dashboard_query_{i}"), "expr": e})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.json");
    std::fs::write(&file, serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()).unwrap();
    run(Command::new(tool("promtool")).args(["check", "rules"]).arg(&file), b"");
}

fn policy(name: &str) -> Vec<(BTreeSet<String>, Vec<String>)> {
    let path = repo().join("manifests/iam").join(name);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
            other => panic!("{name}: {other}"),
        }
    };
    doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["Effect"], "Allow", "{name}");
            (list(&s["Action"]).into_iter().collect(), list(&s["Resource"]))
        })
        .collect()
}

fn sink_of(r: &Rendered) -> toml::Table {
    r.config()["sink"].as_table().unwrap().clone()
}

#[test]
fn the_firehose_policy_allows_put_record_batch_on_the_configured_stream_only() {
    let sink = sink_of(&rendered()[1]);
    let stream = sink["delivery_stream"].as_str().unwrap();
    let region = sink["region"].as_str().unwrap();
    let statements = policy("firehose-policy.json");
    assert_eq!(statements.len(), 1);
    let (actions, resources) = &statements[0];
    assert_eq!(actions, &BTreeSet::from(["firehose:PutRecordBatch".to_string()]));
    assert_eq!(resources.len(), 1);
    let arn = &resources[0];
    assert!(arn.starts_with(&format!("arn:aws:firehose:{region}:")), "{arn}: the sink's region");
    assert!(arn.ends_with(&format!(":deliverystream/{stream}")), "{arn}: the sink's stream");
}

#[test]
fn the_cloudwatch_policy_allows_only_the_configured_log_group_prefix() {
    let sink = sink_of(&rendered()[2]);
    let group = sink["log_group"].as_str().unwrap();
    let region = sink["region"].as_str().unwrap();
    let mut all = BTreeSet::new();
    for (actions, resources) in policy("cloudwatch-logs-policy.json") {
        assert!(actions.iter().all(|a| a.starts_with("logs:") && !a.contains('*')), "{actions:?}");
        for arn in &resources {
            let prefix = format!("arn:aws:logs:{region}:");
            assert!(arn.starts_with(&prefix), "{arn}: the sink's region");
            let (_, rest) = arn.split_once(":log-group:").unwrap_or_else(|| panic!("{arn}: not a log-group ARN"));
            let group_glob = rest.split(":log-stream:").next().unwrap();
            let group_prefix = group_glob.strip_suffix('*').unwrap_or_else(|| panic!("{arn}: one group prefix"));
            assert!(group_prefix.len() > 1 && group.starts_with(group_prefix), "{arn} does not cover log_group {group}");
        }
        all.extend(actions);
    }
    let want = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:PutRetentionPolicy"];
    assert_eq!(all, want.iter().map(|s| s.to_string()).collect());
}

/// `manifests/iam/s3-policy.json` against the S3 sink's reference config: PutObject
/// (and aborting a multipart upload) only, on the bucket under the key prefix's fixed
/// part.
#[test]
fn the_s3_policy_allows_writing_objects_under_the_key_prefix_only() {
    let config: toml::Table = std::fs::read_to_string(repo().join("tests/fixtures/config/sink/s3.toml")).unwrap().parse().unwrap();
    let sink = config["sink"].as_table().unwrap();
    let bucket = sink["bucket"].as_str().unwrap();
    let fixed = sink["key_prefix"].as_str().unwrap().split('{').next().unwrap();
    assert!(!fixed.is_empty(), "the key prefix starts with a fixed part the policy can name");
    let statements = policy("s3-policy.json");
    assert_eq!(statements.len(), 1);
    let (actions, resources) = &statements[0];
    // Multipart uploads need PutObject too; an upload given up is aborted.
    assert_eq!(actions, &BTreeSet::from(["s3:AbortMultipartUpload".to_string(), "s3:PutObject".to_string()]));
    assert_eq!(resources, &[format!("arn:aws:s3:::{bucket}/{fixed}*")]);
}

#[test]
fn the_trust_policies_name_the_service_account() {
    let sa = base().one("ServiceAccount");
    let subject = format!("system:serviceaccount:{}:{}", str_at(sa, "metadata.namespace"), str_at(sa, "metadata.name"));
    let irsa = std::fs::read_to_string(repo().join("manifests/iam/irsa-trust-policy.json")).unwrap();
    let irsa: Value = serde_json::from_str(&irsa).unwrap();
    let cond = at(&irsa["Statement"][0], "Condition.StringEquals").as_object().unwrap();
    assert!(cond.iter().any(|(k, v)| k.ends_with(":sub") && v == &subject), "IRSA trust policy: {subject}");
    assert!(cond.iter().any(|(k, v)| k.ends_with(":aud") && v == "sts.amazonaws.com"));
    let pod_identity = std::fs::read_to_string(repo().join("manifests/iam/pod-identity-trust-policy.json")).unwrap();
    let pod_identity: Value = serde_json::from_str(&pod_identity).unwrap();
    assert_eq!(at(&pod_identity["Statement"][0], "Principal.Service"), "pods.eks.amazonaws.com");
}

#[test]
fn the_image_runs_what_the_daemonset_expects() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let instr = |name: &str| -> Vec<&str> {
        dockerfile.lines().filter_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' '))).collect()
    };
    assert!(instr("FROM").len() >= 2, "multi-stage");
    assert_eq!(instr("ENTRYPOINT"), [r#"["/usr/local/bin/logferry"]"#], "exec form, no shell");
    let cmd: Value = serde_json::from_str(instr("CMD")[0]).unwrap();
    assert_eq!(cmd, at(base().one("DaemonSet"), "spec.template.spec.containers.0.args").clone(), "CMD = the DaemonSet's args");
    assert!(dockerfile.contains("cargo build --release --locked"));
    for copy in instr("COPY").iter().filter(|c| !c.starts_with("--from")) {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(repo().join(src).exists(), "Dockerfile copies {src}, which is not in the repository");
        }
    }
}

// ---------------------------------------------------------------------------------
// `logferry verify` as a Job (manifests/verify, a kustomize Component)

/// `overlays/s3` with the verify Component added, as a user's overlay would: rendered
/// from a copy whose relative paths lead back to the repository.
fn render_s3_with_verify() -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().components().count() - 1);
    let here = |p: &str| format!("{up}{}", repo().join(p).display().to_string().trim_start_matches('/'));
    let overlay = repo().join("manifests/overlays/s3");
    std::fs::copy(overlay.join("logferry.toml"), dir.path().join("logferry.toml")).unwrap();
    let text = std::fs::read_to_string(overlay.join("kustomization.yaml")).unwrap();
    assert!(text.contains("  - ../../base\n"));
    let text = text.replace("  - ../../base\n", &format!("  - {}\n", here("manifests/base")));
    std::fs::write(dir.path().join("kustomization.yaml"), format!("{text}\ncomponents:\n  - {}\n", here("manifests/verify"))).unwrap();
    let yaml = run(Command::new(tool("kubectl")).arg("kustomize").arg(dir.path()), b"");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let mut cmd = Command::new(tool("kubernetes-validate"));
    cmd.arg("--strict");
    for v in EKS_VERSIONS {
        cmd.args(["-k", v]);
    }
    let report = run(cmd.arg(&file), b"");
    assert!(report.lines().any(|l| l.contains(" passed for resource job/logferry-verify ")), "{report}");
    assert!(!report.lines().any(|l| l.starts_with("ERROR")), "{report}");
    yaml_docs(&yaml)
}

#[test]
fn the_verify_job_runs_with_the_overlays_config_as_a_post_sync_hook() {
    let objects = render_s3_with_verify();
    let one = |kind: &str, name: &str| objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"));
    let job = one("Job", "logferry-verify");
    let ds = one("DaemonSet", "logferry");
    assert_eq!(at(job, "metadata.namespace"), "logging");
    assert_eq!(at(job, "metadata.annotations")["argocd.argoproj.io/hook"], "PostSync");
    assert_eq!(at(job, "spec.backoffLimit"), 0);
    let pod = at(job, "spec.template.spec");
    assert_eq!(at(pod, "restartPolicy"), "Never");
    let sa = str_at(pod, "serviceAccountName");
    let role = at(one("ServiceAccount", sa), "metadata.annotations")["eks.amazonaws.com/role-arn"].as_str().unwrap();
    assert!(role.ends_with(":role/logferry-verify"), "its own role: {role}");
    // The same generated ConfigMap as the DaemonSet: the same sinks are read back.
    let config_map = |spec: &Value| str_at(&spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "config").unwrap().clone(), "configMap.name").to_string();
    assert_eq!(config_map(pod), config_map(at(ds, "spec.template.spec")));
    assert!(config_map(pod).starts_with("logferry-config-"), "the hashed name");
    let c = at(pod, "containers.0");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(&args[..3], ["verify", "--config", "/etc/logferry/logferry.toml"]);
    let env: BTreeMap<&str, &Value> = c["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    assert_eq!(env["CONTAINER_NAME"]["value"], c["name"], "CONTAINER_NAME is the container's name");
    for (name, field) in [("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name"), ("POD_UID", "metadata.uid"), ("NODE_NAME", "spec.nodeName")] {
        assert_eq!(at(env[name], "valueFrom.fieldRef.fieldPath"), field, "{name}");
    }
    assert_eq!(at(c, "securityContext.readOnlyRootFilesystem"), true);
    assert_eq!(at(pod, "securityContext.runAsNonRoot"), true);
}

/// `manifests/iam/verify-policy.json`: reading only — list and get under the S3
/// overlay's key prefix, find events in the CloudWatch overlay's log groups.
#[test]
fn the_verify_policy_only_reads_where_the_sinks_write() {
    let s3 = sink_of(&rendered()[3]);
    let bucket = s3["bucket"].as_str().unwrap();
    let fixed = s3["key_prefix"].as_str().unwrap().split('{').next().unwrap();
    let cw = sink_of(&rendered()[2]);
    let group = cw["log_group"].as_str().unwrap();
    let mut all = BTreeSet::new();
    for (actions, resources) in policy("verify-policy.json") {
        for arn in &resources {
            if let Some(rest) = arn.strip_prefix("arn:aws:s3:::") {
                assert!(rest == bucket || rest == format!("{bucket}/{fixed}*"), "{arn}: the s3 overlay's bucket and key prefix");
            } else {
                let (_, rest) = arn.split_once(":log-group:").unwrap_or_else(|| panic!("{arn}: neither S3 nor a log group"));
                assert!(group.starts_with(rest.strip_suffix('*').unwrap()), "{arn} does not cover log_group {group}");
            }
        }
        all.extend(actions);
    }
    let want = ["logs:DescribeLogGroups", "logs:FilterLogEvents", "s3:GetObject", "s3:ListBucket"];
    assert_eq!(all, want.iter().map(|s| s.to_string()).collect());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("manifests/iam/verify-policy.json")).unwrap()).unwrap();
    let list = doc["Statement"].as_array().unwrap().iter().find(|s| s["Action"] == "s3:ListBucket").unwrap();
    assert_eq!(at(list, "Condition.StringLike")["s3:prefix"], format!("{fixed}*"), "listing only under the prefix");
}
