//! What a run produced: pure data, serialised as the JSON report.

use crate::finding::{Finding, Severity};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// Why a step did not match: the expectation and what the server sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// `3`, or `5.1[2]` for the first step of a foreach at step 5, second row.
    pub id: String,
    /// Line of the step in the scenario file.
    pub line: u64,
    /// What the step did, redacted (e.g. `PASS ********`).
    pub label: String,
    pub status: Status,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<Mismatch>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Sent by mailcheck.
    Client,
    /// Received from the server.
    Server,
    /// Said by mailcheck about the connection (connect, TLS, close).
    Note,
}

/// One transcript line; `session` counts connections within the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptEntry {
    pub session: u32,
    pub direction: Direction,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioOutcome {
    pub file: String,
    pub name: String,
    pub rfc: String,
    pub protocol: String,
    pub status: Status,
    /// Why it was skipped, or the error that stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    pub steps: Vec<StepOutcome>,
    pub findings: Vec<Finding>,
    pub transcript: Vec<TranscriptEntry>,
    /// Transcript lines left out to keep reports small.
    pub transcript_omitted: u64,
}

impl ScenarioOutcome {
    pub fn warnings(&self) -> usize {
        let steps = self
            .steps
            .iter()
            .filter(|s| s.status == Status::Failed && s.severity == Severity::Should)
            .count();
        steps
            + self
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Should)
                .count()
    }

    /// The first failing step, for the one-line summary.
    pub fn first_failure(&self) -> Option<&StepOutcome> {
        self.steps
            .iter()
            .find(|s| s.status == Status::Failed && s.severity == Severity::Must)
    }
}

/// Totals for the closing line and the exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub warnings: usize,
}

impl Totals {
    pub fn of(outcomes: &[ScenarioOutcome]) -> Totals {
        let mut t = Totals::default();
        for o in outcomes {
            match o.status {
                Status::Passed => t.passed += 1,
                Status::Failed => t.failed += 1,
                Status::Skipped => t.skipped += 1,
            }
            t.warnings += o.warnings();
        }
        t
    }
}

/// A whole run, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub tool: String,
    pub target: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// Set when the first connection to the target failed: the run fails whatever the scenarios say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_error: Option<String>,
    pub totals: Totals,
    pub scenarios: Vec<ScenarioOutcome>,
}
