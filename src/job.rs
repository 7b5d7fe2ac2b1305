//! The job's modes (run, dry run) on top of the sync, and what each reports back (`check` is
//! [`crate::check`]).

use time::OffsetDateTime;

use crate::cli::Options;
use crate::clients::Clients;
use crate::config::JobConfig;
use crate::error::Result;
use crate::http::{HttpSettings, RetryPolicy};
use crate::platform::ExitStatus;
use crate::sync::{self, Checkpoint, Deploy, Stop, SyncOptions, SyncReport};
use crate::tanium::lease::{self, LeaseSettings, OtherRun, Taken};
use crate::tanium::TaskState;
use crate::words::counted;

/// What a mode hands back to the platform layer: exit status, message.tc and results.tc entries.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status.
    pub status: ExitStatus,
    /// One-line summary for message.tc.
    pub message: String,
    /// results.tc updates (None removes a key).
    pub results: Vec<(&'static str, Option<String>)>,
}

/// Runs the job (or its dry run): connect both sides, take the run lease, sync, and turn the
/// report into an outcome. A run that finds another run of the job writing stands down.
pub fn execute(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &Options,
    clients: &Clients,
) -> Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    log_limits(config, clients.policy());
    let tc = clients.tc(&config.tc)?;
    tc.leave_out_observed(config.report_detections);
    // Both sides accept the job before anything is written: a first run with a refused TC
    // credential must not leave a Tanium source behind.
    log::info!("{}", tc.check()?);
    let tanium = clients.tanium(&config.tanium)?;
    let sync_opts = SyncOptions {
        dry_run: opts.dry_run || config.dry_run,
        out_dir: opts.out.clone(),
        now,
    };
    // Detections follow the sync inside the lease, so two runs never report the same alerts.
    let sync = || {
        let report = sync::run(config, checkpoint, &sync_opts, tc, &tanium);
        let found = match &report {
            Ok(r) if config.report_detections => {
                detections(config, checkpoint, r, sync_opts.dry_run, now, tc, &tanium)
            }
            _ => None,
        };
        (report, found)
    };
    if sync_opts.dry_run {
        // Writes nothing, so it neither takes the lease nor waits for one.
        let (report, found) = sync();
        let mut o = outcome(config, checkpoint, &report?, true, now);
        if let Some(d) = found {
            d.apply(&mut o, checkpoint);
        }
        return Ok(o);
    }
    sync::refuse_built_in_source(config, &tanium)?;
    let settings = LeaseSettings {
        duration: config.run_lease,
        deletes_failed_before: checkpoint.lease_deletes_failed,
    };
    let ((report, found), deletes) = match tanium.take_lease(&settings)? {
        Taken::StoodDown { holder, deletes } => {
            return Ok(stood_down(config, checkpoint, &holder, deletes))
        }
        Taken::Without { deletes } => (sync(), deletes),
        Taken::Held(lease) => {
            let (done, end) = lease.hold(sync);
            (done, end.deletes)
        }
    };
    let mut o = outcome(config, checkpoint, &report?, false, now);
    if o.status != ExitStatus::Failure {
        o.results.extend(checkpoint.lease_results(deletes));
        if !config.report_detections {
            o.results.extend(checkpoint.alert_results(false, None));
        }
    }
    if let Some(d) = found {
        d.apply(&mut o, checkpoint);
    }
    Ok(o)
}

/// Reports the detections after a sync whose results the platform keeps (a failed sync's are
/// not kept, so what it reported would be reported again).
fn detections(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    report: &SyncReport,
    dry_run: bool,
    now: OffsetDateTime,
    tc: &crate::tc::client::TcClient,
    tanium: &crate::tanium::TaniumClient,
) -> Option<crate::detections::Detections> {
    if outcome(config, checkpoint, report, dry_run, now).status == ExitStatus::Failure {
        log::warn!("detections: not read, since the sync failed (its results are not kept)");
        return None;
    }
    Some(crate::detections::report(&crate::detections::Inputs {
        config,
        checkpoint,
        tc,
        tanium,
        source_id: report.source.1,
        dry_run,
    }))
}

