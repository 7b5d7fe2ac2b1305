//! One run from argv to exit code: load raw params, validate, log, run the job, report.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::cli::{self, Command, Options};
use crate::clients::Clients;
use crate::config::{JobConfig, Loader};
use crate::error::{Error, Result};
use crate::http::RetryPolicy;
use crate::job;
use crate::params::{self, RawParams};
use crate::platform::{self, ExitStatus};
use crate::sync::Checkpoint;
use crate::tc::variables::has_variables;

/// Runs the binary with argv (without the program name) and the process environment;
/// returns the exit code.
pub fn main(args: &[String]) -> i32 {
    main_with_env(args, &|k| std::env::var(k).ok())
}

/// Like [`main`], with the environment looked up through `env` (tests need not touch the
/// process environment).
pub fn main_with_env(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> i32 {
    let opts = match cli::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\nrun with --help for usage");
            let out = out_path_in_args(args).unwrap_or_else(|| PathBuf::from("./out"));
            write_message_or_warn(&out, &e.to_string());
            return ExitStatus::Failure.code();
        }
    };
    if opts.help {
        print!("{}", cli::usage());
        return ExitStatus::Success.code();
    }
    if opts.version {
        println!("tanium-tr-indicators {}", env!("CARGO_PKG_VERSION"));
        return ExitStatus::Success.code();
    }
    match opts.command {
        Command::Demo | Command::Package => {
            let r = if opts.command == Command::Demo {
                job::demo(&opts)
            } else {
                job::package(&opts)
            };
            match r {
                Ok(status) => status.code(),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitStatus::Failure.code()
                }
            }
        }
        Command::Run | Command::Check => run_job(&opts, env),
    }
}

/// `--tc_out_path X` / `--tc_out_path=X` in argv, for reporting a command-line error.
fn out_path_in_args(args: &[String]) -> Option<PathBuf> {
    let flag = format!("--{}", crate::param_names::TC_OUT_PATH);
    args.iter().enumerate().find_map(|(i, a)| {
        if a == &flag {
            args.get(i + 1)
                .filter(|v| !v.starts_with("--"))
                .map(PathBuf::from)
        } else {
            a.strip_prefix(&format!("{flag}=")).map(PathBuf::from)
        }
    })
}

fn write_message_or_warn(out: &Path, msg: &str) {
    if let Err(e) = platform::write_message(out, msg) {
        log::error!("cannot write message.tc: {e}");
        eprintln!("error: cannot write message.tc: {e}");
    }
}

/// Loads raw params from every source; on failure still returns what could be read, so the
/// failure is reported in the right folder.
fn load_raw(opts: &Options, env: &dyn Fn(&str) -> Option<String>) -> (RawParams, Option<Error>) {
    let mut raw = RawParams::new();
    let mut load = || -> Result<()> {
        if let Some(p) = params::from_env(env)? {
            params::merge(&mut raw, p);
        }
        if let Some(f) = &opts.params_file {
            params::merge(&mut raw, params::read_local_json(f)?);
        }
        if let Some(carried) = opts
            .results_file
            .as_deref()
            .map(params::read_results)
            .transpose()?
            .flatten()
        {
            params::merge(&mut raw, carried);
        }
        Ok(())
    };
    let err = load().err();
    params::merge(&mut raw, opts.legacy.clone());
    (raw, err)
}

/// Registers every credential among the raw params for masking, before anything is logged.
fn mask_raw_secrets(raw: &RawParams) {
    for name in crate::param_names::SECRET_PARAMS {
        let values = match raw.get(*name) {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|i| i.as_str()).collect()
            }
            _ => Vec::new(),
        };
        for v in values {
            platform::mask_secret(v);
            platform::mask_secret(v.trim());
        }
    }
}

fn fail(out: &Path, e: &Error) -> i32 {
    log::error!("{e}");
    let message = match e {
        Error::Param(problems) => param_summary(problems),
        e => e.to_string(),
    };
    write_message_or_warn(out, &message);
    ExitStatus::Failure.code()
}

