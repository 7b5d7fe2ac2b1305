//! The job's modes (run, dry run, check) on top of the sync, and what each reports back.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::Options;
use crate::config::JobConfig;
use crate::error::Result;
use crate::http::RetryPolicy;
use crate::platform::ExitStatus;
use crate::sync::{self, SyncOptions, SyncReport};
use crate::tanium::client::TaniumClient;
use crate::tc::client::TcClient;

/// What a mode hands back to the platform layer: exit status, message.tc and results.tc entries.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status.
    pub status: ExitStatus,
    /// One-line summary for message.tc.
    pub message: String,
    /// results.tc updates (None removes a key).
    pub results: Vec<(String, Option<String>)>,
}

fn iso(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Runs the job (or its dry run): connect both sides, sync, and turn the report into an outcome.
pub fn execute(config: &JobConfig, opts: &Options) -> Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    let tc = TcClient::new(&config.tc, RetryPolicy::default())?;
    let tanium = TaniumClient::connect(&config.tanium, RetryPolicy::default())?;
    let sync_opts = SyncOptions {
        dry_run: opts.dry_run,
        out_dir: opts.out.clone(),
        now,
    };
    let report = sync::run(config, &sync_opts, &tc, &tanium)?;
    Ok(outcome(config, &report, opts.dry_run, now))
}

/// Maps a sync report to exit status, message and results (pure, so it is tested directly).
pub fn outcome(config: &JobConfig, r: &SyncReport, dry_run: bool, now: OffsetDateTime) -> Outcome {
    let t = &r.tally;
    let status = if !r.has_failures() {
        ExitStatus::Success
    } else if r.delivered_anything() {
        ExitStatus::Partial
    } else {
        ExitStatus::Failure
    };

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
    if let Some(why) = &r.stopped {
        message.push_str(&format!("; {why}"));
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
    if r.deploy_failed {
        // Say it even when other trouble was reported first: the endpoints lack the new intel.
        match r
            .errors
            .iter()
            .find(|e| e.starts_with("intel deploy failed"))
        {
            Some(e) if !message.contains(e.as_str()) => message.push_str(&format!("; {e}")),
            Some(_) => {}
            None => message.push_str("; intel deploy failed"),
        }
    }
    if r.full_reconcile && !dry_run {
        message.push_str(" (full reconcile)");
    }
    if status == ExitStatus::Failure {
        // Nothing went through: lead with why, not with counters that are all zero.
        let why = r
            .stopped
            .clone()
            .or_else(|| r.errors.first().cloned())
            .unwrap_or_else(|| "nothing could be delivered".into());
        message = format!("Sync to Tanium source \"{source}\" failed: {why}");
    }

    let mut results = Vec::new();
    if !dry_run && status != ExitStatus::Failure {
        if let Some(lm) = r.new_last_modified {
            results.push(("last_modified".to_string(), Some(iso(lm))));
        }
        results.push((
            "filter_fingerprint".to_string(),
            Some(config.filters.fingerprint()),
        ));
        results.push((
            "job_horizon".to_string(),
            Some(
                config
                    .horizon
                    .map_or_else(|| crate::config::HORIZON_NONE.to_string(), iso),
            ),
        ));
        // A failed deploy is owed by the next run even when that run changes nothing.
        results.push((
            "deploy_pending".to_string(),
            Some(if r.deploy_failed { "true" } else { "" }.to_string()),
        ));
        if r.full_reconcile && r.removals_complete && t.failed_removals == 0 && r.pull_complete {
            results.push(("last_full_reconcile".to_string(), Some(iso(now))));
        } else if !r.removals_complete || t.failed_removals > 0 {
            // Removal evidence may not recur: make the next run a full reconcile.
            results.push(("last_full_reconcile".to_string(), Some(String::new())));
        }
    }
    Outcome {
        status,
        message,
        results,
    }
}

/// Verifies connectivity and credentials to both sides and the source; one line per check.
pub fn check(config: &JobConfig, _opts: &Options) -> Result<Outcome> {
    let mut lines = Vec::new();
    let mut ok = true;
    match TcClient::new(&config.tc, RetryPolicy::default()).and_then(|c| c.check()) {
        Ok(s) => lines.push(format!("ok   ThreatConnect: {s}")),
        Err(e) => {
            ok = false;
            lines.push(format!("FAIL ThreatConnect: {e}"));
        }
    }
    match TaniumClient::connect(&config.tanium, RetryPolicy::default()) {
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
