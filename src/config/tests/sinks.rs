//! Sink configuration: each type's keys and defaults, several named sinks, routes,
//! and the golden effective configs of every one-sink example.

use super::*;

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
    let mut union: Vec<&str> = ["file", "firehose", "cloudwatch", "s3"].into_iter().flat_map(raw::sink_keys_of).collect();
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
    assert_eq!(message(&empty, "sinks"), r#"must name at least one sink: [sinks.<name>] with type = one of "stdout", "file", "firehose", "cloudwatch", "s3""#);
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

/// `tests/fixtures/config/sink/s3.toml` documents every S3 key at its default (but
/// the bucket and node, which have none).
#[test]
fn the_s3_reference_sets_every_key_and_s3_problems_name_their_keys() {
    let text = std::fs::read_to_string(fixtures().join("sink/s3.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut written: Vec<&str> = doc["sink"].as_table().unwrap().keys().map(String::as_str).filter(|k| !["type", "max_bytes", "when_full", "route"].contains(k)).collect();
    written.sort_unstable();
    let mut known: Vec<&str> = raw::sink_keys_of("s3").into_iter().filter(|k| !["type", "max_bytes", "when_full", "route"].contains(k)).collect();
    known.sort_unstable();
    assert_eq!(written, known, "sink/s3.toml must set every S3 key");
    let config = ok(&text);
    let SinkConfig::S3(s3) = &config.sinks[0].config else { panic!("an S3 sink") };
    assert_eq!((s3.compression, s3.object_max_bytes, s3.object_max_age), (Compression::Gzip, 8 << 20, ms(60_000)));
    let p = problems("[sink]\ntype = \"s3\"\nkey_prefix = \"/{day}/\"\ncompression = \"lz4\"\nobject_max_age = \"0s\"");
    assert_eq!(keys(&p), ["sink.bucket", "sink.key_prefix", "sink.compression", "sink.object_max_age"]);
    let p = problems("[sink]\ntype = \"s3\"\nbucket = \"b\"\nnode = \"\"");
    assert!(message(&p, "sink.node").contains("NODE_NAME"));
}
