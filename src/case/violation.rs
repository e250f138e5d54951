//! One problem found in a case file: where (file, line, key path), what value, and why.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is not tied to one line (e.g. a missing section).
    pub line: Option<usize>,
    /// Dotted key path (`worker_config.gen.max_num_tokens`); empty for the whole file.
    pub key: String,
    /// The offending value as written, when there is one.
    pub value: Option<String>,
    pub reason: String,
    pub severity: Severity,
}

impl Violation {
    pub fn error(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Violation {
            file: PathBuf::new(),
            line: None,
            key: key.into(),
            value: None,
            reason: reason.into(),
            severity: Severity::Error,
        }
    }

    pub fn warning(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Violation {
            severity: Severity::Warning,
            ..Violation::error(key, reason)
        }
    }

    pub fn with_value(mut self, value: impl fmt::Display) -> Self {
        self.value = Some(value.to_string());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `file:line: key.path: reason` — the format compilers use, so editors and CI annotators link it.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.severity == Severity::Warning {
            write!(f, ": warning")?;
        }
        // One line per violation, whatever the YAML held: control characters are shown escaped.
        let one_line = |s: &str| {
            if s.chars().any(char::is_control) {
                s.escape_debug().to_string()
            } else {
                s.to_owned()
            }
        };
        if !self.key.is_empty() {
            write!(f, ": {}", one_line(&self.key))?;
        }
        write!(f, ": {}", one_line(&self.reason))
    }
}
