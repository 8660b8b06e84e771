//! The checker's tools: turn one raw value into a typed one, or record why not.
//!
//! Every helper takes the key path it reports under and returns something usable
//! (the default when the value is absent or wrong), so checking goes on after a
//! problem and the user sees them all. A problem is recorded only here, in
//! [`Checker::report`]; the messages share one voice: lowercase, the value quoted as
//! it was written, and the fix where there is one.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use toml::Value;

use super::raw::{Field, List, Opt, Unknown, TABLES};
use super::Problem;

const DURATION_EXAMPLES: &str = r#"(examples: "500ms", "10s", "1m")"#;

/// An element of a list of strings with its own key path (`tail.include[1]`).
pub(super) struct Item {
    pub key: String,
    pub value: String,
}

/// How a glob is matched, and so what it must look like.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum GlobKind {
    /// A path glob of files to follow: absolute, so there is a directory to watch.
    IncludePath,
    /// A path glob that excludes: absolute, or starting with `**/` to match anywhere.
    ExcludePath,
    /// A Kubernetes name (namespace, pod, container).
    Name,
}

#[derive(Default)]
pub(super) struct Checker {
    pub problems: Vec<Problem>,
}

impl Checker {
    pub fn report(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Reports each key of `table` (a key path, "" for the top level) that is not
    /// one of `expected`, with a suggestion when the key is misspelt or belongs in
    /// another table.
    pub fn unknown_keys(&mut self, table: &str, unknown: &Unknown, expected: &[&str]) {
        for key in unknown.keys() {
            let mut message = format!("unknown key (expected one of: {})", expected.join(", "));
            let near = expected
                .iter()
                .map(|e| (edit_distance(key, e), e))
                .filter(|(d, e)| *d <= (e.len() / 3).max(1))
                .min_by_key(|(d, _)| *d)
                .map(|(_, e)| e);
            if let Some(near) = near {
                message.push_str(&format!("; did you mean {near:?}?"));
            } else if let Some((home, _)) = TABLES
                .iter()
                .find(|(name, keys)| *name != table && keys.contains(&key.as_str()))
            {
                let home = if home.is_empty() {
                    "the top level".to_owned()
                } else {
                    format!("[{home}]")
                };
                message.push_str(&format!("; {key:?} belongs in {home}"));
            }
            self.report(&join(table, &quote_key(key)), message);
        }
    }

    /// The value if it has the expected type; a mistyped one is reported as not
    /// being `what` ("an integer") and gives `None`, as does an absent one.
    pub fn get<T>(&mut self, key: &str, field: Opt<T>, what: &str) -> Option<T> {
        match field? {
            Field::Ok(t) => Some(t),
            Field::Mistyped(v) => {
                self.report(key, format!("must be {what}, got {}", describe(&v)));
                None
            }
        }
    }

    /// A table; empty (all defaults) when absent or not a table.
    pub fn table<T: Default>(&mut self, key: &str, field: Opt<T>) -> T {
        self.get(key, field, "a table").unwrap_or_default()
    }

    pub fn bool(&mut self, key: &str, field: Opt<bool>, default: bool) -> bool {
        self.get(key, field, "true or false").unwrap_or(default)
    }

    /// A humantime duration ("500ms", "10s", "1m 30s"); `positive` rejects zero.
    pub fn duration(
        &mut self,
        key: &str,
        field: Opt<String>,
        default: Duration,
        positive: bool,
    ) -> Duration {
        let what = format!("a duration string {DURATION_EXAMPLES}");
        let Some(text) = self.get(key, field, &what) else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) if positive && d.is_zero() => {
                self.report(key, format!("must be greater than 0, got {text:?}"));
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.report(
                    key,
                    format!("{text:?} is not a duration {DURATION_EXAMPLES}"),
                );
                default
            }
        }
    }

    /// An integer in `min..=max` (no upper bound when `max` is `None`).
    pub fn count(
        &mut self,
        key: &str,
        field: Opt<i64>,
        default: usize,
        min: usize,
        max: Option<usize>,
    ) -> usize {
        let Some(n) = self.get(key, field, "an integer") else {
            return default;
        };
        let in_range = usize::try_from(n)
            .ok()
            .filter(|&n| n >= min && max.is_none_or(|max| n <= max));
        match (in_range, max) {
            (Some(n), _) => return n,
            (None, Some(max)) => self.report(
                key,
                format!("must be between {min} and {max}{}, got {n}", in_mib(max)),
            ),
            (None, None) => self.report(key, format!("must be at least {min}, got {n}")),
        }
        default
    }

    /// One of `options`, matched exactly.
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        field: Opt<String>,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let Some(text) = self.get(key, field, &format!("one of {}", quoted(&names))) else {
            return default;
        };
        match options.iter().find(|(name, _)| *name == text) {
            Some((_, t)) => *t,
            None => {
                self.report(key, not_one_of(&text, &names));
                default
            }
        }
    }

    /// An absolute path, given as a string.
    pub fn absolute_path(&mut self, key: &str, field: Opt<String>, default: &str) -> PathBuf {
        let Some(text) = self.get(key, field, "a string") else {
            return PathBuf::from(default);
        };
        self.check_absolute(key, &text);
        PathBuf::from(text)
    }

    /// Absolute paths with no `..`: directories that other paths are compared
    /// against by prefix, which `..` would defeat.
    pub fn absolute_paths(&mut self, key: &str, field: List, default: &[&str]) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for item in self.strings(key, field, default) {
            let path = PathBuf::from(&item.value);
            let absolute = self.check_absolute(&item.key, &item.value);
            if absolute && path.components().any(|c| c == Component::ParentDir) {
                self.report(
                    &item.key,
                    format!(r#"must not contain "..", got {:?}"#, item.value),
                );
            }
            paths.push(path);
        }
        paths
    }

    /// A list of strings: `default` when absent; each element that is not a string is
    /// reported under its own index and left out.
    pub fn strings(&mut self, key: &str, field: List, default: &[&str]) -> Vec<Item> {
        let list = match field {
            None => {
                let items = default.iter().enumerate();
                return items
                    .map(|(i, s)| Item {
                        key: index(key, i),
                        value: (*s).to_owned(),
                    })
                    .collect();
            }
            Some(Field::Mistyped(Value::String(one))) => {
                self.report(
                    key,
                    format!("must be an array of strings, got {one:?} (write [{one:?}])"),
                );
                return Vec::new();
            }
            Some(field) => match self.get(key, Some(field), "an array of strings") {
                Some(list) => list,
                None => return Vec::new(),
            },
        };
        let mut items = Vec::with_capacity(list.len());
        for (i, field) in list.into_iter().enumerate() {
            let key = index(key, i);
            if let Some(value) = self.get(&key, Some(field), "a string") {
                items.push(Item { key, value });
            }
        }
        items
    }

    /// The glob set of `items`, each checked and reported under its own key.
    pub fn globs(&mut self, key: &str, items: &[Item], kind: GlobKind) -> GlobSet {
        let mut set = GlobSetBuilder::new();
        for item in items {
            if let Some(glob) = self.glob(item, kind) {
                set.add(glob);
            }
        }
        set.build().unwrap_or_else(|err| {
            self.report(key, format!("cannot combine these globs: {}", err.kind()));
            GlobSet::empty()
        })
    }

    fn glob(&mut self, item: &Item, kind: GlobKind) -> Option<Glob> {
        let pattern = &item.value;
        match kind {
            GlobKind::IncludePath if !pattern.starts_with('/') => {
                self.report(
                    &item.key,
                    format!("must be an absolute path glob, got {pattern:?}"),
                );
                return None;
            }
            GlobKind::ExcludePath if !pattern.starts_with('/') && !pattern.starts_with("**/") => {
                let msg = format!(
                    r#"must be an absolute path glob or start with "**/", got {pattern:?}"#
                );
                self.report(&item.key, msg);
                return None;
            }
            _ => {}
        }
        // In a path glob `*` stops at `/`, as in a shell: `/var/log/*.log` does not
        // reach into subdirectories; `**` does.
        let built = GlobBuilder::new(pattern)
            .literal_separator(kind != GlobKind::Name)
            .build();
        match built {
            Ok(glob) => Some(glob),
            Err(err) => {
                self.report(
                    &item.key,
                    format!("invalid glob {pattern:?}: {}", err.kind()),
                );
                None
            }
        }
    }

    /// Reports `text` under `key` unless it is an absolute path; says whether it is.
    fn check_absolute(&mut self, key: &str, text: &str) -> bool {
        let absolute = Path::new(text).is_absolute();
        if !absolute {
            self.report(key, format!("must be an absolute path, got {text:?}"));
        }
        absolute
    }
}

/// `"middle" is not one of "beginning", "end"`.
pub(super) fn not_one_of(text: &str, names: &[&str]) -> String {
    format!("{text:?} is not one of {}", quoted(names))
}

/// `"beginning", "end"`.
pub(super) fn quoted(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    names.join(", ")
}

/// A value as the user wrote it, for "got …": scalars in TOML syntax, containers by kind.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
        other => other.to_string(),
    }
}

fn in_mib(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!(" ({} MiB)", n >> 20)
    } else {
        String::new()
    }
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

fn index(key: &str, i: usize) -> String {
    format!("{key}[{i}]")
}

/// A key as TOML would need it written: bare when it can be, quoted otherwise.
pub(super) fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Levenshtein distance, for "did you mean"; keys are short, so O(n·m) is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
