//! `ConfigError` and `Problem`: what is wrong with a config, one line per
//! problem, in the `PATH: key = value: what is wrong` shape operators grep for.

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in one config file. Its `Display` prints one line per
/// problem; no line ever contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines().join("\n"))]
pub struct ConfigError {
    /// The config file's path as given, which starts every line.
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(path: &Path, problems: Vec<Problem>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            problems,
        }
    }

    /// One `PATH: key = value: what is wrong` line per problem.
    pub fn lines(&self) -> Vec<String> {
        self.problems.iter().map(|p| p.line(&self.path)).collect()
    }
}

/// One thing wrong with a config (or, in `Config::warnings`, one thing
/// allowed but risky).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `credentials.expires_in`; empty when the problem is
    /// with the file as a whole (unreadable, not TOML).
    pub key: String,
    /// The offending value as written in TOML (`"ftp://x"`, `1234`), with
    /// secrets already replaced by `"<redacted>"`.
    pub value: Option<String>,
    /// What is wrong, written for an operator.
    pub message: String,
    /// 1-based line and column of the key (or of `near`, for a missing key).
    pub location: Option<(usize, usize)>,
    /// For a key that is missing: a key written nearby whose line to give.
    pub near: Option<String>,
}

impl Problem {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        Problem {
            key: key.to_owned(),
            value: None,
            message: message.into(),
            location: None,
            near: None,
        }
    }

    /// For a missing key: the line of `key` is where to look.
    pub(crate) fn near(mut self, key: &str) -> Self {
        self.near = Some(key.to_owned());
        self
    }

    /// A problem with the file as a whole.
    pub(crate) fn file(message: impl Into<String>) -> Self {
        Problem::new("", message)
    }

    pub(crate) fn with_value(mut self, toml_value: impl Into<String>) -> Self {
        self.value = Some(toml_value.into());
        self
    }

    pub(crate) fn at(mut self, location: Option<(usize, usize)>) -> Self {
        self.location = location;
        self
    }

    /// Renders the problem as `PATH: key = value: message (line L, column C)`.
    pub fn line(&self, path: &Path) -> String {
        Line {
            path,
            problem: self,
        }
        .to_string()
    }
}

struct Line<'a> {
    path: &'a Path,
    problem: &'a Problem,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.problem;
        write!(f, "{}: ", self.path.display())?;
        if !p.key.is_empty() {
            f.write_str(&p.key)?;
            if let Some(value) = &p.value {
                write!(f, " = {value}")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&p.message)?;
        if let Some((line, column)) = p.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_documented_shape() {
        let path = Path::new("proxy.toml");
        let cases = [
            (
                Problem::new("credentials.expires_in", "must be one of 3600").with_value("1234"),
                "proxy.toml: credentials.expires_in = 1234: must be one of 3600",
            ),
            (
                Problem::new("credentials.client_id", "missing (required)"),
                "proxy.toml: credentials.client_id: missing (required)",
            ),
            (
                Problem::file("invalid TOML: x").at(Some((3, 7))),
                "proxy.toml: invalid TOML: x (line 3, column 7)",
            ),
        ];
        for (problem, want) in cases {
            assert_eq!(problem.line(path), want);
        }
    }

    #[test]
    fn display_is_one_line_per_problem() {
        let err = ConfigError::new(
            Path::new("p.toml"),
            vec![Problem::new("a", "x"), Problem::new("b", "y")],
        );
        assert_eq!(err.to_string(), "p.toml: a: x\np.toml: b: y");
    }
}
