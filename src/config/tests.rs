//! Config: defaults, a full config, every problem reported, the pod filter, and the
//! golden error texts in `tests/fixtures/config/` (`<case>.toml` → `<case>.err`).

use std::path::Path;

use super::*;

const STDOUT: &str = "[sink]\ntype = \"stdout\"\n";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(text, &EnvView::default())
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("config should be valid, got:\n{e}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

/// The message reported for `key`, which must be reported exactly once.
fn message<'a>(problems: &'a [Problem], key: &str) -> &'a str {
    let found: Vec<_> = problems.iter().filter(|p| p.key == key).collect();
    assert_eq!(
        found.len(),
        1,
        "{key} reported {} times in {problems:#?}",
        found.len()
    );
    &found[0].message
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_minimal_config_gets_every_default() {
    let c = ok(STDOUT);
    assert_eq!(c.data_dir, Path::new("/var/lib/logferry"));
    assert_eq!(c.shutdown_timeout, ms(20_000));
    assert_eq!(c.sinks[0].config, SinkConfig::Stdout);

    let t = &c.tail;
    assert_eq!(t.include, ["/var/log/containers/*.log"]);
    assert!(t
        .include_set
        .is_match("/var/log/containers/web_default_nginx-0123.log"));
    assert!(
        !t.include_set.is_match("/var/log/containers/sub/web.log"),
        "* stops at /"
    );
    assert!(t.exclude.is_empty());
    assert_eq!(
        t.roots,
        [
            Path::new("/var/log/pods"),
            Path::new("/var/lib/docker/containers")
        ]
    );
    assert_eq!(t.start_at, StartAt::Beginning);
    assert_eq!(
        (t.rescan_interval, t.rotate_wait, t.checkpoint_interval),
        (ms(10_000), ms(30_000), ms(200))
    );
    assert_eq!((t.max_open_files, t.read_bytes_per_turn, t.read_threads), (1024, 512 << 10, 2));
    assert!(t.pods.allows("kube-system", "coredns-1", "coredns"));
    assert_eq!(t.pods.own_pod(), None, "no env, no own pod");

    assert_eq!(c.decode.format, FormatChoice::Auto);
    assert_eq!(c.decode.max_message_bytes, 1 << 20);
    assert_eq!(c.decode.oversize, Oversize::Truncate);
    assert_eq!(c.message_format, MessageFormat::String);
    assert_eq!(c.partial_flush_timeout, ms(5000));
}

