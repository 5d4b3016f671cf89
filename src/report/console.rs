//! The live console: a line per scenario as it finishes, details under
//! failures and warnings, and the closing `N passed, N failed, N skipped`.
//! Colour comes from anstream, which honours NO_COLOR, `--color` and
//! whether stdout is a terminal.

use crate::run::{Event, ScenarioOutcome, Status, Totals};
use anstyle::{AnsiColor, Style};
use std::io::Write;

pub struct Console {
    /// Show details (and the whole transcript) for every scenario.
    pub verbose: bool,
    /// Omit passing scenarios' lines.
    pub quiet: bool,
}

fn styled(style: Style, text: &str) -> String {
    format!("{}{text}{}", style.render(), style.render_reset())
}

impl Console {
    pub fn on_event(&self, event: Event<'_>) {
        let mut out = anstream::stdout();
        match event {
            Event::Started {
                target,
                total,
                server,
            } => {
                let _ = match server {
                    Ok(info) => writeln!(
                        out,
                        "mailcheck: {total} scenario(s) against {target}{}\n  greeting: {}",
                        if info.tls { " (TLS)" } else { "" },
                        info.greeting
                    ),
                    Err(e) => writeln!(
                        out,
                        "mailcheck: {total} scenario(s) against {target}\n  cannot reach the server: {e}"
                    ),
                };
            }
            Event::Finished(o) => self.scenario(&mut out, o),
        }
        let _ = out.flush();
    }

    fn scenario(&self, out: &mut impl Write, o: &ScenarioOutcome) {
        let warnings = o.warnings();
        let (mark, style) = match o.status {
            Status::Passed if warnings > 0 => (
                "WARN",
                Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
            ),
            Status::Passed => (
                "PASS",
                Style::new().fg_color(Some(AnsiColor::Green.into())).bold(),
            ),
            Status::Failed => ("FAIL", Style::new().fg_color(Some(AnsiColor::Red.into())).bold()),
            Status::Skipped => ("SKIP", Style::new().fg_color(Some(AnsiColor::Yellow.into()))),
        };
        if self.quiet && o.status == Status::Passed && warnings == 0 {
            return;
        }
        let dim = Style::new().dimmed();
        let extra = match o.status {
            Status::Skipped => format!(" ({})", o.reason.as_deref().unwrap_or("skipped")),
            _ => format!(" {}", styled(dim, &format!("{} ms", o.duration_ms))),
        };
        let _ = writeln!(
            out,
            "{} {}  {}{extra}",
            styled(style, mark),
            o.name,
            styled(dim, &o.file)
        );
        let show = self.verbose || o.status == Status::Failed || (o.status == Status::Passed && warnings > 0);
        if show && o.status != Status::Skipped {
            let text = super::details::render(o, true, self.verbose);
            for line in text.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }

    pub fn summary(&self, totals: &Totals, duration_ms: u64) {
        let mut out = anstream::stdout();
        if totals.warnings > 0 {
            let _ = writeln!(out, "{} warning(s) (SHOULD-level)", totals.warnings);
        }
        let _ = writeln!(out, "finished in {:.1} s", duration_ms as f64 / 1000.0);
        let _ = writeln!(
            out,
            "{} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.skipped
        );
        let _ = out.flush();
    }
}
