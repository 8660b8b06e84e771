//! Routes: which events a sink receives — containers by namespace, pod and container,
//! streams, and `drop_messages` — on a running node.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::aws::metric;
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
    wait_for_metric(&shipper, r#"logferry_filtered_events_total{sink="file"}"#, 60.0);
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
    assert!(stderr.contains("left out by the route: 2 events, 1 streams not read"), "{stderr}");
}
