//! The text that explains a failed (or warned) scenario: the failing step,
//! a diff of expected vs actual, findings, and the transcript around it.

use crate::finding::Severity;
use crate::run::{Direction, ScenarioOutcome, Status};
use anstyle::{AnsiColor, Style};
use similar::{ChangeTag, TextDiff};
use std::fmt::Write;

/// Transcript lines shown before the end of a failing scenario.
const TRANSCRIPT_TAIL: usize = 24;

fn paint(styled: bool, style: Style, text: &str) -> String {
    if styled {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_string()
    }
}

/// Explain `o`: empty for a clean pass. `all_transcript` shows every line.
pub fn render(o: &ScenarioOutcome, styled: bool, all_transcript: bool) -> String {
    let mut out = String::new();
    let red = Style::new().fg_color(Some(AnsiColor::Red.into()));
    let green = Style::new().fg_color(Some(AnsiColor::Green.into()));
    let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
    let dim = Style::new().dimmed();
    let bold = Style::new().bold();

    if o.status == Status::Failed {
        if let Some(reason) = &o.reason {
            let _ = writeln!(out, "{}", paint(styled, bold, &format!("reason: {reason}")));
        }
    }
    let _ = writeln!(
        out,
        "{}",
        paint(styled, dim, &format!("file: {}  ({})", o.file, o.rfc))
    );
    for step in o.steps.iter().filter(|s| s.status == Status::Failed) {
        let tag = if step.severity == Severity::Should {
            "warning"
        } else {
            "failed"
        };
        let _ = writeln!(
            out,
            "step {} ({tag}, line {}): {}",
            step.id,
            step.line,
            paint(styled, bold, &step.label)
        );
        if let Some(m) = &step.mismatch {
            let _ = writeln!(out, "  {}", m.message);
            if let (Some(exp), Some(act)) = (&m.expected, &m.actual) {
                let _ = writeln!(
                    out,
                    "  {} {}",
                    paint(styled, green, "- expected"),
                    paint(styled, red, "+ actual")
                );
                let diff = TextDiff::from_lines(exp.as_str(), act.as_str());
                for change in diff.iter_all_changes() {
                    let line = change.to_string();
                    let line = line.trim_end_matches('\n');
                    let text = match change.tag() {
                        ChangeTag::Delete => paint(styled, green, &format!("  - {line}")),
                        ChangeTag::Insert => paint(styled, red, &format!("  + {line}")),
                        ChangeTag::Equal => format!("    {line}"),
                    };
                    let _ = writeln!(out, "{text}");
                }
            }
        }
    }
    for f in &o.findings {
        let style = match f.severity {
            Severity::Must => red,
            Severity::Should => yellow,
            Severity::Note => dim,
        };
        let step = f
            .step
            .as_deref()
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {}{step}: {} [{}]",
            paint(styled, style, &format!("{:>6}", f.severity.to_string())),
            f.rfc,
            f.message,
            f.rule
        );
        if let Some(b) = &f.bytes {
            let _ = writeln!(out, "         bytes: {b}");
        }
    }
    if !o.transcript.is_empty() {
        let skip = if all_transcript {
            0
        } else {
            o.transcript.len().saturating_sub(TRANSCRIPT_TAIL)
        };
        let _ = writeln!(out, "{}", paint(styled, dim, "transcript:"));
        if skip > 0 {
            let _ = writeln!(
                out,
                "{}",
                paint(styled, dim, &format!("  ... {skip} earlier lines"))
            );
        }
        for t in &o.transcript[skip..] {
            let (mark, style) = match t.direction {
                Direction::Client => ("C:", Style::new().fg_color(Some(AnsiColor::Cyan.into()))),
                Direction::Server => ("S:", Style::new()),
                Direction::Note => ("--", dim),
            };
            let _ = writeln!(
                out,
                "  {} {}",
                paint(styled, style, &format!("[{}] {mark}", t.session)),
                t.text
            );
        }
        if o.transcript_omitted > 0 {
            let _ = writeln!(out, "  ... {} later lines omitted", o.transcript_omitted);
        }
    }
    out
}
