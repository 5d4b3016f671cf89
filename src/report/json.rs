//! `--json FILE`: the run as JSON. The shape is [`crate::run::RunReport`]
//! (documented in README.md); fields are only added, never renamed.

use crate::run::RunReport;
use std::path::Path;

pub fn write(report: &RunReport, path: &Path) -> Result<(), String> {
    let text =
        serde_json::to_string_pretty(report).map_err(|e| format!("cannot encode the JSON report: {e}"))?;
    super::junit::write_file(path, text.as_bytes())
}
