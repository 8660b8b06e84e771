//! The environment in a config file: `${VAR}` in string values, and `LOGFERRY_*`
//! variables that override the few keys that differ per node.
//!
//! Both act on the parsed TOML before it is checked, so a value that came from the
//! environment is checked like any other, under its key path.
//!
//! - `${NODE_NAME}` anywhere inside a string value is replaced by the variable's value
//!   (e.g. from the downward API); `$${` writes a literal `${`. An unset variable is a
//!   problem, reported with the key path — a silent empty string would ship logs to
//!   the wrong place.
//! - [`OVERRIDES`]: `LOGFERRY_DATA_DIR`, `LOGFERRY_METRICS_LISTEN`,
//!   `LOGFERRY_LOG_LEVEL` replace `data_dir`, `metrics.listen`, `log.level`.

use std::collections::BTreeMap;

use super::Problem;

/// Environment variable → key path it overrides.
pub const OVERRIDES: &[(&str, &str)] = &[
    ("LOGFERRY_DATA_DIR", "data_dir"),
    ("LOGFERRY_METRICS_LISTEN", "metrics.listen"),
    ("LOGFERRY_LOG_LEVEL", "log.level"),
];

/// Sets the overridden keys from `vars`.
pub fn apply_overrides(table: &mut toml::Table, vars: &BTreeMap<String, String>) {
    for (var, key) in OVERRIDES {
        let Some(value) = vars.get(*var) else { continue };
        let mut t = &mut *table;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                t.insert(part.to_string(), toml::Value::String(value.clone()));
                break;
            }
            let entry = t.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => t = inner,
                // A non-table there is reported by the checker; leave it.
                _ => break,
            }
        }
    }
}

/// Replaces `${VAR}` in every string value; unset variables become problems.
pub fn interpolate(table: &mut toml::Table, vars: &BTreeMap<String, String>, problems: &mut Vec<Problem>) {
    for (key, value) in table.iter_mut() {
        interpolate_value(&quote_key(key), value, vars, problems);
    }
}

fn interpolate_value(path: &str, v: &mut toml::Value, vars: &BTreeMap<String, String>, problems: &mut Vec<Problem>) {
    match v {
        toml::Value::String(s) => match expand(s, vars) {
            Ok(out) => *s = out,
            Err(message) => problems.push(Problem { key: path.to_string(), message }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(&format!("{path}[{i}]"), item, vars, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                interpolate_value(&format!("{path}.{}", quote_key(k)), item, vars, problems);
            }
        }
        _ => {}
    }
}

fn quote_key(k: &str) -> String {
    let bare = !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if bare {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// Expands `${VAR}` and `$${` in one string.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unclosed \"${{\" in {s:?}; write \"$${{\" for a literal \"${{\""))?;
            let name = &after[..end];
            let valid = !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !valid {
                return Err(format!("\"${{{name}}}\" is not a variable name (letters, digits, _)"));
            }
            let value = vars.get(name).ok_or_else(|| format!("${{{name}}} is used but {name} is not set in the environment"))?;
            out.push_str(value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("NODE_NAME", "ip-10-0-1-2"), ("CLUSTER", "prod")].into_iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn expands_variables_and_escapes() {
        assert_eq!(expand("/eks/${CLUSTER}/${NODE_NAME}", &vars()).unwrap(), "/eks/prod/ip-10-0-1-2");
        assert_eq!(expand("cost: $5, literal $${X}", &vars()).unwrap(), "cost: $5, literal ${X}");
        assert!(expand("${MISSING}", &vars()).unwrap_err().contains("MISSING is not set"));
        assert!(expand("${NODE_NAME", &vars()).unwrap_err().contains("unclosed"));
        assert!(expand("${a-b}", &vars()).unwrap_err().contains("not a variable name"));
    }

    #[test]
    fn every_string_value_is_expanded_with_its_key_path() {
        let mut t: toml::Table = toml::from_str("a = \"${CLUSTER}\"\n[t]\nlist = [\"x\", \"${NOPE}\"]\n").unwrap();
        let mut problems = Vec::new();
        interpolate(&mut t, &vars(), &mut problems);
        assert_eq!(t["a"].as_str(), Some("prod"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "t.list[1]");
    }

    #[test]
    fn overrides_set_nested_keys() {
        let mut t: toml::Table = toml::from_str("data_dir = \"/a\"\n").unwrap();
        let vars = [("LOGFERRY_DATA_DIR", "/b"), ("LOGFERRY_METRICS_LISTEN", "127.0.0.1:1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        apply_overrides(&mut t, &vars);
        assert_eq!(t["data_dir"].as_str(), Some("/b"));
        assert_eq!(t["metrics"]["listen"].as_str(), Some("127.0.0.1:1"));
    }
}