/// The outcome of a run that found another run of the job writing: exit 0, since nothing
/// failed and nothing is owed (the other run delivers; the next run starts where the last
/// finished one left off), and a message that says so.
fn stood_down(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    holder: &OtherRun,
    deletes: Option<bool>,
) -> Outcome {
    Outcome {
        status: ExitStatus::Success,
        message: format!(
            "Another run of this job is writing to Tanium source \"{}\" (since {}, lease until {}): this run stood down; nothing changed",
            shown_source(&config.tanium.source_name, 24),
            lease::stamp(holder.since),
            lease::stamp(holder.until)
        ),
        results: checkpoint.lease_results(deletes),
    }
}

/// Maps a sync report to exit status, message and results (pure, so it is tested directly).
pub fn outcome(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    r: &SyncReport,
    dry_run: bool,
    now: OffsetDateTime,
) -> Outcome {
    let status = if !r.has_failures() {
        ExitStatus::Success
    } else if r.delivered_anything() || r.tally.held_back > 0 {
        ExitStatus::Partial
    } else {
        ExitStatus::Failure
    };
    let message = if status == ExitStatus::Failure {
        // Nothing went through: lead with why, not with counters that are all zero.
        let why = r
            .stop
            .as_ref()
            .map(|stop| match (stop, r.errors.first()) {
                (Stop::TaniumDown, Some(e)) => format!("{stop}; first error: {e}"),
                _ => stop.to_string(),
            })
            .or_else(|| r.errors.first().cloned())
            .or_else(|| match &r.deploy {
                Deploy::Failed(e) => Some(e.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "nothing could be delivered".into());
        format!("Sync to Tanium source \"{}\" failed: {why}", r.source.0)
    } else {
        summary(r, dry_run)
    };
    let results = match (&r.end, status) {
        (Some(end), ExitStatus::Success | ExitStatus::Partial) => {
            let mut keys = checkpoint.results(end, &config.selection_fingerprint(), now);
            keys.extend(checkpoint.label_results(end, &config.labels));
            keys
        }
        _ => Vec::new(),
    };
    Outcome {
        status,
        message,
        results,
    }
}

/// The one-line summary of a run that delivered something (or had nothing to do). A run that
/// needs the admin leads with what went wrong, so the platform's 255 characters keep it; the
/// counters follow.
fn summary(r: &SyncReport, dry_run: bool) -> String {
    let t = &r.tally;
    // Grouped, the counters are indicators and the total says both units.
    let held = match r.grouped_indicators {
        Some(n) => format!(
            "{} in {}",
            counted(n, "indicator"),
            counted(r.source_docs, "document")
        ),
        None => counted(r.source_docs, "document"),
    };
    let mut counts = if dry_run {
        format!(
            "would create {}, update {}, remove {}; {} unchanged, {} skipped (invalid)",
            t.created, t.updated, t.removed, t.unchanged, t.skipped_invalid
        )
    } else {
        format!(
            "now holds {held}; this run: {} created, {} updated, {} removed, {} unchanged, {} skipped (invalid)",
            t.created, t.updated, t.removed, t.unchanged, t.skipped_invalid
        )
    };
    if t.relabelled > 0 {
        counts.push_str(&if dry_run {
            format!(", relabel {}", t.relabelled)
        } else {
            format!(", {} relabelled", t.relabelled)
        });
    }
    for (n, what) in [
        (
            t.dropped_other_types,
            "not sent (type not Address/File/Host)",
        ),
        (t.blocked, "blocked (unsafe or Never Send)"),
        (t.over_cap, "over Maximum Indicators"),
        (t.adopted, "adopted"),
    ] {
        if n > 0 {
            counts.push_str(&format!(", {n} {what}"));
        }
    }
    if r.replaced > 0 {
        let layout = if r.grouped_indicators.is_some() {
            "single document"
        } else {
            "grouped document"
        };
        let replaced = counted(r.replaced, layout);
        counts.push_str(&if dry_run {
            format!("; would replace {replaced}")
        } else {
            format!("; {replaced} replaced")
        });
    }
    let mut trouble = trouble(r);
    // Not failures, but the admin's to decide: said early, so the 255 characters keep them.
    let mut notices = Vec::new();
    if t.foreign_left > 0 {
        notices.push(format!(
            "{} this job did not make left alone (see Take Over Source)",
            counted(t.foreign_left, "document")
        ));
    }
    if t.disabled > 0 {
        let members = match t.disabled_grouped_indicators {
            0 => String::new(),
            n => format!(" ({n} indicators)"),
        };
        notices.push(format!(
            "{}{members} disabled by Threat Response as noisy (see app.log)",
            counted(t.disabled, "document")
        ));
    }
    counts.push_str(&deploy_words(r));
    if r.full_reconcile && !dry_run {
        counts.push_str(" (full reconcile)");
    }
    let failed = !trouble.is_empty();
    trouble.extend(notices);
    let lead = trouble.join("; ");
    let line = |source: &str| match (dry_run, failed, lead.is_empty()) {
        (true, _, true) => format!("Dry run for Tanium source \"{source}\": {counts}"),
        (true, _, false) => format!("Dry run for Tanium source \"{source}\": {lead}; {counts}"),
        (false, false, true) => format!("Synced: Tanium source \"{source}\" {counts}"),
        (false, false, false) => format!("Synced: Tanium source \"{source}\": {lead}; {counts}"),
        (false, true, _) => format!("Partial sync to Tanium source \"{source}\": {lead}; {counts}"),
    };
    // A long source name gives up more of its middle when that keeps the counters whole.
    [24, 12, 6]
        .iter()
        .map(|keep| line(&shown_source(&r.source.0, *keep)))
        .find(|m| m.chars().count() <= crate::platform::MESSAGE_MAX_CHARS)
        .unwrap_or_else(|| line(&shown_source(&r.source.0, 24)))
}

/// What in a run that delivered something needs the admin, most urgent first.
fn trouble(r: &SyncReport) -> Vec<String> {
    let t = &r.tally;
    let failed = t.failed_writes + t.failed_removals;
    let mut trouble = Vec::new();
    if let Some(stop) = &r.stop {
        trouble.push(stop.to_string());
    }
    if t.held_back > 0 {
        trouble.push(format!(
            "held back {}, more than Maximum Removal Percent allows: raise it to perform them",
            counted(t.held_back, "removal")
        ));
    }
    if failed > 0 {
        // A stop that names the cause makes the first error a repeat.
        let said = matches!(r.stop, Some(Stop::Pull(_) | Stop::Forbidden(_)));
        // Grouped, a failure is a document's, not an indicator's.
        let failed = match r.grouped_indicators {
            Some(_) => format!("{} failed", counted(failed, "document write")),
            None => format!("{failed} failed"),
        };
        match r.errors.first().filter(|_| !said) {
            Some(e) => trouble.push(format!("{failed}, first error: {e}")),
            None => trouble.push(failed),
        }
    } else if !r.removals_complete && r.stop.is_none() && t.held_back == 0 {
        // Exit 3 must say why even when every write went through.
        match r.errors.first() {
            Some(e) => trouble.push(format!("removal check incomplete: {e}")),
            None => trouble.push("removal check incomplete".into()),
        }
    }
    // Said even when other trouble came first: the endpoints lack the new intel.
    if let Deploy::Failed(e) = &r.deploy {
        trouble.push(e.clone());
    }
    trouble
}

/// What the message says of the deploys: what became of the last one the job started, when
/// this run asked, and why this run's is owed.
fn deploy_words(r: &SyncReport) -> String {
    let mut out = String::new();
    let shown_since = matches!(r.deploy, Deploy::AlreadyRunning { since: Some(_) });
    match &r.last_deploy {
        Some(TaskState::Completed { ended }) => {
            out.push_str("; last intel deploy completed");
            if let Some(t) = ended {
                out.push_str(&format!(" {}", shown_time(t)));
            }
        }
        Some(TaskState::Running { started }) if !shown_since => {
            out.push_str("; last intel deploy still running");
            if let Some(t) = started {
                out.push_str(&format!(" (started {})", shown_time(t)));
            }
        }
        Some(TaskState::Ended { status, error, .. }) => {
            out.push_str(&format!(
                "; last intel deploy ended {}",
                shown_text(status, 20)
            ));
            if let Some(e) = error {
                out.push_str(&format!(": {}", shown_text(e, 60)));
            }
        }
        Some(TaskState::Running { .. }) | None => {}
    }
    match &r.deploy {
        Deploy::AlreadyRunning { since: Some(t) } => out.push_str(&format!(
            "; intel deploy owed to the next run (the last one, started {}, is still running)",
            shown_time(t)
        )),
        Deploy::AlreadyRunning { since: None } => {
            out.push_str("; intel deploy owed to the next run (one was already running)")
        }
        Deploy::Refused => out.push_str(
            "; intel deploy owed to the next run (a deploy is already running: Tanium answered 400)",
        ),
        Deploy::Disabled => out.push_str("; intel awaits a deploy (Deploy Intel is off)"),
        Deploy::Failed(_) | Deploy::NotNeeded | Deploy::Done { .. } => {}
    }
    out
}

/// A time the server gave, to the second in UTC when it is RFC 3339 (as recorded), else its
/// text, cut short.
fn shown_time(t: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(t.trim(), &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| shown_text(t, 40))
}

/// A server's text on one line, at most `max` characters.
fn shown_text(t: &str, max: usize) -> String {
    t.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A source name as message.tc shows it: long names are cut in the middle, so the counters
/// and what to do still fit in the platform's 255 characters.
fn shown_source(name: &str, keep: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= 2 * keep + 1 {
        return name.to_string();
    }
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head}…{tail}")
}

/// The time limits of a request, and what they add up to for a server that takes requests
/// and never answers: what a schedule is sized by.
pub(crate) fn log_limits(config: &JobConfig, policy: &RetryPolicy) {
    let side = |h: &HttpSettings| {
        format!(
            "{} s to connect, {} s for an answer",
            h.connect_timeout.as_secs(),
            h.read_timeout.as_secs()
        )
    };
    let bound = |h: &HttpSettings| {
        (h.connect_timeout + h.read_timeout).as_secs() * u64::from(policy.max_timeouts)
    };
    log::info!(
        "timeouts: ThreatConnect {}; Tanium {}; a request gives up after {} timeouts, so one a \
         server never answers fails within {} s (ThreatConnect), {} s (Tanium)",
        side(&config.tc.http),
        side(&config.tanium.http),
        policy.max_timeouts,
        bound(&config.tc.http),
        bound(&config.tanium.http)
    );
}

/// `demo`: runs the job against the built-in simulators.
#[cfg(feature = "sim")]
pub fn demo(opts: &Options) -> Result<ExitStatus> {
    crate::demo::run(opts)
}

/// `demo` in a build without the simulators (the packaged app).
#[cfg(not(feature = "sim"))]
pub fn demo(_opts: &Options) -> Result<ExitStatus> {
    Err(crate::error::Error::Other(
        "demo is not in this build: the packaged app holds only the job; \
         run the demo from the sources with `cargo run --release -- demo`"
            .into(),
    ))
}

/// `package`: builds the .tcx from the app folder (the current directory) around this binary,
/// unless the binary needs a newer glibc than the job executors have.
pub fn package(opts: &Options) -> Result<ExitStatus> {
    let binary = std::env::current_exe()
        .map_err(|e| crate::error::Error::Other(format!("cannot find myself: {e}")))?;
    let max = crate::package::MAX_GLIBC;
    if let Some(needed) = crate::package::glibc_max_version(&binary)?.filter(|v| *v > max) {
        return Err(crate::error::Error::Other(format!(
            "package: this binary needs GLIBC {}.{}, but ThreatConnect's job executors can be \
             counted on for {}.{} only, so the app would not start there; build the package \
             with ./package.sh, which builds the binary against glibc {}.{}",
            needed.0, needed.1, max.0, max.1, max.0, max.1
        )));
    }
    let path = crate::package::build_tcx(&crate::package::PackageOptions {
        app_dir: std::path::PathBuf::from("."),
        binary,
        out_dir: opts.out.clone().unwrap_or_else(|| "target".into()),
    })?;
    println!("package ready: {}", path.display());
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{RunEnd, Tally};
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    fn config() -> (JobConfig, Checkpoint) {
        let raw: crate::params::RawParams = json!({
            "tc_api_path": "https://tc/api", "tc_token": "t:1",
            "tanium_address": "t", "tanium_username": "u", "tanium_password": "p",
            "last_modified": "2026-11-28T10:00:00Z",
        })
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
        let c = JobConfig::from_params(&raw).unwrap();
        (c, Checkpoint::load(&raw, NOW).unwrap().0)
    }

    fn report(tally: Tally) -> SyncReport {
        SyncReport {
            tally,
            full_reconcile: false,
            removals_complete: true,
            pull_complete: true,
            stop: None,
            errors: Vec::new(),
            deploy: Deploy::NotNeeded,
            last_deploy: None,
            end: Some(RunEnd {
                query_started: NOW,
                oldest_undelivered: None,
                pull_complete: true,
                full_reconcile: false,
                removals_complete: true,
                deploy_owed: false,
                deploy_refusals: 0,
                deploy_task: None,
                labels: crate::sync::LabelsEnd::Kept,
            }),
            source: ("ThreatConnect".into(), Some(7)),
            source_docs: 1159,
            grouped_indicators: None,
            replaced: 0,
        }
    }

    fn run(r: &SyncReport) -> Outcome {
        let (c, k) = config();
        outcome(&c, &k, r, false, NOW)
    }

    fn key<'a>(o: &'a Outcome, k: &str) -> Option<&'a Option<String>> {
        o.results.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
    }

    #[test]
    fn a_clean_run_exits_0_with_the_counters_and_moves_the_checkpoint() {
        let r = report(Tally {
            matched: 12,
            created: 2,
            updated: 1,
            removed: 3,
            unchanged: 9,
            skipped_invalid: 1,
            dropped_other_types: 4,
            ..Tally::default()
        });
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Success);
        assert_eq!(
            o.message,
            "Synced: Tanium source \"ThreatConnect\" now holds 1159 documents; this run: 2 created, 1 updated, 3 removed, 9 unchanged, 1 skipped (invalid), 4 not sent (type not Address/File/Host)"
        );
        assert_eq!(
            key(&o, "last_modified"),
            Some(&Some("2026-11-28T11:55:00Z".into()))
        );
        assert_eq!(key(&o, "deploy_pending"), Some(&Some(String::new())));
    }

    #[test]
    fn partial_runs_exit_3_and_say_why_first_error_stop_or_deploy() {
        let mut r = report(Tally {
            matched: 5,
            created: 3,
            failed_writes: 2,
            ..Tally::default()
        });
        r.errors = vec!["could not write X: Tanium answered 503".into()];
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Partial);
        assert!(
            o.message
                .starts_with("Partial sync to Tanium source \"ThreatConnect\": 2 failed, first error: could not write X: Tanium answered 503; now holds"),
            "{}",
            o.message
        );
        let mut stopped = report(Tally {
            matched: 5,
            unchanged: 5,
            ..Tally::default()
        });
        stopped.pull_complete = false;
        stopped.removals_complete = false;
        stopped.stop = Some(Stop::Pull("record 3 of page 2 cannot be read".into()));
        stopped.full_reconcile = true;
        let o = run(&stopped);
        assert_eq!(o.status, ExitStatus::Partial);
        assert!(
            o.message.starts_with(
                "Partial sync to Tanium source \"ThreatConnect\": ThreatConnect pull incomplete (nothing removed): record 3 of page 2 cannot be read; now holds"
            ) && o.message.ends_with(" (full reconcile)"),
            "{}",
            o.message
        );
        let mut deploy = report(Tally {
            matched: 1,
            created: 1,
            ..Tally::default()
        });
        deploy.deploy = Deploy::Failed("intel deploy failed: Tanium answered 400".into());
        if let Some(e) = deploy.end.as_mut() {
            e.deploy_owed = true;
        }
        let o = run(&deploy);
        assert_eq!(o.status, ExitStatus::Partial);
        assert!(
            o.message.starts_with(
                "Partial sync to Tanium source \"ThreatConnect\": intel deploy failed: Tanium answered 400; now holds"
            ),
            "{}",
            o.message
        );
        assert_eq!(key(&o, "deploy_pending"), Some(&Some("true".into())));
    }

    #[test]
    fn documents_threat_response_disabled_are_a_notice_not_a_failure() {
        let mut r = report(Tally {
            unchanged: 40,
            disabled: 2,
            ..Tally::default()
        });
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Success);
        assert!(
            o.message.starts_with(
                "Synced: Tanium source \"ThreatConnect\": 2 documents disabled by Threat Response as noisy (see app.log); now holds"
            ),
            "{}",
            o.message
        );
        r.tally.disabled_grouped_indicators = 730;
        r.tally.foreign_left = 3;
        let o = run(&r);
        assert!(
            o.message.contains(
                ": 3 documents this job did not make left alone (see Take Over Source); 2 documents (730 indicators) disabled by Threat Response as noisy (see app.log); now holds"
            ),
            "{}",
            o.message
        );
    }

    #[test]
    fn the_message_says_what_became_of_the_last_deploy_and_why_this_one_is_owed() {
        let said = |deploy: Deploy, last: Option<TaskState>| {
            let mut r = report(Tally {
                created: 1,
                ..Tally::default()
            });
            r.deploy = deploy;
            r.last_deploy = last;
            let o = run(&r);
            assert_eq!(o.status, ExitStatus::Success, "{}", o.message);
            o.message
        };
        let m = said(
            Deploy::Done { started: true },
            Some(TaskState::Completed {
                ended: Some("2026-11-28T11:04:05.906Z".into()),
            }),
        );
        assert!(
            m.ends_with("; last intel deploy completed 2026-11-28T11:04:05Z"),
            "{m}"
        );
        let m = said(
            Deploy::AlreadyRunning {
                since: Some("2026-11-28T11:58:00.000Z".into()),
            },
            Some(TaskState::Running {
                started: Some("2026-11-28T11:58:00.000Z".into()),
            }),
        );
        assert!(
            m.ends_with(
                "; intel deploy owed to the next run (the last one, started 2026-11-28T11:58:00Z, is still running)"
            ),
            "{m}"
        );
        let m = said(
            Deploy::NotNeeded,
            Some(TaskState::Running {
                started: Some("not a time\n".into()),
            }),
        );
        assert!(
            m.ends_with("; last intel deploy still running (started not a time)"),
            "{m}"
        );
        let m = said(Deploy::Refused, None);
        assert!(
            m.ends_with(
                "; intel deploy owed to the next run (a deploy is already running: Tanium answered 400)"
            ),
            "{m}"
        );
        let m = said(
            Deploy::NotNeeded,
            Some(TaskState::Ended {
                status: "FAILED".into(),
                error: Some("compile error".into()),
                ended: None,
            }),
        );
        assert!(
            m.ends_with("; last intel deploy ended FAILED: compile error"),
            "{m}"
        );
    }

    #[test]
    fn the_longest_messages_keep_what_to_do_within_255_characters() {
        let mut r = report(Tally {
            matched: 9_999_999,
            created: 1_234_567,
            updated: 1_234_567,
            removed: 1_234_567,
            unchanged: 9_999_999,
            skipped_invalid: 99_999,
            dropped_other_types: 99_999,
            blocked: 99_999,
            over_cap: 99_999,
            adopted: 99_999,
            foreign_left: 99_999,
            held_back: 1_234_567,
            failed_writes: 99_999,
            ..Tally::default()
        });
        r.source = (
            "Threat Response intel for the EMEA production fleet, fed by ThreatConnect".repeat(3),
            Some(7),
        );
        r.errors = vec!["could not write 1.2.3.4: Tanium answered 503 Service Unavailable".into()];
        r.deploy = Deploy::Failed("intel deploy failed: Tanium answered 400".into());
        r.full_reconcile = true;
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Partial);
        let shown = crate::platform::one_line(&o.message);
        assert!(shown.chars().count() <= 255, "{shown}");
        assert!(
            shown.starts_with(
                "Partial sync to Tanium source \"Threat Response intel fo…et, fed by ThreatConnect\": held back"
            ),
            "{shown}"
        );
        assert!(
            shown.contains(
                "held back 1234567 removals, more than Maximum Removal Percent allows: raise it to perform them; 99999 failed, first error: could not write 1.2.3.4"
            ),
            "{shown}"
        );

        let mut clean = report(Tally {
            created: 1_234_567,
            updated: 1_234_567,
            removed: 1_234_567,
            unchanged: 9_999_999,
            skipped_invalid: 99_999,
            ..Tally::default()
        });
        clean.source = r.source.clone();
        clean.source_docs = 12_345_678;
        let shown = crate::platform::one_line(&run(&clean).message);
        assert!(shown.chars().count() <= 255, "{shown}");
        assert!(shown.ends_with("99999 skipped (invalid)"), "{shown}");
    }

    #[test]
    fn documents_left_alone_lead_the_message_so_the_cut_keeps_them() {
        let mut r = report(Tally {
            created: 1_234_567,
            updated: 1_234_567,
            removed: 1_234_567,
            unchanged: 9_999_999,
            skipped_invalid: 99_999,
            dropped_other_types: 99_999,
            blocked: 99_999,
            over_cap: 99_999,
            relabelled: 99_999,
            foreign_left: 12,
            ..Tally::default()
        });
        r.source = ("x".repeat(80), Some(7));
        r.deploy = Deploy::Disabled;
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Success);
        let shown = crate::platform::one_line(&o.message);
        assert!(
            shown.starts_with(&format!(
                "Synced: Tanium source \"{}…{}\": 12 documents this job did not make left alone (see Take Over Source); now holds",
                "x".repeat(24),
                "x".repeat(24)
            )),
            "{shown}"
        );
    }

    #[test]
    fn a_grouped_run_names_indicators_and_documents_apart() {
        let mut r = report(Tally {
            matched: 94,
            created: 94,
            ..Tally::default()
        });
        r.grouped_indicators = Some(94);
        r.source_docs = 8;
        r.replaced = 94;
        r.full_reconcile = true;
        assert_eq!(
            run(&r).message,
            "Synced: Tanium source \"ThreatConnect\" now holds 94 indicators in 8 documents; this run: 94 created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid); 94 single documents replaced (full reconcile)"
        );
        r.tally.failed_writes = 2;
        r.errors = vec!["could not write group 1f/0*: Tanium answered 503".into()];
        assert!(
            run(&r).message.starts_with(
                "Partial sync to Tanium source \"ThreatConnect\": 2 document writes failed, first error: could not write group 1f/0*"
            ),
            "{}",
            run(&r).message
        );
        // Back to one document per indicator: the grouped documents are replaced, not removed.
        let mut back = report(Tally {
            created: 1,
            ..Tally::default()
        });
        back.source_docs = 1;
        back.replaced = 1;
        assert_eq!(
            run(&back).message,
            "Synced: Tanium source \"ThreatConnect\" now holds 1 document; this run: 1 created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid); 1 grouped document replaced"
        );
        let (c, k) = config();
        back.end = None;
        assert!(outcome(&c, &k, &back, true, NOW)
            .message
            .ends_with("; would replace 1 grouped document"));
    }

    #[test]
    fn a_million_indicator_switch_to_groups_keeps_its_counters_within_255_characters() {
        let mut r = report(Tally {
            matched: 1_234_567,
            created: 1_234_567,
            removed: 99_999,
            skipped_invalid: 99_999,
            ..Tally::default()
        });
        r.source = (
            "Threat Response intel for the EMEA production fleet, fed by ThreatConnect".repeat(3),
            Some(7),
        );
        r.grouped_indicators = Some(1_234_567);
        r.source_docs = 2_470;
        r.replaced = 1_234_567;
        r.full_reconcile = true;
        let shown = crate::platform::one_line(&run(&r).message);
        assert!(shown.chars().count() <= 255, "{shown}");
        assert!(
            shown.ends_with("; 1234567 single documents replaced (full reconcile)"),
            "{shown}"
        );
        assert!(
            shown.starts_with("Synced: Tanium source \"Threat Respo…hreatConnect\" now holds"),
            "{shown}"
        );
    }

    #[test]
    fn nothing_delivered_exits_1_leading_with_why_and_keeps_every_key() {
        let mut r = report(Tally::default());
        r.pull_complete = false;
        r.removals_complete = false;
        r.stop = Some(Stop::Pull("record 1 of page 1 cannot be read".into()));
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Failure);
        assert_eq!(
            o.message,
            "Sync to Tanium source \"ThreatConnect\" failed: ThreatConnect pull incomplete (nothing removed): record 1 of page 1 cannot be read"
        );
        assert!(o.results.is_empty());

        // Writes that kept failing say how, not only that they did.
        let mut down = report(Tally {
            matched: 40,
            failed_writes: 40,
            ..Tally::default()
        });
        down.stop = Some(Stop::TaniumDown);
        down.errors = vec!["could not write X: Tanium at t answered 502 Bad Gateway".into()];
        assert_eq!(
            run(&down).message,
            "Sync to Tanium source \"ThreatConnect\" failed: stopped early: Tanium writes kept failing; first error: could not write X: Tanium at t answered 502 Bad Gateway"
        );
        // A missing permission is the whole story.
        down.stop = Some(Stop::Forbidden(
            "Tanium permission missing: the account or API token needs 'threat response intels write' to write intel documents".into(),
        ));
        assert_eq!(
            run(&down).message,
            "Sync to Tanium source \"ThreatConnect\" failed: Tanium permission missing: the account or API token needs 'threat response intels write' to write intel documents"
        );
    }

    #[test]
    fn a_dry_run_says_what_it_would_do_and_writes_no_results() {
        let mut r = report(Tally {
            created: 2,
            removed: 1,
            unchanged: 4,
            ..Tally::default()
        });
        r.end = None;
        let (c, k) = config();
        let o = outcome(&c, &k, &r, true, NOW);
        assert_eq!(o.status, ExitStatus::Success);
        assert_eq!(
            o.message,
            "Dry run for Tanium source \"ThreatConnect\": would create 2, update 0, remove 1; 4 unchanged, 0 skipped (invalid)"
        );
        assert!(o.results.is_empty());
    }
}
