//! The job's modes (run, dry run, check) on top of the sync, and what each reports back.

use time::OffsetDateTime;

use crate::cli::Options;
use crate::clients::Clients;
use crate::config::JobConfig;
use crate::error::Result;
use crate::platform::ExitStatus;
use crate::sync::{self, Checkpoint, SyncOptions, SyncReport};

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

/// Runs the job (or its dry run): connect both sides, sync, and turn the report into an outcome.
pub fn execute(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &Options,
    clients: &Clients,
) -> Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    let tc = clients.tc(&config.tc)?;
    let tanium = clients.tanium(&config.tanium)?;
    let sync_opts = SyncOptions {
        dry_run: opts.dry_run,
        out_dir: opts.out.clone(),
        now,
    };
    let report = sync::run(config, checkpoint, &sync_opts, tc, &tanium)?;
    Ok(outcome(config, checkpoint, &report, opts.dry_run, now))
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
    } else if r.delivered_anything() {
        ExitStatus::Partial
    } else {
        ExitStatus::Failure
    };
    let message = if status == ExitStatus::Failure {
        // Nothing went through: lead with why, not with counters that are all zero.
        let why = r
            .stop
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| r.errors.first().cloned())
            .or_else(|| r.deploy_error.clone())
            .unwrap_or_else(|| "nothing could be delivered".into());
        format!("Sync to Tanium source \"{}\" failed: {why}", r.source.0)
    } else {
        summary(r, dry_run)
    };
    let results = match (&r.end, status) {
        (Some(end), ExitStatus::Success | ExitStatus::Partial) => {
            checkpoint.results(end, &config.filters.fingerprint(), now)
        }
        _ => Vec::new(),
    };
    Outcome {
        status,
        message,
        results,
    }
}

/// The one-line summary of a run that delivered something (or had nothing to do).
fn summary(r: &SyncReport, dry_run: bool) -> String {
    let t = &r.tally;
    let source = &r.source.0;
    let mut message = if dry_run {
        format!(
            "Dry run for Tanium source \"{source}\": would create {}, update {}, remove {}; {} unchanged, {} skipped (invalid)",
            t.created, t.updated, t.removed, t.unchanged, t.skipped_invalid
        )
    } else {
        format!(
            "Synced {} indicators to Tanium source \"{source}\": {} created, {} updated, {} removed, {} unchanged, {} skipped (invalid)",
            t.matched, t.created, t.updated, t.removed, t.unchanged, t.skipped_invalid
        )
    };
    if t.dropped_other_types > 0 {
        message.push_str(&format!(
            ", {} not sent (type not Address/File/Host)",
            t.dropped_other_types
        ));
    }
    let failed = t.failed_writes + t.failed_removals;
    if failed > 0 {
        message.push_str(&format!(", {failed} failed"));
    }
    if let Some(stop) = &r.stop {
        message.push_str(&format!("; {stop}"));
    } else if failed > 0 {
        if let Some(e) = r.errors.first() {
            message.push_str(&format!("; first error: {e}"));
        }
    } else if !r.removals_complete {
        // Exit 3 must say why even when every write went through.
        message.push_str("; removal check incomplete");
        if let Some(e) = r.errors.first() {
            message.push_str(&format!(": {e}"));
        }
    }
    // Said even when other trouble came first: the endpoints lack the new intel.
    if let Some(e) = &r.deploy_error {
        message.push_str(&format!("; {e}"));
    }
    if r.full_reconcile && !dry_run {
        message.push_str(" (full reconcile)");
    }
    message
}

/// Verifies connectivity and credentials to both sides and the source; one line per check.
pub fn check(config: &JobConfig, _opts: &Options, clients: &Clients) -> Result<Outcome> {
    let mut lines = Vec::new();
    let mut ok = true;
    match clients.tc(&config.tc).and_then(|c| c.check()) {
        Ok(s) => lines.push(format!("ok   ThreatConnect: {s}")),
        Err(e) => {
            ok = false;
            lines.push(format!("FAIL ThreatConnect: {e}"));
        }
    }
    match clients.tanium(&config.tanium) {
        Ok(t) => {
            let summary = t.check();
            let mut readable = Vec::new();
            let mut unreadable = Vec::new();
            for (what, r) in t.check_access() {
                match r {
                    Ok(s) => readable.push(format!("{what} {s}")),
                    Err(e) => unreadable.push(format!("FAIL Tanium {what}: {e}")),
                }
            }
            match summary {
                Ok(s) if readable.is_empty() => lines.push(format!("ok   Tanium: {s}")),
                Ok(s) => lines.push(format!("ok   Tanium: {s}; {}", readable.join("; "))),
                Err(e) => {
                    ok = false;
                    lines.push(format!("FAIL Tanium: {e}"));
                }
            }
            ok &= unreadable.is_empty();
            lines.extend(unreadable);
            match t.find_source(&config.tanium.source_name) {
                Ok(Some(s)) => {
                    let mut n = 0u64;
                    let count = t.list_docs(s.id, &mut |_| n += 1);
                    match count {
                        Ok(_) => lines.push(format!(
                            "ok   Tanium source \"{}\": id {}, {n} documents",
                            s.name, s.id
                        )),
                        Err(e) => {
                            ok = false;
                            lines.push(format!("FAIL Tanium source \"{}\": {e}", s.name));
                        }
                    }
                }
                Ok(None) => lines.push(format!(
                    "ok   Tanium source \"{}\": not there yet; the first run creates it",
                    config.tanium.source_name
                )),
                Err(e) => {
                    ok = false;
                    lines.push(format!("FAIL Tanium source lookup: {e}"));
                }
            }
        }
        Err(e) => {
            ok = false;
            lines.push(format!("FAIL Tanium: {e}"));
        }
    }
    for l in &lines {
        println!("{l}");
        log::info!("check: {l}");
    }
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    Ok(Outcome {
        status: if ok {
            ExitStatus::Success
        } else {
            ExitStatus::Failure
        },
        message: if ok {
            "All checks passed: ThreatConnect, Tanium and the intel source are reachable".into()
        } else {
            format!(
                "Check failed: {}",
                failed
                    .first()
                    .map(|s| s.trim_start_matches("FAIL "))
                    .unwrap_or("")
            )
        },
        results: Vec::new(),
    })
}

/// `demo`: runs the job against the built-in simulators.
pub fn demo(opts: &Options) -> Result<ExitStatus> {
    crate::demo::run(opts)
}

/// `package`: builds the .tcx from the app folder (the current directory) around this binary.
pub fn package(opts: &Options) -> Result<ExitStatus> {
    let binary = std::env::current_exe()
        .map_err(|e| crate::error::Error::Other(format!("cannot find myself: {e}")))?;
    let path = crate::package::build_tcx(&crate::package::PackageOptions {
        app_dir: std::path::PathBuf::from("."),
        binary,
        out_dir: opts.out.clone().unwrap_or_else(|| "target".into()),
    })?;
    println!("package ready: {}", path.display());
    Ok(ExitStatus::Success)
}
