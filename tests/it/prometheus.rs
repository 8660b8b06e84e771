//! A real Prometheus server (Debian's `prometheus`, installed by tests/install-tools.sh)
//! scrapes a running logferry on 127.0.0.1: the shipping-lag family is there, rises
//! while the sink is blocked, and falls back to zero once it drains.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backpressure::{drain, long_lines, stalled_shipper};
use crate::node::{append_cri, http_get, Node};

struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_prometheus(dir: &std::path::Path, target: std::net::SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: logferry\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is not installed: run tests/install-tools.sh (Debian package `prometheus`)");
    let p = Prometheus { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() || http_get(addr, "/-/ready").0 != 200 {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

/// The instant value of `query`, if the series exists yet.
fn query(p: &Prometheus, query: &str) -> Option<f64> {
    let (status, body) = http_get(p.addr, &format!("/api/v1/query?query={query}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn wait_for_value(p: &Prometheus, q: &str, what: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = query(p, q);
        if v.is_some_and(&ok) {
            return;
        }
        assert!(Instant::now() < deadline, "{q} never became {what} (last: {v:?})");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_sees_lag_rise_while_the_sink_is_blocked_and_fall_after() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let lines = long_lines("scraped", 20_000);
    append_cri(&live, &lines);
    let (mut shipper, stdout) = stalled_shipper(&node);
    let prometheus = start_prometheus(node.root(), shipper.metrics_addr());

    wait_for_value(&prometheus, "logferry_shipping_lag_seconds", "above 2 s", |v| v > 2.0);
    wait_for_value(&prometheus, "logferry_file_unread_bytes", "above 0", |v| v > 0.0);
    wait_for_value(&prometheus, "logferry_backpressure_active", "1", |v| v == 1.0);

    let reader = drain(stdout);
    wait_for_value(&prometheus, "logferry_file_unread_bytes", "0", |v| v == 0.0);
    wait_for_value(&prometheus, "logferry_shipping_lag_seconds", "0", |v| v == 0.0);
    wait_for_value(&prometheus, "logferry_backpressure_active", "0", |v| v == 0.0);
    assert!(shipper.stop().success());
    crate::node::assert_exactly_once(reader.join().unwrap(), &lines);
}