#[test]
fn a_full_config_sets_every_value() {
    let c = ok(r#"
        data_dir = "/data/logferry"
        shutdown_timeout = "1m 30s"
        [tail]
        include = ["/var/log/containers/*.log", "/var/log/pods/**/*.log"]
        exclude = ["**/*.gz", "/var/log/containers/noisy-*"]
        roots = ["/var/log/pods"]
        start_at = "end"
        rescan_interval = "500ms"
        rotate_wait = "0s"
        checkpoint_interval = "2s"
        max_open_files = 1
        read_bytes_per_turn = 4096
        read_threads = 1
        include_namespaces = ["prod-*"]
        exclude_namespaces = ["prod-canary"]
        include_pods = ["web-*", "api-*"]
        exclude_pods = ["web-debug-*"]
        include_containers = []
        exclude_containers = ["istio-proxy"]
        exclude_own_pod = false
        [decode]
        format = "cri"
        max_message_bytes = 16777216
        oversize = "drop"
        message_format = "json"
        partial_flush_timeout = "250ms"
        [sink]
        type = "file"
        path = "/data/out.jsonl"
    "#);
    assert_eq!(c.data_dir, Path::new("/data/logferry"));
    assert_eq!(c.shutdown_timeout, ms(90_000));
    assert_eq!(
        c.sinks[0].config,
        SinkConfig::File {
            path: "/data/out.jsonl".into()
        }
    );

    let t = &c.tail;
    assert_eq!(
        t.include,
        ["/var/log/containers/*.log", "/var/log/pods/**/*.log"]
    );
    assert!(t.include_set.is_match("/var/log/pods/ns_pod_uid/c/0.log"));
    assert!(t
        .exclude
        .is_match("/var/log/pods/ns_pod_uid/c/0.log.20261121-100000.gz"));
    assert!(t
        .exclude
        .is_match("/var/log/containers/noisy-1_ns_c-id.log"));
    assert_eq!(t.roots, [Path::new("/var/log/pods")]);
    assert_eq!(t.start_at, StartAt::End);
    assert_eq!(
        (t.rescan_interval, t.rotate_wait, t.checkpoint_interval),
        (ms(500), ms(0), ms(2000))
    );
    assert_eq!((t.max_open_files, t.read_bytes_per_turn, t.read_threads), (1, 4096, 1));
    assert!(t.pods.allows("prod-eu", "api-1", "app"));
    assert!(!t.pods.allows("prod-canary", "api-1", "app"));
    assert!(!t.pods.allows("prod-eu", "web-debug-1", "app"));
    assert!(!t.pods.allows("prod-eu", "api-1", "istio-proxy"));
    assert!(!t.pods.allows("dev", "api-1", "app"));

    assert_eq!(c.decode.format, FormatChoice::Cri);
    assert_eq!(c.decode.max_message_bytes, 16 << 20);
    assert_eq!(c.decode.oversize, Oversize::Drop);
    assert_eq!(c.message_format, MessageFormat::Json);
    assert_eq!(c.partial_flush_timeout, ms(250));
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let p = problems(
        r#"
        data_dir = "var/lib"
        shutdown_timeout = "soon"
        [tail]
        include = ["/var/log/containers/*.log", "/var/log/[", "relative/*.log"]
        exclude = ["*.gz"]
        roots = ["/var/log/pods", "relative/dir", "/var/log/../etc"]
        start_at = "middle"
        rescan_interval = "10 parsecs"
        checkpoint_interval = "0s"
        max_open_files = -1
        read_bytes_per_turn = 4095
        read_threads = 9
        include_namespaces = ["kube-{system"]
        exclude_containers = ["a", "[z-a]"]
        [decode]
        format = "json"
        max_message_bytes = 16777217
        oversize = "cut"
        message_format = "yaml"
        partial_flush_timeout = "0ms"
        [sink]
        type = "file"
    "#,
    );
    assert_eq!(
        keys(&p),
        [
            "data_dir",
            "shutdown_timeout",
            "tail.include[1]",
            "tail.include[2]",
            "tail.exclude[0]",
            "tail.roots[1]",
            "tail.roots[2]",
            "tail.start_at",
            "tail.rescan_interval",
            "tail.checkpoint_interval",
            "tail.max_open_files",
            "tail.read_bytes_per_turn",
            "tail.read_threads",
            "tail.include_namespaces[0]",
            "tail.exclude_containers[1]",
            "decode.format",
            "decode.max_message_bytes",
            "decode.oversize",
            "decode.message_format",
            "decode.partial_flush_timeout",
            "sink.path",
        ]
    );
    assert_eq!(
        message(&p, "data_dir"),
        r#"must be an absolute path, got "var/lib""#
    );
    assert_eq!(
        message(&p, "tail.include[1]"),
        r#"invalid glob "/var/log/[": unclosed character class; missing ']'"#
    );
    assert_eq!(
        message(&p, "tail.include[2]"),
        r#"must be an absolute path glob, got "relative/*.log""#
    );
    assert_eq!(
        message(&p, "tail.roots[2]"),
        r#"must not contain "..", got "/var/log/../etc""#
    );
    assert_eq!(
        message(&p, "tail.start_at"),
        r#""middle" is not one of "beginning", "end""#
    );
    assert_eq!(
        message(&p, "tail.rescan_interval"),
        r#""10 parsecs" is not a duration (examples: "500ms", "10s", "1m")"#
    );
    assert_eq!(
        message(&p, "tail.checkpoint_interval"),
        r#"must be greater than 0, got "0s""#
    );
    assert_eq!(
        message(&p, "tail.max_open_files"),
        "must be at least 1, got -1"
    );
    assert_eq!(
        message(&p, "decode.max_message_bytes"),
        "must be between 1 and 16777216 (16 MiB), got 16777217"
    );
    assert_eq!(
        message(&p, "sink.path"),
        r#"required when sink.type = "file""#
    );
}

#[test]
fn unknown_keys_are_reported_in_every_table() {
    let p = problems(
        r#"
        colour = "blue"
        [alerts]
        port = 9090
        [tail]
        include_pod = ["web-*"]
        [decode]
        type = "cri"
        [sink]
        type = "stdout"
        "a.b" = 1
    "#,
    );
    assert_eq!(
        keys(&p),
        [
            "alerts",
            "colour",
            "tail.include_pod",
            "decode.type",
            "sink.\"a.b\""
        ]
    );
    assert_eq!(
        message(&p, "colour"),
        "unknown key (expected one of: data_dir, shutdown_timeout, tail, decode, buffer, sink, sinks, metrics, log)"
    );
    assert!(message(&p, "tail.include_pod").ends_with(r#"; did you mean "include_pods"?"#));
    assert!(message(&p, "decode.type").ends_with(r#"; "type" belongs in [sink]"#));
    assert_eq!(
        message(&p, "sink.\"a.b\""),
        "unknown key (expected one of: type, max_bytes, when_full, route)"
    );
}

#[test]
fn an_unknown_key_may_hold_any_value() {
    let p = problems(
        "when = 1979-05-27T07:32:00Z\nnested = { a = [1, { b = 2 }] }\n[sink]\ntype = \"stdout\"\n",
    );
    assert_eq!(
        keys(&p),
        ["nested", "when"],
        "unknown keys come in name order"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_one_problem_among_others() {
    let p = problems(
        r#"
        tail = 5
        [decode]
        max_message_bytes = "1MiB"
        partial_flush_timeout = 5
        oversize = "cut"
        [sink]
        type = "stdout"
    "#,
    );
    assert_eq!(
        keys(&p),
        [
            "tail",
            "decode.max_message_bytes",
            "decode.oversize",
            "decode.partial_flush_timeout"
        ]
    );
    assert_eq!(message(&p, "tail"), "must be a table, got 5");
    assert_eq!(
        message(&p, "decode.max_message_bytes"),
        r#"must be an integer, got "1MiB""#
    );
    assert_eq!(
        message(&p, "decode.partial_flush_timeout"),
        r#"must be a duration string (examples: "500ms", "10s", "1m"), got 5"#
    );
}

#[test]
fn the_sink_type_decides_which_keys_it_needs() {
    let sink = |body: &str| problems(&format!("[sink]\n{body}"));
    assert_eq!(
        message(&problems(""), "sink.type"),
        r#"required: add a [sink] table with type = one of "stdout", "file", "firehose", "cloudwatch" (or [sinks.<name>] tables, one per sink)"#
    );
    assert_eq!(
        message(&sink("path = \"/x\""), "sink.type"),
        r#"required: one of "stdout", "file", "firehose", "cloudwatch""#
    );
    assert_eq!(
        message(&sink("type = \"file\""), "sink.path"),
        r#"required when sink.type = "file""#
    );
    assert_eq!(
        message(&sink("type = \"file\"\npath = \"out.jsonl\""), "sink.path"),
        r#"must be an absolute path, got "out.jsonl""#
    );
    assert_eq!(
        message(&sink("type = \"stdout\"\npath = \"/x\""), "sink.path"),
        r#"not allowed when sink.type = "stdout" (remove it, or set type = "file")"#
    );
    assert_eq!(
        message(&sink("type = \"file\"\npath = \"/x\"\ndelivery_stream = \"s\""), "sink.delivery_stream"),
        r#"not allowed when sink.type = "file" (it belongs to type = "firehose")"#
    );
    assert_eq!(
        message(&sink("type = \"firehose\"\ndelivery_stream = \"s\"\npath = \"/x\""), "sink.path"),
        r#"not allowed when sink.type = "firehose" (it belongs to type = "file")"#
    );
    assert_eq!(
        message(&sink("type = \"cloudwatch\"\ncluster = \"c\"\ndelivery_stream = \"s\""), "sink.delivery_stream"),
        r#"not allowed when sink.type = "cloudwatch" (it belongs to type = "firehose")"#
    );
    assert_eq!(
        message(&sink("type = \"file\"\npath = \"/x\"\nregion = \"r\""), "sink.region"),
        r#"not allowed when sink.type = "file" (it belongs to type = "firehose" or "cloudwatch")"#
    );
    assert_eq!(
        message(&sink("type = \"kafka\""), "sink.type"),
        r#""kafka" is not one of "stdout", "file", "firehose", "cloudwatch""#
    );
    assert_eq!(
        keys(&problems("sink = 1")),
        ["sink"],
        "a mistyped table is one problem, not two"
    );
}

#[test]
fn an_empty_include_list_is_refused() {
    let p = problems(&format!("[tail]\ninclude = []\n{STDOUT}"));
    assert_eq!(
        message(&p, "tail.include"),
        r#"must list at least one glob, e.g. ["/var/log/containers/*.log"]"#
    );
}

#[test]
fn path_globs_must_be_anchored() {
    let p = problems(&format!(
        "[tail]\ninclude = [\"**/*.log\"]\nexclude = [\"**.gz\", \"x/*\"]\n{STDOUT}"
    ));
    assert_eq!(
        keys(&p),
        ["tail.include[0]", "tail.exclude[0]", "tail.exclude[1]"]
    );
    assert_eq!(
        message(&p, "tail.exclude[0]"),
        r#"must be an absolute path glob or start with "**/", got "**.gz""#
    );
    let c = ok(&format!("[tail]\nexclude = [\"**/*.gz\"]\n{STDOUT}"));
    assert!(c
        .tail
        .exclude
        .is_match("/var/log/pods/ns_pod_uid/c/0.log.20261121-100000.gz"));
}

#[test]
fn durations_that_may_be_zero_and_those_that_may_not() {
    let c = ok(&format!(
        "shutdown_timeout = \"0s\"\n[tail]\nrotate_wait = \"0s\"\n{STDOUT}"
    ));
    assert_eq!(
        (c.shutdown_timeout, c.tail.rotate_wait),
        (Duration::ZERO, Duration::ZERO)
    );
    for key in ["rescan_interval", "checkpoint_interval"] {
        let p = problems(&format!("[tail]\n{key} = \"0ms\"\n{STDOUT}"));
        assert_eq!(
            message(&p, &format!("tail.{key}")),
            r#"must be greater than 0, got "0ms""#
        );
    }
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let err = parse("data_dir = \"/x\"\n\n[tail\n").unwrap_err();
    let ConfigError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*line, *column), (3, 6));
    assert!(err.problems().is_empty());
}

fn pod_filter(tail: &str, env: &EnvView) -> PodFilter {
    let text = format!("[tail]\n{tail}\n{STDOUT}");
    Config::from_toml_str_with_env(&text, env)
        .unwrap()
        .tail
        .pods
}

#[test]
fn pod_filter_includes_all_when_no_include_is_given() {
    let f = pod_filter("exclude_namespaces = [\"kube-*\"]", &EnvView::default());
    assert!(f.allows("default", "web-1", "nginx"));
    assert!(!f.allows("kube-system", "coredns-1", "coredns"));
}

#[test]
fn pod_filter_exclude_wins_over_include() {
    let f = pod_filter(
        "include_pods = [\"web-*\"]\nexclude_pods = [\"web-canary-*\"]",
        &EnvView::default(),
    );
    assert!(f.allows("default", "web-1", "nginx"));
    assert!(!f.allows("default", "web-canary-1", "nginx"));
    assert!(!f.allows("default", "api-1", "nginx"), "not included");
}

#[test]
fn pod_filter_checks_each_name_against_its_own_globs() {
    let f = pod_filter(
        "include_containers = [\"app\"]\ninclude_namespaces = [\"prod\"]",
        &EnvView::default(),
    );
    assert!(f.allows("prod", "app", "app"));
    assert!(
        !f.allows("app", "prod", "app"),
        "namespace and pod are not interchangeable"
    );
    assert!(!f.allows("prod", "web-1", "sidecar"));
}

#[test]
fn pod_filter_leaves_out_our_own_pod() {
    let env = EnvView {
        pod_namespace: Some("logging".into()),
        pod_name: Some("logferry-x7k2p".into()),
        ..EnvView::default()
    };
    let f = pod_filter("", &env);
    assert_eq!(f.own_pod(), Some(("logging", "logferry-x7k2p")));
    assert!(!f.allows("logging", "logferry-x7k2p", "logferry"));
    assert!(
        f.allows("logging", "logferry-abcde", "logferry"),
        "the other nodes' logferry pods are shipped"
    );
    assert!(
        f.allows("default", "logferry-x7k2p", "logferry"),
        "same name, other namespace"
    );

    let kept = pod_filter("exclude_own_pod = false", &env);
    assert_eq!(kept.own_pod(), None);
    assert!(kept.allows("logging", "logferry-x7k2p", "logferry"));

    let half = EnvView {
        pod_namespace: None,
        pod_name: Some("logferry-x7k2p".into()),
        ..EnvView::default()
    };
    assert_eq!(
        pod_filter("", &half).own_pod(),
        None,
        "both variables are needed"
    );
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let path = fixtures().join("no-such-file.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot read config file {}", path.display())
    );
}

/// The reference config: valid, every key set, each to its default, so that what it
/// documents cannot drift from what the code does.
#[test]
fn the_reference_config_sets_every_key_to_its_default() {
    let path = fixtures().join("node.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    for (table, known) in raw::TABLES {
        // The [sink] of node.toml is a file sink; sink/*.toml hold the others' keys.
        // It is the one-sink form, so it has no [sinks].
        let file_keys = raw::sink_keys_of("file");
        let top: Vec<&str> = known.iter().copied().filter(|k| *k != "sinks").collect();
        let known: &[&str] = match *table {
            "sink" => &file_keys,
            "" => &top,
            _ => known,
        };
        let keys: Vec<&str> = match *table {
            "" => doc.keys().map(String::as_str).collect(),
            path => path
                .split('.')
                .fold(&doc, |t, name| t[name].as_table().unwrap())
                .keys()
                .map(String::as_str)
                .collect(),
        };
        let mut known = known.to_vec();
        let mut keys = keys;
        known.sort_unstable();
        keys.sort_unstable();
        assert_eq!(keys, known, "node.toml must set every key of [{table}]");
    }

    let reference = Config::from_toml_str_with_env(&text, &EnvView::default()).unwrap();
    let defaults = ok("[sink]\ntype = \"file\"\npath = \"/var/lib/logferry/out.jsonl\"");
    assert_eq!(format!("{reference:?}"), format!("{defaults:?}"));
    assert!(Config::load(&path).is_ok());
}

/// `tests/fixtures/config/<case>.toml` (but `node.toml`) must fail with exactly the
/// text of `<case>.err`. `BLESS=1 cargo test --lib config` rewrites the `.err` files.
#[test]
fn golden_error_texts() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && !p.ends_with("node.toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "fixtures missing: {cases:?}");
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let got = match parse(&text) {
            Ok(_) => panic!("{} should not be a valid config", case.display()),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; this case reports:\n{got}",
                expected_path.display()
            )
        });
        assert_eq!(
            got,
            expected,
            "{} reports other text than its .err file",
            case.display()
        );
    }
}

#[test]
fn environment_variables_fill_values_and_override_node_keys() {
    let env = EnvView {
        vars: [("NODE_NAME", "ip-10-0-1-2"), ("LOGFERRY_DATA_DIR", "/mnt/logferry")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..EnvView::default()
    };
    let text = "data_dir = \"/var/lib/logferry\"\n[sink]\ntype = \"file\"\npath = \"/var/log/${NODE_NAME}.jsonl\"\n";
    let config = Config::from_toml_str_with_env(text, &env).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/mnt/logferry"));
    assert_eq!(config.sinks[0].config, SinkConfig::File { path: "/var/log/ip-10-0-1-2.jsonl".into() });
    let err = Config::from_toml_str_with_env("[sink]\ntype = \"${SINK_TYPE}\"\n", &env).unwrap_err();
    assert_eq!(err.problems()[0].key, "sink.type");
    assert!(err.problems()[0].message.contains("SINK_TYPE is not set"), "{err}");
}

#[test]
fn the_effective_config_fills_in_defaults_and_keeps_the_file_values() {
    let text = "[tail]\nstart_at = \"end\"\n[sink]\ntype = \"stdout\"\n";
    let out = effective_toml(text, &EnvView::default()).unwrap();
    let v: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(v["tail"]["start_at"].as_str(), Some("end"));
    assert_eq!(v["tail"]["rescan_interval"].as_str(), Some("10s"));
    assert_eq!(v["buffer"]["max_bytes"].as_integer(), Some(1 << 30));
    assert_eq!(v["sink"]["type"].as_str(), Some("stdout"));
    assert!(v["sink"].get("path").is_none());
    assert!(Config::from_toml_str_with_env(&out, &EnvView::default()).is_ok(), "{out}");
}

#[test]
fn firehose_needs_a_stream_and_checks_every_key() {
    let sink = |body: &str| problems(&format!("[sink]\ntype = \"firehose\"\n{body}"));
    assert_eq!(
        message(&sink(""), "sink.delivery_stream"),
        r#"required when sink.type = "firehose": the delivery stream's name"#
    );
    let p = sink(
        "delivery_stream = \"s\"\nrecord_max_bytes = 2000000\nendpoint = \"localhost:4566\"\n\
         oversize = \"drop\"\nmax_in_flight = 0\nmax_bytes_per_second = 10\nrate_recovery = \"0s\"",
    );
    assert_eq!(
        keys(&p),
        [
            "sink.endpoint",
            "sink.max_in_flight",
            "sink.rate_recovery",
            "sink.record_max_bytes",
            "sink.oversize",
            "sink.max_bytes_per_second"
        ]
    );
    assert_eq!(message(&p, "sink.record_max_bytes"), "must be between 1024 and 1024000, got 2000000");
    assert_eq!(message(&p, "sink.endpoint"), r#""localhost:4566" is not a URL like "https://firehose.eu-west-1.amazonaws.com""#);
}

/// `tests/fixtures/config/sink/firehose.toml` documents every Firehose key at its
/// default (but the stream's name, which has none).
#[test]
fn the_firehose_reference_sets_every_key_to_its_default() {
    let text = std::fs::read_to_string(fixtures().join("sink/firehose.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut keys: Vec<&str> = doc["sink"].as_table().unwrap().keys().map(String::as_str).collect();
    // The keys every type has are documented once, in node.toml.
    let mut known: Vec<&str> = raw::sink_keys_of("firehose").into_iter().filter(|k| *k == "type" || !raw::COMMON_SINK_KEYS.contains(k)).collect();
    keys.sort_unstable();
    known.sort_unstable();
    assert_eq!(keys, known, "sink/firehose.toml must set every Firehose key");
    let reference = Config::from_toml_str_with_env(&text, &EnvView::default()).unwrap();
    let minimal = ok("[sink]\ntype = \"firehose\"\ndelivery_stream = \"logs\"\nregion = \"eu-west-1\"");
    let SinkConfig::Firehose(f) = &minimal.sinks[0].config else { panic!("{:?}", minimal.sinks[0].config) };
    assert_eq!(f.record_max_bytes, 1_024_000);
    assert_eq!(f.pacing.bytes_per_second, 1 << 20);
    assert_eq!(format!("{:?}", reference.sinks[0].config), format!("{:?}", SinkConfig::Firehose(FirehoseConfig { endpoint: None, ..f.clone() })));
}

#[test]
fn cloudwatch_templates_and_node_values_are_checked() {
    let sink = |body: &str, env: &EnvView| {
        let text = format!("[sink]\ntype = \"cloudwatch\"\n{body}");
        match Config::from_toml_str_with_env(&text, env) {
            Ok(c) => Ok(c),
            Err(ConfigError::Invalid { problems }) => Err(problems),
            Err(e) => panic!("{e}"),
        }
    };
    let none = EnvView::default();
    let p = sink("log_stream = \"{node}/{oops}\"\nretention_days = 2\nmessage_key = \"msg\"", &none).unwrap_err();
    assert_eq!(keys(&p), ["sink.log_stream", "sink.cluster", "sink.retention_days", "sink.message_key"]);
    assert!(message(&p, "sink.log_stream").starts_with("{oops} is not a placeholder"));
    assert_eq!(message(&p, "sink.cluster"), "required by {cluster} in sink.log_group or sink.log_stream: set it, or CLUSTER_NAME in the environment");
    let mut env = EnvView::default();
    env.vars.insert("CLUSTER_NAME".into(), "prod".into());
    env.vars.insert("NODE_NAME".into(), "ip-1".into());
    let c = sink("log_stream = \"{node}/{pod}\"\nmessage_key = \"message\"", &env).unwrap();
    let SinkConfig::CloudWatch(cw) = c.sinks[0].config.clone() else { panic!("{:?}", c.sinks[0].config) };
    assert_eq!((cw.cluster.as_str(), cw.node.as_str(), cw.retention_days, cw.bare_message, cw.create_missing), ("prod", "ip-1", 30, true, true));
    assert_eq!(cw.pacing.requests_per_second, 1500);
}

/// `tests/fixtures/config/sink/cloudwatch.toml` documents every CloudWatch Logs key
/// at its default.
#[test]
fn the_cloudwatch_reference_sets_every_key_to_its_default() {
    let text = std::fs::read_to_string(fixtures().join("sink/cloudwatch.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut keys: Vec<&str> = doc["sink"].as_table().unwrap().keys().map(String::as_str).collect();
    // The keys every type has are documented once, in node.toml.
    let mut known: Vec<&str> = raw::sink_keys_of("cloudwatch").into_iter().filter(|k| *k == "type" || !raw::COMMON_SINK_KEYS.contains(k)).collect();
    keys.sort_unstable();
    known.sort_unstable();
    assert_eq!(keys, known, "sink/cloudwatch.toml must set every CloudWatch Logs key");
    let reference = Config::from_toml_str_with_env(&text, &EnvView::default()).unwrap();
    let minimal = ok("[sink]\ntype = \"cloudwatch\"\ncluster = \"prod\"\nnode = \"ip-10-0-0-1\"\nregion = \"eu-west-1\"");
    assert_eq!(format!("{:?}", reference.sinks[0].config), format!("{:?}", minimal.sinks[0].config));
}

#[test]
fn sink_keys_are_the_union_of_each_types_keys() {
    let mut union: Vec<&str> = ["file", "firehose", "cloudwatch"].into_iter().flat_map(raw::sink_keys_of).collect();
    union.sort_unstable();
    union.dedup();
    let mut all = raw::SINK_KEYS.to_vec();
    all.sort_unstable();
    assert_eq!(all, union);
}

#[test]
fn a_lone_sinks_table_is_a_named_sink_and_sink_is_default() {
    let one = ok("[sink]\ntype = \"stdout\"");
    assert_eq!((one.sinks.len(), one.sinks[0].name.as_str(), one.sinks[0].at.as_str()), (1, DEFAULT_SINK, "sink"));
    assert!(one.sinks[0].route.is_everything());
    assert_eq!((one.sinks[0].max_bytes, one.sinks[0].when_full), (1 << 30, WhenFull::Block));
    let named = ok("[buffer]\nmax_bytes = 67108864\nwhen_full = \"drop_oldest\"\n[sinks.archive]\ntype = \"file\"\npath = \"/var/log/a.jsonl\"");
    let s = &named.sinks[0];
    assert_eq!((s.name.as_str(), s.at.as_str(), s.max_bytes, s.when_full), ("archive", "sinks.archive", 64 << 20, WhenFull::DropOldest));
    // The sink's table path is the key path of its problems.
    let p = problems("[sinks.archive]\ntype = \"file\"");
    assert_eq!(message(&p, "sinks.archive.path"), r#"required when sinks.archive.type = "file""#);
}

#[test]
fn routing_problems_are_all_reported_with_their_key_paths() {
    let p = problems(
        r#"[buffer]
max_bytes = 67108864
[sink]
type = "stdout"
max_bytes = 134217728
when_full = "wait"
[sink.route]
include_namespaces = ["team-[a"]
exclude_pod = ["x"]
streams = ["stdout", "stdin"]
drop_messages = ['^GET /healthz', 'level=(debug', 42]"#,
    );
    assert_eq!(
        keys(&p),
        [
            "sink.route.exclude_pod",
            "sink.route.include_namespaces[0]",
            "sink.route.streams[1]",
            "sink.route.drop_messages[2]",
            "sink.route.drop_messages[1]",
            "sink.max_bytes",
            "sink.when_full",
        ]
    );
    assert!(message(&p, "sink.route.exclude_pod").ends_with(r#"did you mean "exclude_pods"?"#));
    assert_eq!(message(&p, "sink.route.streams[1]"), r#""stdin" is not a stream: "stdout" or "stderr""#);
    // The regex crate's own message, which points at the problem.
    let bad = message(&p, "sink.route.drop_messages[1]");
    assert!(bad.starts_with("not a regex: regex parse error:") && bad.contains("unclosed group"), "{bad}");
    assert_eq!(message(&p, "sink.max_bytes"), "134217728 is more than buffer.max_bytes (67108864): a sink's share cannot exceed the buffer");
    let none = problems("[sink]\ntype = \"stdout\"\n[sink.route]\nstreams = []");
    assert!(message(&none, "sink.route.streams").starts_with("must list"));
}

#[test]
fn sinks_are_named_once_each_and_never_share_an_output() {
    let both = problems("[sink]\ntype = \"stdout\"\n[sinks.a]\ntype = \"stdout\"");
    assert_eq!(keys(&both), ["sinks"]);
    assert!(message(&both, "sinks").starts_with("write either one [sink] table or [sinks.<name>] tables"));
    let empty = problems("sinks = {}");
    assert_eq!(message(&empty, "sinks"), r#"must name at least one sink: [sinks.<name>] with type = one of "stdout", "file", "firehose", "cloudwatch""#);
    let bad = problems("[sinks.\"Team A\"]\ntype = \"stdout\"");
    assert!(message(&bad, "sinks.\"Team A\"").starts_with(r#""Team A" is not a sink name"#));
    let shared = problems("[sinks.a]\ntype = \"file\"\npath = \"/x.jsonl\"\n[sinks.b]\ntype = \"file\"\npath = \"/x.jsonl\"");
    assert_eq!(message(&shared, "sinks.b.path"), "/x.jsonl is written by sinks.a already: two sinks cannot write one output");
}

#[test]
fn the_effective_config_shows_each_sink_with_its_share_and_route() {
    let text = "[sinks.archive]\ntype = \"file\"\npath = \"/var/log/a.jsonl\"\n[sinks.archive.route]\nexclude_namespaces = [\"kube-*\"]";
    let out: toml::Table = effective_toml(text, &EnvView::default()).unwrap().parse().unwrap();
    assert!(out.get("sink").is_none());
    let archive = out["sinks"]["archive"].as_table().unwrap();
    assert_eq!(archive["max_bytes"].as_integer(), Some(1 << 30));
    assert_eq!(archive["when_full"].as_str(), Some("block"));
    assert_eq!(archive["route"]["exclude_namespaces"].as_array().unwrap().len(), 1);
    assert_eq!(archive["route"]["streams"].as_array().unwrap().len(), 2);
    assert!(archive["route"]["drop_messages"].as_array().unwrap().is_empty());
}

#[test]
fn several_sinks_are_accepted_in_the_order_written_and_shown_each() {
    let text = "[buffer]\nmax_bytes = 134217728\n[sinks.b-archive]\ntype = \"stdout\"\n[sinks.a-team]\ntype = \"file\"\npath = \"/var/log/a.jsonl\"\nmax_bytes = 67108864\nwhen_full = \"drop_oldest\"\n[sinks.a-team.route]\ninclude_namespaces = [\"team-a\"]";
    let c = ok(text);
    // A TOML table's keys come back sorted: the names decide the order (and the bits).
    let names: Vec<&str> = c.sinks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a-team", "b-archive"]);
    assert_eq!((c.sinks[0].max_bytes, c.sinks[0].when_full), (64 << 20, WhenFull::DropOldest));
    assert_eq!((c.sinks[1].max_bytes, c.sinks[1].when_full), (128 << 20, WhenFull::Block));
    assert!(!c.sinks[0].route.is_everything() && c.sinks[1].route.is_everything());
    let out: toml::Table = effective_toml(text, &EnvView::default()).unwrap().parse().unwrap();
    assert_eq!(out["sinks"].as_table().unwrap().len(), 2);
    assert_eq!(out["sinks"]["b-archive"]["route"]["streams"].as_array().unwrap().len(), 2);
    let too_many: String = (0..17).map(|i| format!("[sinks.s{i}]\ntype = \"file\"\npath = \"/x{i}\"\n")).collect();
    assert_eq!(message(&problems(&too_many), "sinks"), "17 sinks; at most 16");
}

/// Every example config and every config the manifests ship (all written with one
/// `[sink]`) still means what it meant: one sink, named `default`, taking everything,
/// with the whole buffer as its share; and its effective configuration is the one
/// saved beside the fixtures (`effective/<name>.toml`; `BLESS=1` rewrites them).
#[test]
fn every_one_sink_config_still_runs_unchanged() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        ("node", fixtures().join("node.toml")),
        ("sink-firehose", fixtures().join("sink/firehose.toml")),
        ("sink-cloudwatch", fixtures().join("sink/cloudwatch.toml")),
        ("manifests-base", repo.join("manifests/base/logferry.toml")),
        ("manifests-firehose", repo.join("manifests/overlays/firehose/logferry.toml")),
        ("manifests-cloudwatch", repo.join("manifests/overlays/cloudwatch/logferry.toml")),
    ];
    let bless = std::env::var_os("BLESS").is_some();
    let mut env = EnvView::default();
    env.vars.insert("CLUSTER_NAME".into(), "prod".into());
    env.vars.insert("NODE_NAME".into(), "ip-10-0-1-2".into());
    for (name, path) in cases {
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::from_toml_str_with_env(&text, &env).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.sinks.len(), 1, "{name}");
        let sink = &config.sinks[0];
        assert_eq!((sink.name.as_str(), sink.at.as_str()), (DEFAULT_SINK, "sink"), "{name}");
        assert!(sink.route.is_everything(), "{name}");
        assert_eq!((sink.max_bytes, sink.when_full), (config.buffer.max_bytes, config.buffer.when_full), "{name}");
        let effective = effective_toml(&text, &env).unwrap();
        let golden = fixtures().join("effective").join(format!("{name}.toml"));
        if bless {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &effective).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e} (BLESS=1 writes it)", golden.display()));
        assert_eq!(effective, want, "{name}: the effective configuration changed");
    }
}
