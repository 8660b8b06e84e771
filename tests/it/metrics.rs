//! `/metrics`, `/healthz` and `/readyz` of a running `logferry run`.

use std::time::{Duration, Instant};

use crate::node::{append_cri, http_get, numbered, Node};

/// The value of the first sample of `name` (with its labels as written) in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn the_catalogue_is_served_with_values_that_add_up() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let msgs = numbered("counted", 500);
    append_cri(&live, &msgs);
    append_cri(&live, &["tail".to_string()]);
    let mut shipper = node.start("");
    node.wait_for(&msgs, Duration::from_secs(30));
    let addr = shipper.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        let shipped = sample(&body, "logferry_sink_records_total{sink=\"default\",outcome=\"ok\"}");
        // The tailer publishes its counters about once a second.
        let read = sample(&body, "logferry_events_total{stream=\"stdout\"}");
        if shipped == Some(501.0) && read == Some(501.0) {
            break body;
        }
        assert!(Instant::now() < deadline, "counters never reached 501:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for (name, want) in [
        ("logferry_events_total{stream=\"stdout\"}", Some(501.0)),
        ("logferry_events_total{stream=\"stderr\"}", Some(0.0)),
        ("logferry_files_followed", Some(1.0)),
        ("logferry_file_unread_bytes", Some(0.0)),
        ("logferry_buffer_records", Some(0.0)),
        ("logferry_buffer_memory_bytes", Some(0.0)),
        ("logferry_shipping_lag_seconds{sink=\"default\"}", Some(0.0)),
        ("logferry_routed_events_total{sink=\"default\"}", Some(501.0)),
        ("logferry_backpressure_active", Some(0.0)),
        ("logferry_malformed_lines_total{format=\"cri\"}", Some(0.0)),
        ("logferry_rotated_unread_bytes_total", Some(0.0)),
        ("logferry_build_info{version=\"0.1.0\"}", Some(1.0)),
    ] {
        assert_eq!(sample(&scrape, name), want, "{name} in\n{scrape}");
    }
    assert!(sample(&scrape, "logferry_buffer_max_bytes").is_some_and(|v| v > 0.0));
    assert!(sample(&scrape, "logferry_read_bytes_total").is_some_and(|v| v > 10_000.0));
    assert!(scrape.contains("# HELP logferry_shipping_lag_seconds"), "{scrape}");
    // Not on a terminal: logferry's own logs are JSON lines.
    let log = shipper.stderr();
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{log}");
    assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(http_get(addr, "/nope").0, 404);
    assert!(shipper.stop().success());
}

#[test]
fn readyz_fails_while_the_sink_cannot_write_and_recovers_without_loss() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    // The output "disk" is full: the sink's file is /dev/full.
    let out = node.out();
    std::os::unix::fs::symlink("/dev/full", &out).unwrap();
    let msgs = numbered("waiting-for-disk", 200);
    append_cri(&live, &msgs);
    let mut shipper = node.start("");
    let addr = shipper.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = http_get(addr, "/readyz");
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "never reported the sink failing: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("sink default: failing") && body.contains("No space left"), "{body}");
    assert_eq!(http_get(addr, "/healthz").0, 200, "failing output is not a dead process");
    // Space returns: the sink's path is a real file again.
    std::fs::remove_file(&out).unwrap();
    std::fs::File::create(&out).unwrap();
    node.wait_for(&msgs, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shipper.stop().success());
    crate::node::assert_exactly_once(node.messages(), &msgs);
}
