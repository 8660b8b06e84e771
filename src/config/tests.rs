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
        "unknown key (expected one of: data_dir, shutdown_timeout, tail, decode, buffer, sink, sinks, multiline, metrics, log)"
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
        r#"required: add a [sink] table with type = one of "stdout", "file", "firehose", "cloudwatch", "s3" (or [sinks.<name>] tables, one per sink)"#
    );
    assert_eq!(
        message(&sink("path = \"/x\""), "sink.type"),
        r#"required: one of "stdout", "file", "firehose", "cloudwatch", "s3""#
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
        r#"not allowed when sink.type = "file" (it belongs to type = "firehose" or "cloudwatch" or "s3")"#
    );
    assert_eq!(
        message(&sink("type = \"kafka\""), "sink.type"),
        r#""kafka" is not one of "stdout", "file", "firehose", "cloudwatch", "s3""#
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
        // It is the one-sink form, so it has no [sinks]; and no [[multiline]], which
        // would change what it does (multiline/reference.toml sets every one of its keys).
        if *table == "multiline" {
            continue;
        }
        let file_keys = raw::sink_keys_of("file");
        let top: Vec<&str> = known.iter().copied().filter(|k| *k != "sinks" && *k != "multiline").collect();
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

/// Sinks: each type's keys, several sinks, routes.
mod sinks;

/// `[[multiline]]`.
mod multiline;
