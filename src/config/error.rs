//! What can be wrong with a config file, each problem with the key it is about.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One thing to fix in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, as a user would write it: `tail.include[1]`, `sink.path`.
    pub key: String,
    /// Lowercase; names the value and, where it can, says how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not TOML (or holds what no TOML reader takes, such as an integer
    /// past 64 bits): nothing past this point could be read, so it comes alone.
    #[error("invalid toml at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The TOML is fine but its values are not: every problem found, in the order of
    /// the reference config (top level, `[tail]`, `[decode]`, `[sink]`; in each table
    /// its unknown keys first, in name order).
    #[error("{}", Lines(problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems found by the checker; empty for a read or syntax error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }

    /// A syntax error from toml, located in `text` (line and column from 1).
    pub(super) fn syntax(text: &str, err: &toml::de::Error) -> ConfigError {
        let offset = err.span().map_or(text.len(), |s| s.start).min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        let message = err.message().trim_end().replace('\n', "; ");
        ConfigError::Syntax {
            line,
            column,
            message,
        }
    }
}

/// One line per problem.
struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
