//! The CloudWatch Logs sink with the real AWS SDK: against the AWS emulator (moto
//! server; read back with GetLogEvents) and against the fault-injecting server of
//! `fault` (throttling, 500s, dropped connections, missing groups and streams,
//! `rejectedLogEventsInfo`).
//!
//! CloudWatch refuses events older than 14 days, so these logs are written with
//! times from now, never a fixed date.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::aws::{assert_each_once, expected_lines, metric, pace_drops_and_recovers, replay, replay_config, run_with_sink, Moto};
use crate::fault::{throttling_server, Action, FaultServer, Rng};
use crate::node::append;

/// CRI lines for `msgs`, timed from `start_ms_ago` before now, a millisecond apart.
fn cri_now(path: &Path, msgs: &[String], start_ms_ago: i64) {
    let start = logferry::event::time::now() - start_ms_ago * 1_000_000;
    let mut data = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let t = logferry::event::time::format_rfc3339(start + i as i64 * 1_000_000);
        data.extend_from_slice(format!("{t} stdout F {m}\n").as_bytes());
    }
    append(path, &data);
}

/// `<dir>/var/log/pods/<ns>_<pod>_uid-<pod>/<container>/0.log`, empty.
fn pod_file(dir: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    let d = dir.join(format!("var/log/pods/{ns}_{pod}_uid-{pod}/{container}"));
    fs::create_dir_all(&d).unwrap();
    d.join("0.log")
}

fn cloudwatch_sink(endpoint: &str, extra: &str) -> String {
    format!("[sink]\ntype = \"cloudwatch\"\ncluster = \"test\"\nnode = \"n1\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n{extra}\n")
}

/// What `logs-read` says: the group's retention and each stream's messages in order.
fn read_group(moto: &Moto, group: &str) -> (Option<i64>, HashMap<String, Vec<String>>) {
    let out: serde_json::Value = serde_json::from_slice(&moto.helper(&["logs-read", &moto.endpoint, group])).unwrap();
    let streams = out["streams"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect())).collect())
        .unwrap_or_default();
    (out["retention"].as_i64(), streams)
}

/// The expected JSON lines (without newlines) of `path`, in order.
fn lines_of(path: &Path) -> Vec<String> {
    expected_lines(&[path]).into_iter().map(|l| String::from_utf8(l).unwrap().trim_end().to_string()).collect()
}

#[test]
fn replay_to_the_emulator_creates_the_group_and_streams_and_keeps_order() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let web = pod_file(dir.path(), "shop", "web", "nginx");
    let api = pod_file(dir.path(), "shop", "api", "app");
    // One line 30 days old: too old for CloudWatch, set aside and warned about.
    cri_now(&web, &["a month old".to_string()], 30 * 24 * 3600 * 1000);
    let web_msgs: Vec<String> = (0..1500).map(|i| format!("web {i} {}", "w".repeat(i % 300))).collect();
    let api_msgs: Vec<String> = (0..700).map(|i| format!("api {i}")).collect();
    cri_now(&web, &web_msgs, 600_000);
    cri_now(&api, &api_msgs, 300_000);
    let config = replay_config(dir.path(), &cloudwatch_sink(&moto.endpoint, "retention_days = 7\nlinger = \"10ms\""));
    let out = replay(&config, &[&dir.path().join("var")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: 1 event(s) are older than CloudWatch Logs accepts"), "{stderr}");
    let (retention, streams) = read_group(&moto, "/eks/test/containers");
    assert_eq!(retention, Some(7));
    let mut want_web = lines_of(&web);
    let old = want_web.remove(0);
    assert_eq!(streams["shop/web/nginx"], want_web, "every event once, in order");
    assert_eq!(streams["shop/api/app"], lines_of(&api));
    let dead = fs::read_to_string(dir.path().join("data/dead-letter/cloudwatch.jsonl")).unwrap();
    assert_eq!(dead.trim_end(), old);
}

#[test]
fn message_key_sends_the_bare_message() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let log = pod_file(dir.path(), "ns", "p", "c");
    let msgs: Vec<String> = (0..50).map(|i| format!("bare {i}")).collect();
    cri_now(&log, &msgs, 1000);
    let sink = cloudwatch_sink(&moto.endpoint, "message_key = \"message\"\nlog_group = \"/custom/{node}\"\nlog_stream = \"{pod}-{container}\"");
    let out = replay(&replay_config(dir.path(), &sink), &[&log]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, streams) = read_group(&moto, "/custom/n1");
    assert_eq!(streams["p-c"], msgs);
}

