//! Routes: which events a sink receives — containers by namespace, pod and container,
//! streams, and `drop_messages` — on a running node.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::aws::metric;
use crate::follow::wait_for_log;
use crate::node::{append, numbered, read_events, Node, Shipper};

fn cri(stream: &str, msg: &str) -> String {
    format!("2026-11-21T10:00:00.000000001Z {stream} F {msg}\n")
}

fn wait_for_metric(shipper: &Shipper, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(shipper.metrics_addr(), name) != want {
        assert!(Instant::now() < deadline, "{name} = {} never reached {want}", metric(shipper.metrics_addr(), name));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_route_selects_containers_and_streams_and_drops_matching_messages() {
    let node = Node::new();
    let api = node.container("team-a", "api", "app", 0);
    let web = node.container("team-b", "web", "app", 0);
    let dns = node.container("kube-system", "coredns", "coredns", 0);
    let wanted = numbered("api-out", 50);
    let mut text = String::new();
    for (i, m) in wanted.iter().enumerate() {
        text += &cri("stdout", m);
        text += &cri("stderr", &format!("api-err-{i}"));
        if i % 5 == 0 {
            text += &cri("stdout", &format!("GET /healthz {i} 200"));
        }
    }
    append(&api, text.as_bytes());
    append(&web, numbered("web", 20).iter().map(|m| cri("stdout", m)).collect::<String>().as_bytes());
    append(&dns, numbered("dns", 20).iter().map(|m| cri("stdout", m)).collect::<String>().as_bytes());
    let route = r#"
[sink.route]
include_namespaces = ["team-*"]
exclude_pods = ["web"]
streams = ["stdout"]
drop_messages = ['^GET /healthz ', 'never matches \d{40}']
"#;
    let config = node.config_with("", route);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.env_remove("POD_NAME").env_remove("POD_NAMESPACE");
    let mut shipper = Shipper::start(cmd, &config, node.out());
    node.wait_for(&wanted, Duration::from_secs(30));
    // 50 stderr lines and 10 health checks were read and left out.
    wait_for_metric(&shipper, r#"logferry_filtered_events_total{sink="default"}"#, 60.0);
    // The containers no route selects are not even opened.
    wait_for_metric(&shipper, "logferry_files_followed", 1.0);
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let events = read_events(&node.out());
    let got: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(got, wanted, "only team-a/api's stdout, health checks dropped, in order");
    assert!(events.iter().all(|e| e["kubernetes"]["namespace"] == "team-a" && e["stream"] == "stdout"));
}

#[test]
fn replay_with_a_config_follows_its_route() {
    let node = Node::new();
    let api = node.container("team-a", "api", "app", 0);
    let dns = node.container("kube-system", "coredns", "coredns", 0);
    append(&api, (cri("stdout", "api-1") + &cri("stderr", "api-err") + &cri("stdout", "GET /healthz 200") + &cri("stdout", "api-2")).as_bytes());
    append(&dns, cri("stdout", "dns-1").as_bytes());
    let config = node.config_with("", "[sink.route]\nexclude_namespaces = [\"kube-*\"]\nstreams = [\"stdout\"]\ndrop_messages = ['^GET /healthz']\n");
    let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["replay", "--config", config.to_str().unwrap(), node.root().join("var/log/pods").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got: Vec<String> = read_events(&node.out()).iter().map(|e| e["message"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, ["api-1", "api-2"]);
    assert!(stderr.contains("left out by the routes: 2 events, 1 streams not read"), "{stderr}");
}

/// Three file sinks with their own routes on one node: each receives exactly the
/// lines its route selects, each once, in order per container; one read, one buffer.
#[test]
fn several_sinks_each_receive_exactly_what_their_route_selects() {
    let node = Node::new();
    let root = node.root().display().to_string();
    let a = node.container("team-a", "api", "app", 0);
    let b = node.container("team-b", "web", "app", 0);
    let (mut a_out, mut a_err, mut b_out, mut health) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut text_a = String::new();
    for i in 0..300 {
        a_out.push(format!("a-out-{i}"));
        a_err.push(format!("a-err-{i}"));
        text_a += &cri("stdout", &a_out[i]);
        text_a += &cri("stderr", &a_err[i]);
        if i % 10 == 0 {
            health.push(format!("GET /healthz {i}"));
            text_a += &cri("stdout", health.last().unwrap());
        }
    }
    let mut text_b = String::new();
    for i in 0..300 {
        b_out.push(format!("b-out-{i}"));
        text_b += &cri("stdout", &b_out[i]);
    }
    append(&a, text_a.as_bytes());
    append(&b, text_b.as_bytes());
    let config = node.sinks_config(
        "",
        &format!(
            r#"[sinks.all]
type = "file"
path = "{root}/all.jsonl"
[sinks.team-a]
type = "file"
path = "{root}/team-a.jsonl"
[sinks.team-a.route]
include_namespaces = ["team-a"]
drop_messages = ['^GET /healthz']
[sinks.errors]
type = "file"
path = "{root}/errors.jsonl"
[sinks.errors.route]
streams = ["stderr"]
"#
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.env_remove("POD_NAME").env_remove("POD_NAMESPACE");
    let mut shipper = Shipper::start(cmd, &config, node.root().join("all.jsonl"));
    let messages = |file: &str| -> Vec<String> {
        read_events(&node.root().join(file)).iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
    };
    let everything = a_out.len() + a_err.len() + health.len() + b_out.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages("all.jsonl").len() < everything || messages("team-a.jsonl").len() < a_out.len() + a_err.len() || messages("errors.jsonl").len() < a_err.len() {
        assert!(Instant::now() < deadline, "not everything arrived:\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_metric(&shipper, r#"logferry_filtered_events_total{sink="team-a"}"#, (health.len() + b_out.len()) as f64);
    wait_for_metric(&shipper, r#"logferry_routed_events_total{sink="errors"}"#, a_err.len() as f64);
    assert!(shipper.stop().success(), "{}", shipper.stderr());

    let of = |all: &[String], prefix: &str| -> Vec<String> { all.iter().filter(|m| m.starts_with(prefix)).cloned().collect() };
    let all = messages("all.jsonl");
    assert_eq!(all.len(), everything, "every line once");
    assert_eq!(of(&all, "a-out"), a_out);
    assert_eq!(of(&all, "b-out"), b_out);
    assert_eq!(of(&all, "GET"), health);
    let team_a = messages("team-a.jsonl");
    assert_eq!(team_a.len(), a_out.len() + a_err.len(), "team-a's lines but the health checks, once");
    assert_eq!(of(&team_a, "a-out"), a_out);
    assert_eq!(of(&team_a, "a-err"), a_err);
    assert_eq!(messages("errors.jsonl"), a_err, "stderr only, in order");
}

/// `replay --config` ships through every configured sink, with its route.
#[test]
fn replay_ships_through_every_configured_sink() {
    let node = Node::new();
    let root = node.root().display().to_string();
    let api = node.container("team-a", "api", "app", 0);
    let dns = node.container("kube-system", "coredns", "coredns", 0);
    append(&api, (cri("stdout", "api-1") + &cri("stderr", "api-err") + &cri("stdout", "api-2")).as_bytes());
    append(&dns, cri("stdout", "dns-1").as_bytes());
    let config = node.sinks_config(
        "",
        &format!(
            r#"[sinks.everything]
type = "file"
path = "{root}/everything.jsonl"
[sinks.apps]
type = "file"
path = "{root}/apps.jsonl"
[sinks.apps.route]
exclude_namespaces = ["kube-*"]
streams = ["stdout"]
"#
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["replay", "--config", config.to_str().unwrap(), &format!("{root}/var/log/pods")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let messages = |file: &str| -> Vec<String> {
        let mut m: Vec<String> = read_events(&node.root().join(file)).iter().map(|e| e["message"].as_str().unwrap().to_string()).collect();
        m.sort();
        m
    };
    assert_eq!(messages("everything.jsonl"), ["api-1", "api-2", "api-err", "dns-1"]);
    assert_eq!(messages("apps.jsonl"), ["api-1", "api-2"]);
}

/// SIGHUP with changed routes: `drop_messages` swapped and a namespace added, applied
/// from the next line read; nothing lost, nothing twice. A sink added takes a restart,
/// and says so.
#[test]
fn sighup_applies_changed_routes_without_loss_or_duplicates() {
    let node = Node::new();
    let root = node.root().display().to_string();
    let a = node.container("team-a", "api", "app", 0);
    let b = node.container("team-b", "web", "app", 0);
    let write_config = |route: &str, extra: &str| {
        node.sinks_config(
            "",
            &format!(
                r#"[sinks.all]
type = "file"
path = "{root}/all.jsonl"
[sinks.team]
type = "file"
path = "{root}/team.jsonl"
[sinks.team.route]
{route}
{extra}
"#
            ),
        )
    };
    let config = node.root().join("sinks.toml");
    write_config("include_namespaces = [\"team-a\"]\ndrop_messages = ['GET /healthz']", "");
    let mut shipper = Shipper::start(Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.root().join("all.jsonl"));
    let round = |tag: &str| -> Vec<String> {
        let lines: Vec<String> = (0..20).flat_map(|i| [format!("{tag}-{i}"), format!("GET /healthz {tag} {i}"), format!("GET /readyz {tag} {i}")]).collect();
        append(&a, lines.iter().map(|m| cri("stdout", &format!("a {m}"))).collect::<String>().as_bytes());
        append(&b, lines.iter().map(|m| cri("stdout", &format!("b {m}"))).collect::<String>().as_bytes());
        lines
    };
    let messages = |file: &str| -> Vec<String> { read_events(&node.root().join(file)).iter().map(|e| e["message"].as_str().unwrap().to_string()).collect() };
    let before = round("before");
    let wait_all = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while messages("all.jsonl").len() < n {
            assert!(Instant::now() < deadline, "lines never arrived");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_all(2 * before.len());
    // team-b now too, and readiness checks dropped instead of health checks.
    write_config("include_namespaces = [\"team-a\", \"team-b\"]\ndrop_messages = ['GET /readyz']", "");
    shipper.hangup();
    wait_for_log(&shipper, "routes_changed", 1);
    std::thread::sleep(Duration::from_millis(1500)); // a rescan follows team-b
    let after = round("after");
    wait_all(2 * (before.len() + after.len()));
    // A new sink is not started by SIGHUP: it says a restart is needed.
    write_config("include_namespaces = [\"team-a\", \"team-b\"]\ndrop_messages = ['GET /readyz']", &format!("[sinks.new]\ntype = \"file\"\npath = \"{root}/new.jsonl\""));
    shipper.hangup();
    wait_for_log(&shipper, "change only with a restart", 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(shipper.stop().success(), "{}", shipper.stderr());

    let all: Vec<String> = ["a", "b"].iter().flat_map(|p| before.iter().chain(&after).map(move |m| format!("{p} {m}"))).collect();
    crate::node::assert_exactly_once(messages("all.jsonl"), &all);
    let mut team: Vec<String> = before.iter().filter(|m| !m.starts_with("GET /healthz")).map(|m| format!("a {m}")).collect();
    for p in ["a", "b"] {
        team.extend(after.iter().filter(|m| !m.starts_with("GET /readyz")).map(|m| format!("{p} {m}")));
    }
    crate::node::assert_exactly_once(messages("team.jsonl"), &team);
    assert!(!node.root().join("new.jsonl").exists());
}

/// `drop_messages` sees what the application wrote: a Docker `log` value passed
/// through escaped (`\u003c`, `\"`, `\t`) is matched unescaped, and what is kept
/// arrives as written.
#[test]
fn drop_messages_match_docker_lines_unescaped() {
    let node = Node::new();
    let api = node.container("team-a", "api", "app", 0);
    let docker = |log: &str| format!("{{\"log\":\"{log}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-21T10:00:00Z\"}}\n");
    let lines = [
        docker(r#"GET /healthz \u003cok\u003e \"probe\"\tfast"#),
        docker(r#"kept \u003cb\u003e \"quoted\"\tand tabbed"#),
        docker(r#"GET /healthz \"probe\" plain"#),
    ];
    append(&api, lines.concat().as_bytes());
    let config = node.config_with("", "[sink.route]\ndrop_messages = ['^GET /healthz (<ok> )?\"probe\"']\n");
    let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["replay", "--config", config.to_str().unwrap(), node.root().join("var/log/pods").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<String> = read_events(&node.out()).iter().map(|e| e["message"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, ["kept <b> \"quoted\"\tand tabbed"]);
}
