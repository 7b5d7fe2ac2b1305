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
    } else if r.delivered_anything() || r.tally.held_back > 0 || r.lists_unread.is_some() {
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
// The message's parts in the order the admin reads them, each a line or two: split, each
// part would take the whole report.
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
        (t.on_exclusion_lists, "on TC exclusion lists"),
        (t.expired, "expired in TC"),
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
    if let Some(unread) = &r.lists_unread {
        trouble.push(unread.to_string());
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
mod tests;
