//! Probe output: a compact table per endpoint for people, JSON for
//! machines (`--json`), JUnit for monitoring (`--junit`, one testcase per check).

use super::chain::{EndpointReport, Mark};
use anstyle::{AnsiColor, Style};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

/// The whole probe, as written by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub tool: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// Every endpoint is usable.
    pub usable: bool,
    /// How the endpoints were found (presets, SRV, MX, conventional names).
    pub notes: Vec<String>,
    pub endpoints: Vec<EndpointReport>,
}

fn paint(style: Style, text: &str) -> String {
    format!("{}{text}{}", style.render(), style.render_reset())
}

/// The human table; ANSI styles are stripped by anstream when not wanted.
pub fn render(report: &ProbeReport) -> String {
    let mut out = String::new();
    let bold = Style::new().bold();
    let dim = Style::new().dimmed();
    for note in &report.notes {
        let _ = writeln!(out, "{}", paint(dim, note));
    }
    for ep in &report.endpoints {
        let _ = writeln!(
            out,
            "\n{}  {}",
            paint(bold, &ep.url),
            paint(dim, &format!("({})", ep.endpoint.source))
        );
        for c in &ep.checks {
            let (label, style) = match c.mark {
                Mark::Ok => ("ok", Style::new().fg_color(Some(AnsiColor::Green.into()))),
                Mark::Warning => ("warning", Style::new().fg_color(Some(AnsiColor::Yellow.into()))),
                Mark::Failed => (
                    "FAILED",
                    Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
                ),
                Mark::Skipped => ("skipped", dim),
            };
            let time = c.duration_ms.map(|m| format!("{m} ms")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {:<12} {:>8}  {}",
                paint(style, &format!("{label:<8}")),
                c.layer.name(),
                time,
                c.summary
            );
            if c.mark == Mark::Failed || c.mark == Mark::Warning {
                for d in &c.details {
                    let _ = writeln!(out, "  {:33}{}", "", paint(dim, d));
                }
                if let Some(t) = &c.server_text {
                    let _ = writeln!(out, "  {:33}server said: {t}", "");
                }
                if let Some(a) = &c.advice {
                    let _ = writeln!(out, "  {:33}{} [{}]", "", paint(bold, a.title), a.id);
                    let _ = writeln!(out, "  {:33}cause: {}", "", a.cause);
                    let _ = writeln!(out, "  {:33}fix:   {}", "", a.fix);
                    if let Some(d) = &a.detail {
                        let _ = writeln!(out, "  {:33}note:  {d}", "");
                    }
                }
            }
        }
        let verdict = if ep.usable {
            paint(
                Style::new().fg_color(Some(AnsiColor::Green.into())).bold(),
                "usable",
            )
        } else {
            paint(
                Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
                "NOT usable",
            )
        };
        let _ = writeln!(out, "  => {verdict} ({} ms)", ep.duration_ms);
    }
    let usable = report.endpoints.iter().filter(|e| e.usable).count();
    let _ = writeln!(
        out,
        "\n{} endpoint(s): {usable} usable, {} with problems ({:.1} s)",
        report.endpoints.len(),
        report.endpoints.len() - usable,
        report.duration_ms as f64 / 1000.0
    );
    out
}

/// One testsuite per endpoint, one testcase per check.
pub fn junit(report: &ProbeReport) -> Result<String, String> {
    let mut junit = Report::new("mailcheck probe");
    junit.set_time(Duration::from_millis(report.duration_ms));
    for ep in &report.endpoints {
        let mut suite = TestSuite::new(ep.url.as_str());
        suite.add_property(("source", ep.endpoint.source.as_str()));
        for c in &ep.checks {
            let mut text = c.summary.clone();
            for d in &c.details {
                text.push('\n');
                text.push_str(d);
            }
            if let Some(a) = &c.advice {
                text.push_str(&format!(
                    "\n{} [{}]\ncause: {}\nfix: {}",
                    a.title, a.id, a.cause, a.fix
                ));
                if let Some(d) = &a.detail {
                    text.push_str(&format!("\nnote: {d}"));
                }
            }
            let status = match c.mark {
                Mark::Ok => TestCaseStatus::success(),
                Mark::Warning => TestCaseStatus::success(),
                Mark::Skipped => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(c.summary.as_str());
                    s
                }
                Mark::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.summary.as_str());
                    if let Some(a) = &c.advice {
                        s.set_type(a.id);
                    }
                    s.set_description(text.as_str());
                    s
                }
            };
            let mut case = TestCase::new(c.layer.name(), status);
            case.set_classname(ep.url.as_str());
            if let Some(ms) = c.duration_ms {
                case.set_time(Duration::from_millis(ms));
            }
            if c.mark == Mark::Warning || c.mark == Mark::Ok {
                case.set_system_out(text);
            }
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    junit
        .to_string()
        .map_err(|e| format!("cannot write the JUnit report: {e}"))
}