/// message.tc for bad params: one problem as it is; several by the labels the admin sees in
/// the job wizard, since all of them rarely fit in 255 characters (app.log has each).
fn param_summary(problems: &str) -> String {
    let names: Vec<&str> = crate::param_names::JOB_PARAMS
        .iter()
        .map(|p| p.label)
        .chain(crate::param_names::PLATFORM_PARAMS.iter().copied())
        .collect();
    // A problem starts with the name of its param; "; " inside one (a quoted value) does not.
    let named: Vec<&str> = problems
        .split("; ")
        .filter_map(|part| {
            names
                .iter()
                .filter(|n| part.starts_with(*n))
                .max_by_key(|n| n.len())
                .copied()
        })
        .collect();
    if named.len() < 2 {
        return problems.to_string();
    }
    let lead = format!("{} invalid parameters: ", named.len());
    let tail = " (details in app.log)";
    let mut shown = 0;
    let mut len = lead.chars().count() + tail.chars().count();
    for (i, n) in named.iter().enumerate() {
        let rest = named.len() - i - 1;
        let more = if rest > 0 {
            format!(", and {rest} more").len()
        } else {
            0
        };
        let add = n.chars().count() + if i > 0 { 2 } else { 0 };
        if len + add + more > crate::platform::MESSAGE_MAX_CHARS {
            break;
        }
        len += add;
        shown += 1;
    }
    let mut list = named[..shown].join(", ");
    if shown < named.len() {
        list.push_str(&format!(", and {} more", named.len() - shown));
    }
    format!("{lead}{list}{tail}")
}

