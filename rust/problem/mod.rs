//! Findings about an adapter that do not stop it from being read, and their codes ([`codes`]).
//!
//! May use: nothing else of the crate.

pub mod codes;

pub use codes::{Code, Severities};

use serde::Serialize;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The adapter will not load, or will load wrong.
    Error,
    /// Worth knowing; loaders may cope.
    Warning,
}

impl Severity {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One finding, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable machine-readable code, e.g. `unpaired_factor`.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// The module (or tensor) path it concerns, if one.
    pub path: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

impl Problem {
    /// Build a problem.
    pub fn new(code: Code, severity: Severity, path: Option<&str>, message: String) -> Self {
        debug_assert!(
            matches!(
                (code.severities(), severity),
                (Severities::Both, _)
                    | (Severities::Error, Severity::Error)
                    | (Severities::Warning, Severity::Warning)
            ),
            "{code} reported as {severity:?}"
        );
        Self {
            code,
            severity,
            path: path.map(str::to_string),
            message,
        }
    }
}