/// The messages of the live node's stream (`default/api/app`) in the emulator, once it
/// holds at least `n` (or after a minute, whatever it holds).
fn live_messages(moto: &Moto, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, streams) = read_group(moto, "/eks/test/containers");
        let got: Vec<String> = streams
            .get("default/api/app")
            .map(|m| m.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_live_node_ships_to_the_emulator_in_order() {
    let moto = Moto::start();
    let (_node, live, mut shipper) = run_with_sink(&cloudwatch_sink(&moto.endpoint, "linger = \"200ms\""));
    let want: Vec<String> = (0..1200).map(|i| format!("live {i}")).collect();
    for (n, part) in want.chunks(300).enumerate() {
        cri_now(&live, part, 60_000 - n as i64 * 1000);
        std::thread::sleep(Duration::from_millis(300));
    }
    let got = live_messages(&moto, want.len());
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    assert_eq!(got, want, "every line once, in order");
}

/// Regression: a dead letter that could not be written ended the delivery loop (and so
/// the process). Now the events wait in memory, `/readyz` says so, their records stay
/// unacknowledged, and once the directory can be written they are, exactly once;
/// everything else flows meanwhile.
#[test]
fn an_unwritable_dead_letter_directory_holds_the_events_until_it_can_be_written() {
    let moto = Moto::start();
    let (node, live, mut shipper) = run_with_sink(&cloudwatch_sink(&moto.endpoint, "linger = \"50ms\""));
    let addr = shipper.metrics_addr();
    // A file where the dead-letter directory goes: it cannot be created, even by root.
    let blocker = node.data().join("dead-letter");
    fs::create_dir_all(node.data()).unwrap();
    fs::write(&blocker, b"in the way\n").unwrap();
    let month_old: Vec<String> = (0..3).map(|i| format!("a month old {i}")).collect();
    cri_now(&live, &month_old, 30 * 24 * 3600 * 1000);
    let want: Vec<String> = (0..500).map(|i| format!("fresh {i}")).collect();
    cri_now(&live, &want, 10_000);
    assert_eq!(live_messages(&moto, want.len()), want, "the rest flows while dead letters wait");
    crate::data_dir::wait_for_readyz(&shipper, 503, &["cannot write dead letters", &blocker.display().to_string()]);
    assert!(metric(addr, r#"logferry_data_dir_errors_total{what="dead_letters"}"#) > 0.0);

    fs::remove_file(&blocker).unwrap();
    crate::data_dir::wait_for_readyz(&shipper, 200, &["ready"]);
    let dead_file = blocker.join("cloudwatch.jsonl");
    let dead_messages = |path: &Path| -> Vec<String> {
        fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(dead_messages(&dead_file), month_old);
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let log = shipper.stderr();
    assert_eq!(log.matches("dead letters wait in memory").count(), 1, "one error line per cause:\n{log}");

    // Acknowledged once written: a restart sends nothing again.
    let mut again = crate::node::Shipper::start(crate::aws::logferry_command(), &node.root().join("logferry.toml"), node.out());
    again.metrics_addr();
    std::thread::sleep(Duration::from_secs(1));
    assert!(again.stop().success(), "{}", again.stderr());
    assert_eq!(dead_messages(&dead_file), month_old);
    assert_eq!(live_messages(&moto, want.len()), want);
}

/// Random throttling, 500s and dropped connections; streams (and the group) that do
/// not exist until logferry creates them; one answer refusing two events as too old.
/// Every other event arrives exactly once; the refused two are in the dead letters.
#[test]
fn faults_missing_streams_and_refused_events_lose_nothing() {
    let mut rng = Rng(0xc10d_3a7c);
    let mut calls = 0;
    let server = FaultServer::start(move |_| {
        calls += 1;
        if calls == 3 {
            return Action::RejectOld(2);
        }
        match rng.next() % 100 {
            0..=14 => Action::Throttle,
            15..=24 => Action::ServerError,
            25..=29 => Action::Reset,
            _ => Action::Accept,
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for pod in ["a", "b", "c"] {
        for container in ["x", "y"] {
            let log = pod_file(dir.path(), "ns", pod, container);
            let msgs: Vec<String> = (0..800).map(|i| format!("{pod}/{container} {i} {}", "m".repeat(i % 200))).collect();
            cri_now(&log, &msgs, 120_000);
            want.extend(expected_lines(&[&log]));
        }
    }
    let sink = cloudwatch_sink(&server.endpoint(), "retention_days = 7\nlinger = \"10ms\"\nretry_max_wait = \"200ms\"\nrequest_timeout = \"2s\"");
    let out = replay(&replay_config(dir.path(), &sink), &[&dir.path().join("var")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("dead letters 2"), "{stderr}");
    let seen = server.seen.lock().unwrap();
    assert!(seen.throttled > 0 && seen.faults > 0 && seen.not_found >= 6, "throttled {} faults {} not found {}", seen.throttled, seen.faults, seen.not_found);
    assert_eq!(seen.groups.get("/eks/test/containers"), Some(&Some(7)), "the group, created with its retention");
    assert_eq!(seen.streams.len(), 6);
    let mut got: Vec<Vec<u8>> = seen.accepted.keys().flat_map(|k| seen.lines(k)).collect();
    let dead = fs::read_to_string(dir.path().join("data/dead-letter/cloudwatch.jsonl")).unwrap();
    for line in dead.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["reason"], "too_old");
        got.push(format!("{}\n", v["message"].as_str().unwrap()).into_bytes());
    }
    assert_each_once(&got, &want);
}

/// ThrottlingException halves the request pace (the AIMD shared with Firehose), and
/// it climbs back to the ceiling once the throttling stops; nothing is lost.
#[test]
fn throttling_slows_the_node_and_the_pace_recovers() {
    let (server, throttle) = throttling_server();
    let sink = cloudwatch_sink(&server.endpoint(), "linger = \"50ms\"\nretry_max_wait = \"300ms\"\nrate_recovery = \"3s\"\nmax_requests_per_second = 100");
    let (_node, live, mut shipper) = run_with_sink(&sink);
    let rate = r#"logferry_sink_rate_requests_per_second{sink="default"}"#;
    assert_eq!(metric(shipper.metrics_addr(), rate), 100.0);
    let want: Vec<String> = (0..300).map(|i| format!("paced {i}")).collect();
    cri_now(&live, &want, 10_000);
    let throttled = r#"logferry_sink_throttled_total{sink="default"}"#;
    pace_drops_and_recovers(&shipper, rate, throttled, 100.0, &throttle, |n| cri_now(&live, &[format!("more {n}")], 0));
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let got: Vec<String> = server.seen.lock().unwrap().messages("/eks/test/containers|default/api/app").into_iter().filter(|m| m.starts_with("paced ")).collect();
    assert_eq!(got, want);
}

/// SIGKILL while shipping to CloudWatch Logs (see `aws::sigkill_rounds`).
#[test]
fn sigkill_while_shipping_loses_nothing_and_repeats_only_what_was_in_flight() {
    let server = FaultServer::start(|_| Action::Accept);
    let sink = cloudwatch_sink(&server.endpoint(), "linger = \"20ms\"");
    let messages = || -> Vec<String> {
        let seen = server.seen.lock().unwrap();
        seen.messages("/eks/test/containers|default/api/app")
    };
    crate::aws::sigkill_rounds(&sink, |path, msgs| cri_now(path, msgs, 5_000), messages);
}

/// Regression: the buffer saved only the highest record below which everything was
/// acknowledged, so a crash sent again every record acknowledged after an older one
/// still waiting. Here one stream's record waits (its stream refused) while a newer
/// one's, written to the buffer's disk first, is accepted; then SIGKILL. After the
/// restart the accepted events are not sent again, and the waiting ones arrive.
#[test]
fn a_crash_after_out_of_order_acks_sends_nothing_acknowledged_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let refuse_api = Arc::new(AtomicBool::new(true));
    let refuse_slow = Arc::new(AtomicBool::new(true));
    let (api_flag, slow_flag) = (refuse_api.clone(), refuse_slow.clone());
    let server = FaultServer::start(move |call| {
        let refused = if call.stream.ends_with("default/api/app") { &api_flag } else { &slow_flag };
        match refused.load(Ordering::Relaxed) {
            true => Action::ServerError,
            false => Action::Accept,
        }
    });
    let sink = cloudwatch_sink(&server.endpoint(), "linger = \"20ms\"\nretry_max_wait = \"200ms\"");
    let (node, api, mut shipper) = run_with_sink(&sink);
    let slow = node.container("default", "slow", "app", 0);
    let slow_msgs: Vec<String> = (0..200).map(|i| format!("waits {i}")).collect();
    cri_now(&slow, &slow_msgs, 5_000);
    std::thread::sleep(Duration::from_millis(400));
    let api_msgs: Vec<String> = (0..1000).map(|i| format!("accepted {i}")).collect();
    cri_now(&api, &api_msgs, 4_000);
    // Unacknowledged for longer than the hold (200 ms): both are on the buffer's disk.
    std::thread::sleep(Duration::from_millis(1000));
    refuse_api.store(false, Ordering::Relaxed);
    let api_of = |server: &FaultServer| server.seen.lock().unwrap().messages("/eks/test/containers|default/api/app");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_of(&server).len() < api_msgs.len() {
        assert!(Instant::now() < deadline, "the accepted stream never arrived\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The acknowledgements are saved every checkpoint_interval (200 ms).
    std::thread::sleep(Duration::from_millis(800));
    shipper.kill();

    refuse_slow.store(false, Ordering::Relaxed);
    let mut again = crate::node::Shipper::start(crate::aws::logferry_command(), &node.root().join("logferry.toml"), node.out());
    let slow_of = |server: &FaultServer| server.seen.lock().unwrap().messages("/eks/test/containers|default/slow/app");
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow_of(&server).len() < slow_msgs.len() {
        assert!(Instant::now() < deadline, "the waiting stream never arrived\n{}", again.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(again.stop().success(), "{}", again.stderr());
    assert_eq!(slow_of(&server), slow_msgs, "the waiting events arrive once");
    let api_got = api_of(&server);
    let resent = api_got.len() - api_msgs.len();
    assert_eq!(api_got, api_msgs, "{resent} acknowledged events were sent again");
}

/// One log stream CloudWatch Logs refuses for good (access denied to it) while the
/// others are accepted: the others arrive in time, and after `park_after` the refused
/// stream is parked — what it held and what comes for it goes to the dead letters,
/// counted — so its records no longer hold back the buffer. Once it is accepted again,
/// a probe finds out and it flows; a restart sends nothing again.
#[test]
fn a_stream_refused_for_good_is_parked_to_the_dead_letters_while_the_others_flow() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let deny = Arc::new(AtomicBool::new(true));
    let denied = deny.clone();
    let server = FaultServer::start(move |call| match call.stream.ends_with("default/denied/app") && denied.load(Ordering::Relaxed) {
        true => Action::Error(400, "AccessDeniedException"),
        false => Action::Accept,
    });
    let sink = cloudwatch_sink(&server.endpoint(), "linger = \"20ms\"\nretry_max_wait = \"200ms\"\npark_after = \"2s\"");
    let (node, api, mut shipper) = run_with_sink(&sink);
    let addr = shipper.metrics_addr();
    let refused = node.container("default", "denied", "app", 0);
    let first: Vec<String> = (0..100).map(|i| format!("refused {i}")).collect();
    cri_now(&refused, &first, 10_000);
    let mut flowing = Vec::new();
    for round in 0..20 {
        let msgs: Vec<String> = (0..50).map(|i| format!("flows {round} {i}")).collect();
        cri_now(&api, &msgs, 5_000 - round * 100);
        flowing.extend(msgs);
        std::thread::sleep(Duration::from_millis(200));
    }
    let messages_of = |stream: &str| server.seen.lock().unwrap().messages(&format!("/eks/test/containers|{stream}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages_of("default/api/app").len() < flowing.len() {
        assert!(Instant::now() < deadline, "the other stream was held back\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(messages_of("default/api/app"), flowing);

    let dead_file = node.data().join("dead-letter/cloudwatch.jsonl");
    let parked = || -> Vec<String> {
        fs::read_to_string(&dead_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .inspect(|v| assert_eq!((v["reason"].as_str(), v["log_stream"].as_str()), (Some("parked"), Some("default/denied/app")), "{v}"))
            .map(|v| crate::fault::message(v["message"].as_str().unwrap().as_bytes()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while parked().len() < first.len() {
        assert!(Instant::now() < deadline, "never parked\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(parked(), first);
    assert_eq!(metric(addr, r#"logferry_dropped_records_total{reason="parked"}"#), 100.0);
    assert_eq!(metric(addr, r#"logferry_sink_streams{sink="default",state="parked"}"#), 1.0);
    assert!(shipper.stderr().contains("parked"), "{}", shipper.stderr());

    // Access granted: a probe (every park_after here) finds out, and it flows again.
    deny.store(false, Ordering::Relaxed);
    let later: Vec<String> = (0..50).map(|i| format!("granted {i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    while !messages_of("default/denied/app").iter().any(|m| m.starts_with("granted ")) {
        assert!(Instant::now() < deadline, "never flowed again\n{}", shipper.stderr());
        round += 1;
        cri_now(&refused, &[format!("probe {round}")], 1_000);
        std::thread::sleep(Duration::from_millis(300));
        if round == 10 {
            cri_now(&refused, &later, 1_000);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !later.iter().all(|m| messages_of("default/denied/app").contains(m)) {
        assert!(Instant::now() < deadline, "the granted stream never caught up\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(addr, r#"logferry_sink_streams{sink="default",state="parked"}"#), 0.0);
    assert!(shipper.stop().success(), "{}", shipper.stderr());

    // Every event went one way or the other, once; a restart sends nothing again.
    let dead_before = parked();
    let sent_before = messages_of("default/denied/app");
    let mut again = crate::node::Shipper::start(crate::aws::logferry_command(), &node.root().join("logferry.toml"), node.out());
    again.metrics_addr();
    std::thread::sleep(Duration::from_secs(1));
    assert!(again.stop().success(), "{}", again.stderr());
    assert_eq!(parked(), dead_before);
    assert_eq!(messages_of("default/denied/app"), sent_before);
    let mut all: Vec<String> = dead_before.into_iter().chain(sent_before).collect();
    all.sort();
    let mut want: Vec<String> = first.iter().chain(&later).cloned().chain((1..=round).map(|r| format!("probe {r}"))).collect();
    want.sort();
    assert_eq!(all, want, "each event of the refused stream either sent or set aside, once");
}

/// Pod churn: a thousand short-lived pods through the CloudWatch Logs sink. Each log
/// stream's queue lives only while it has events queued or in flight, so once
/// everything is delivered none is left.
#[test]
fn pod_churn_leaves_no_stream_queues_behind() {
    let server = FaultServer::start(|_| Action::Accept);
    let sink = cloudwatch_sink(&server.endpoint(), "linger = \"50ms\"");
    let (node, _, mut shipper) = run_with_sink(&sink);
    let addr = shipper.metrics_addr();
    let pods = 1000;
    for p in 0..pods {
        let log = node.container("churn", &format!("job-{p}"), "run", 0);
        cri_now(&log, &[format!("job {p} done")], 2_000);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = server.seen.lock().unwrap().accepted.len();
        if seen >= pods {
            break;
        }
        assert!(Instant::now() < deadline, "{seen} of {pods} streams arrived\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let active = r#"logferry_sink_streams{sink="default",state="active"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, active) != 0.0 {
        assert!(Instant::now() < deadline, "{} stream queues left after delivery", metric(addr, active));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(shipper.stop().success(), "{}", shipper.stderr());
}