fn run_job(opts: &Options, env: &dyn Fn(&str) -> Option<String>) -> i32 {
    if let Some(key) = env(params::PARAM_KEY_ENV) {
        platform::mask_secret(&key);
    }
    let (mut raw, load_error) = load_raw(opts, env);
    mask_raw_secrets(&raw);
    let loader = Loader::new(&raw);
    let out = loader.paths().out.clone();
    if let Err(e) = platform::init_logging(loader.log_level(), &loader.paths().log) {
        eprintln!("warning: logging to a file is unavailable: {e}");
    }
    if let Some(e) = load_error {
        return fail(&out, &e);
    }
    if let Some(f) = opts.results_file.as_deref().filter(|f| !f.exists()) {
        log::info!(
            "--results {}: no such file yet, so this run starts without a checkpoint (a first run)",
            f.display()
        );
    }
    log::info!(
        "tanium-tr-indicators {} starting{}",
        env!("CARGO_PKG_VERSION"),
        loader
            .job_id()
            .map(|id| format!(" (job {id})"))
            .unwrap_or_default()
    );
    let clients = Clients::new(RetryPolicy::default());
    if has_variables(&raw) {
        let resolved = loader
            .tc()
            .and_then(|tc| clients.tc(tc))
            .and_then(|tc| tc.resolve_variables(&mut raw));
        match resolved {
            Ok(r) => {
                for s in &r.sensitive {
                    platform::mask_secret(s.expose());
                }
                mask_raw_secrets(&raw);
                log::info!("resolved {} ThreatConnect variable(s)", r.count);
            }
            Err(e) => return fail(&out, &e),
        }
    }
    let now = OffsetDateTime::now_utc();
    let loaded = match (loader.finish(&raw), Checkpoint::load(&raw, now)) {
        (Ok(c), Ok(k)) => Ok((c, k)),
        // Every bad param at once, the job's and the checkpoint's (Last Modified).
        (Err(Error::Param(a)), Err(Error::Param(b))) => Err(Error::Param(format!("{a}; {b}"))),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let ((config, notes), (checkpoint, checkpoint_notes)) = match loaded {
        Ok(l) => l,
        Err(e) => return fail(&out, &e),
    };
    for n in notes.iter().chain(&checkpoint_notes) {
        log::info!("{n}");
    }
    let mut shown = config.redacted_json();
    shown["checkpoint"] = checkpoint.to_json();
    log::debug!("config: {shown}");
    if opts.print_config {
        // `{:#}` is serde_json's pretty printer.
        println!("{}", platform::redact(&format!("{shown:#}")));
        return ExitStatus::Success.code();
    }
    let result = if opts.command == Command::Check {
        crate::check::run(&config, &checkpoint, &clients)
    } else {
        job::execute(&config, &checkpoint, opts, &clients)
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return fail(&config.paths.out, &e),
    };
    finish(&config, opts, outcome)
}

fn finish(config: &JobConfig, opts: &Options, outcome: job::Outcome) -> i32 {
    let out = &config.paths.out;
    let mut status = outcome.status;
    let keeps_results = matches!(status, ExitStatus::Success | ExitStatus::Partial);
    if keeps_results && opts.command == Command::Run && !outcome.results.is_empty() {
        for (k, v) in &outcome.results {
            log::info!("results.tc: {k} = {}", v.as_deref().unwrap_or(""));
        }
        if let Err(e) = platform::update_results(out, &outcome.results) {
            log::error!("cannot write results.tc: {e}");
            status = ExitStatus::Failure;
        }
    }
    match status {
        ExitStatus::Success => log::info!("finished: {}", outcome.message),
        ExitStatus::Partial => log::warn!("finished with failures: {}", outcome.message),
        ExitStatus::Failure => log::error!("failed: {}", outcome.message),
    }
    if let Err(e) = platform::write_message(out, &outcome.message) {
        log::error!("cannot write message.tc: {e}");
        return ExitStatus::Failure.code();
    }
    status.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(out: &Path) -> JobConfig {
        let raw: RawParams = json!({
            "tc_api_path": "https://tc/api",
            "tc_token": "t:1",
            "tanium_address": "t",
            "tanium_username": "u",
            "tanium_password": "p",
            "tc_out_path": out.display().to_string(),
        })
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
        JobConfig::from_params(&raw).unwrap()
    }

    fn outcome(status: ExitStatus) -> job::Outcome {
        job::Outcome {
            status,
            message: format!("done: {status:?}"),
            results: vec![
                ("last_modified", Some("2026-11-01T00:00:00Z".into())),
                ("stale", None),
            ],
        }
    }

    #[test]
    fn results_are_kept_only_on_success_or_partial() {
        for (status, keeps) in [
            (ExitStatus::Success, true),
            (ExitStatus::Partial, true),
            (ExitStatus::Failure, false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let c = config(dir.path());
            std::fs::write(dir.path().join("results.tc"), "stale = x\nother = y\n").unwrap();
            let code = finish(&c, &Options::default(), outcome(status));
            assert_eq!(code, status.code());
            let results = std::fs::read_to_string(dir.path().join("results.tc")).unwrap();
            let want = if keeps {
                "other = y\nlast_modified = 2026-11-01T00:00:00Z\n"
            } else {
                "stale = x\nother = y\n"
            };
            assert_eq!(results, want, "{status:?}");
            let msg = std::fs::read_to_string(dir.path().join("message.tc")).unwrap();
            assert_eq!(msg, format!("done: {status:?}\n"));
        }
    }

    #[test]
    fn check_never_writes_results() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let opts = Options {
            command: Command::Check,
            ..Options::default()
        };
        assert_eq!(finish(&c, &opts, outcome(ExitStatus::Success)), 0);
        assert!(!dir.path().join("results.tc").exists());
        assert!(dir.path().join("message.tc").exists());
    }

    #[test]
    fn several_bad_params_are_named_by_label_one_is_shown_whole() {
        let one = "Minimum Confidence Rating must be a whole number from 0 to 100, got 'abc'";
        assert_eq!(param_summary(one), one);
        let three = "Minimum Confidence Rating must be a whole number from 0 to 100, got 'x; y'; \
                     Include Tags must be a list of names; Parallel Tanium Writes must be a whole \
                     number from 1 to 32, got '99'";
        assert_eq!(
            param_summary(three),
            "3 invalid parameters: Minimum Confidence Rating, Include Tags, Parallel Tanium Writes (details in app.log)"
        );
    }

    #[test]
    fn many_bad_params_keep_the_count_and_the_pointer_to_the_log() {
        let all: Vec<String> = crate::param_names::JOB_PARAMS
            .iter()
            .map(|p| format!("{} is wrong", p.label))
            .collect();
        let m = param_summary(&all.join("; "));
        assert!(m.chars().count() <= 255, "{m}");
        assert!(
            m.starts_with(&format!("{} invalid parameters: Api User, ", all.len())),
            "{m}"
        );
        assert!(m.ends_with(" more (details in app.log)"), "{m}");
    }

    #[test]
    fn out_path_for_command_line_errors() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            out_path_in_args(&a(&["--x", "--tc_out_path", "o"])),
            Some(PathBuf::from("o"))
        );
        assert_eq!(
            out_path_in_args(&a(&["--tc_out_path=p"])),
            Some(PathBuf::from("p"))
        );
        assert_eq!(out_path_in_args(&a(&["--tc_out_path", "--x"])), None);
    }
}
