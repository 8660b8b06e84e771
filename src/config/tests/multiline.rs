//! `[[multiline]]`: every key, selection per container, and every problem with its
//! key path.

use super::*;
use crate::event::KubeMeta;

fn kube(namespace: &str, pod: &str, container: &str) -> KubeMeta {
    KubeMeta { namespace: namespace.into(), pod: pod.into(), pod_uid: None, container: container.into(), restart_count: None }
}

/// `tests/fixtures/config/multiline/reference.toml` sets every key of an entry; each container
/// gets the first entry that selects it.
#[test]
fn the_multiline_reference_sets_every_key_and_the_first_entry_that_selects_applies() {
    let text = std::fs::read_to_string(fixtures().join("multiline/reference.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut keys: Vec<&str> = doc["multiline"].as_array().unwrap().iter().flat_map(|t| t.as_table().unwrap().keys().map(String::as_str)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut known = raw::MULTILINE_KEYS.to_vec();
    known.sort_unstable();
    assert_eq!(keys, known, "multiline/reference.toml must set every key of [[multiline]]");
    let config = ok(&text);
    let rule = |k: KubeMeta| crate::config::multiline::rule_for(&config.multiline, Some(&k)).map(|m| (m.rule.name().to_string(), m.max_lines, m.flush_timeout));
    assert_eq!(rule(kube("payments", "web-1", "app")), Some(("java".into(), 1000, ms(1000))));
    assert_eq!(rule(kube("team-legacy", "web-1", "app")), None, "excluded namespace");
    assert_eq!(rule(kube("payments", "debug-1", "app")), None, "excluded pod");
    assert_eq!(rule(kube("payments", "web-1", "sidecar")), None, "not an included container");
    assert_eq!(rule(kube("ingest", "x", "y")), Some(("custom".into(), 200, ms(2000))));
    assert!(crate::config::multiline::rule_for(&config.multiline, None).is_none(), "a file outside the pod layout");
}

#[test]
fn multiline_problems_are_all_reported_with_their_key_paths() {
    let p = problems(&format!(
        r#"{STDOUT}
[[multiline]]
parser = "cobol"
[[multiline]]
start = "(unclosed"
continue = "ok"
[[multiline]]
start = "^x"
[[multiline]]
parser = "java"
start = "^x"
continue = "^y"
[[multiline]]
include_containers = ["app"]
[[multiline]]
parser = "go"
max_lines = 1
flush_timeout = "0s"
colour = "red"
"#
    ));
    assert_eq!(
        keys(&p),
        [
            "multiline[0].parser",
            "multiline[1].start",
            "multiline[2].continue",
            "multiline[3]",
            "multiline[4]",
            "multiline[5].colour",
            "multiline[5].max_lines",
            "multiline[5].flush_timeout",
        ]
    );
    assert!(message(&p, "multiline[0].parser").contains("not a built-in parser (expected one of: java, python, go, ruby, nodejs)"));
    assert!(message(&p, "multiline[1].start").starts_with("not a regex: "), "the regex crate's own message");
    assert!(message(&p, "multiline[3]").contains("not both"));
    assert!(message(&p, "multiline[4]").contains("needs `parser`"));
}

/// The effective config shows each entry as written, with the defaults it leaves out.
#[test]
fn the_effective_config_shows_each_multiline_entry_with_its_defaults() {
    let text = format!("{STDOUT}\n[[multiline]]\nparser = \"python\"\n[[multiline]]\nstart = \"^x\"\ncontinue = \"^ \"\nmax_lines = 50\n");
    let effective: toml::Table = effective_toml(&text, &EnvView::default()).unwrap().parse().unwrap();
    let entries = effective["multiline"].as_array().unwrap();
    assert_eq!(entries[0]["parser"].as_str(), Some("python"));
    assert_eq!(entries[0]["max_lines"].as_integer(), Some(1000));
    assert_eq!(entries[0]["flush_timeout"].as_str(), Some("1s"));
    assert_eq!(entries[1]["max_lines"].as_integer(), Some(50));
    // It means what the file does.
    assert!(Config::from_toml_str_with_env(&toml::to_string(&effective).unwrap(), &EnvView::default()).is_ok());
}
