//! `--junit FILE`: one testsuite per scenario folder, one testcase per
//! scenario. quick-junit escapes what it writes, so whatever bytes a server
//! sends, the XML stays well-formed.

use crate::run::{RunReport, ScenarioOutcome, Status};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub fn to_xml(report: &RunReport) -> Result<String, String> {
    let mut suites: BTreeMap<String, Vec<&ScenarioOutcome>> = BTreeMap::new();
    for o in &report.scenarios {
        let folder = Path::new(&o.file)
            .parent()
            .map(|p| p.display().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| ".".into());
        suites.entry(folder).or_default().push(o);
    }
    let mut junit = Report::new("mailcheck");
    junit.set_time(Duration::from_millis(report.duration_ms));
    for (folder, outcomes) in suites {
        let mut suite = TestSuite::new(folder);
        suite.add_property(("target", report.target.as_str()));
        for o in outcomes {
            let status = match o.status {
                Status::Passed => TestCaseStatus::success(),
                Status::Skipped => {
                    let mut s = TestCaseStatus::skipped();
                    if let Some(r) = &o.reason {
                        s.set_message(r.as_str());
                    }
                    s
                }
                Status::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(o.reason.as_deref().unwrap_or("failed"));
                    s.set_type(o.rfc.as_str());
                    s.set_description(super::details::render(o, false, true));
                    s
                }
            };
            let mut case = TestCase::new(o.name.as_str(), status);
            case.set_classname(o.file.as_str());
            case.set_time(Duration::from_millis(o.duration_ms));
            if o.status == Status::Passed && o.warnings() > 0 {
                case.set_system_out(super::details::render(o, false, true));
            }
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    junit
        .to_string()
        .map_err(|e| format!("cannot write the JUnit report: {e}"))
}

pub fn write(report: &RunReport, path: &Path) -> Result<(), String> {
    let xml = to_xml(report)?;
    write_file(path, xml.as_bytes())
}

/// Write a report file, creating its folder.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
