//! The whole run: look at the server once, then run each scenario in order,
//! telling the reporters as each one finishes.

use super::outcome::*;
use super::runner::{discover, run_scenario, skip_reason, RunConfig, ServerInfo};
use crate::scenario::Scenario;
use std::time::Instant;

/// What the reporters hear while the run goes on.
pub enum Event<'a> {
    /// The server was reached (or not) and `total` scenarios will follow.
    Started {
        target: String,
        total: usize,
        server: Result<&'a ServerInfo, &'a str>,
    },
    Finished(&'a ScenarioOutcome),
}

/// Run `scenarios` in order, destructive ones last so that the mail they
/// delete cannot change what the others see. A target that cannot be reached
/// fails every scenario that would have run, with the connection error as the reason.
pub async fn run_all(
    scenarios: &[Scenario],
    config: &RunConfig,
    mut on_event: impl FnMut(Event<'_>),
) -> RunReport {
    let mut ordered: Vec<&Scenario> = scenarios.iter().collect();
    ordered.sort_by_key(|s| s.destructive);
    let started = Instant::now();
    let started_at = now_rfc3339();
    let info = discover(config)
        .await
        .map_err(|e| config.redactor().redact(&e.to_string()));
    on_event(Event::Started {
        target: config.target.to_string(),
        total: scenarios.len(),
        server: info.as_ref().map_err(|e| e.as_str()),
    });
    let mut outcomes = Vec::with_capacity(scenarios.len());
    for s in ordered {
        let outcome = if s.protocol != config.target.protocol {
            unreachable_outcome(s, Status::Skipped, format!("no {} target given", s.protocol))
        } else {
            match &info {
                Ok(info) => run_scenario(s, config, info).await,
                Err(e) => match skip_reason(s, config, &ServerInfo::default()) {
                    Some(reason) if s.destructive || reason.contains("credentials") => {
                        unreachable_outcome(s, Status::Skipped, reason)
                    }
                    _ => unreachable_outcome(s, Status::Failed, e.clone()),
                },
            }
        };
        on_event(Event::Finished(&outcome));
        outcomes.push(outcome);
    }
    RunReport {
        tool: format!("mailcheck {}", env!("CARGO_PKG_VERSION")),
        target: config.target.to_string(),
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        connect_error: info.err(),
        totals: Totals::of(&outcomes),
        scenarios: outcomes,
    }
}

fn unreachable_outcome(s: &Scenario, status: Status, reason: String) -> ScenarioOutcome {
    ScenarioOutcome {
        file: s.path.display().to_string(),
        name: s.name.clone(),
        rfc: s.rfc.clone(),
        protocol: s.protocol.name().to_string(),
        status,
        reason: Some(reason),
        duration_ms: 0,
        steps: Vec::new(),
        findings: Vec::new(),
        transcript: Vec::new(),
        transcript_omitted: 0,
    }
}

/// UTC time as RFC 3339, without pulling in a date crate for one timestamp.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
