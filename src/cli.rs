//! Command-line parsing: the app's own options and subcommands; every other `--name` is a
//! legacy job param as older platforms pass them.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::params::{self, RawParams};

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Command {
    /// No subcommand: run the job, as the platform does.
    #[default]
    Run,
    /// `check`: validate params and test both connections.
    Check,
    /// `demo`: run the job against the built-in simulators.
    Demo,
    /// `package`: build the .tcx package.
    Package,
}

/// Everything the command line said, parsed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The subcommand.
    pub command: Command,
    /// `--params FILE`: a plain local JSON object of params.
    pub params_file: Option<PathBuf>,
    /// `--results FILE`: an earlier run's results.tc, read as params after `--params`.
    pub results_file: Option<PathBuf>,
    /// `--dry-run`: render and report, write nothing to Tanium.
    pub dry_run: bool,
    /// `--out DIR`: where a dry run (or a subcommand) puts what it produces.
    pub out: Option<PathBuf>,
    /// `--print-config`: print the validated config (secrets redacted) as JSON and exit 0.
    pub print_config: bool,
    pub help: bool,
    pub version: bool,
    /// Legacy job params from argv (`--name value`, bare `--flag`, repeated `--name`).
    pub legacy: RawParams,
}

/// Usage text for `--help`.
pub fn usage() -> String {
    format!(
        "tanium-tr-indicators {version}
Sends ThreatConnect Address, File and Host indicators to Tanium Threat Response.

USAGE:
    tanium-tr-indicators [run] [OPTIONS] [--<param> <value>]...
    tanium-tr-indicators check [OPTIONS]
    tanium-tr-indicators demo [OPTIONS]
    tanium-tr-indicators package [OPTIONS]

COMMANDS:
    run        run the job once (the default, what the platform does)
    check      validate the params and test ThreatConnect, Tanium and the intel source
    demo       run the job against built-in ThreatConnect and Tanium simulators
               (development builds; not in the packaged app)
    package    build the .tcx app package around this binary (one that needs glibc
               2.17 at most, as ./package.sh builds it)

run and check read their params from the platform's encrypted param file
(TC_APP_PARAM_FILE + TC_APP_PARAM_KEY), then --params FILE, then --results FILE, then
legacy --<param> args (later sources win).

OPTIONS:
    --params FILE     read params from a plain JSON object file
    --results FILE    carry an earlier run's results.tc (Last Modified and the job's other
                      kept params), as the platform does between runs; a missing file is
                      a first run
    --dry-run         do everything except writing to Tanium
    --out DIR         output folder for a dry run or a subcommand
    --print-config    validate the params, print the config (secrets redacted) and exit
    --help            print this help
    --version         print the version
",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// Parses argv (without the program name).
pub fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options::default();
    let rest = args;
    let command_of = |word: &str| match word {
        "run" => Some(Command::Run),
        "check" => Some(Command::Check),
        "demo" => Some(Command::Demo),
        "package" => Some(Command::Package),
        _ => None,
    };
    let mut command_seen = false;
    let mut legacy: Vec<String> = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i].as_str();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value_of = |what: &str| -> Result<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            rest.get(i)
                .filter(|v| !v.starts_with("--"))
                .cloned()
                .ok_or_else(|| Error::Param(format!("{name} needs {what}")))
        };
        match name {
            "--params" => opts.params_file = Some(PathBuf::from(value_of("a file")?)),
            "--results" => opts.results_file = Some(PathBuf::from(value_of("a file")?)),
            "--out" => opts.out = Some(PathBuf::from(value_of("a folder")?)),
            "--dry-run" => opts.dry_run = true,
            "--print-config" => opts.print_config = true,
            "--help" | "-h" => opts.help = true,
            "--version" | "-V" => opts.version = true,
            // The command may come anywhere (`--params job.json check`), but a word right
            // after a legacy `--name` is that param's value.
            word if !command_seen
                && command_of(word).is_some()
                && !legacy
                    .last()
                    .is_some_and(|l| l.starts_with("--") && !l.contains('=')) =>
            {
                command_seen = true;
                opts.command = command_of(word).unwrap_or_default();
            }
            _ => legacy.push(rest[i].clone()),
        }
        i += 1;
    }
    opts.legacy = params::parse_legacy_args(&legacy)?;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_may_follow_the_options() {
        for args in [
            &["check", "--params", "job.json"][..],
            &["--params", "job.json", "check"][..],
            &["--dry-run", "check"][..],
        ] {
            assert_eq!(parse(&v(args)).unwrap().command, Command::Check, "{args:?}");
        }
        // A legacy param's value is never taken for the command.
        let o = parse(&v(&["--tanium_source", "check"])).unwrap();
        assert_eq!(o.command, Command::Run);
        assert_eq!(
            o.legacy.get("tanium_source"),
            Some(&serde_json::json!("check"))
        );
    }

    #[test]
    fn options_and_legacy_params_are_told_apart() {
        let o = parse(&v(&[
            "--params",
            "p.json",
            "--tanium_address",
            "t.local",
            "--dry-run",
            "--verify_ssl",
            "--out=o",
            "--owners",
            "A",
            "--owners",
            "B",
            "--print-config",
        ]))
        .unwrap();
        assert_eq!(o.command, Command::Run);
        assert_eq!(o.params_file, Some(PathBuf::from("p.json")));
        assert_eq!(o.out, Some(PathBuf::from("o")));
        assert!(o.dry_run && o.print_config && !o.help);
        assert_eq!(o.legacy["tanium_address"], "t.local");
        assert_eq!(o.legacy["verify_ssl"], true);
        assert_eq!(o.legacy["owners"], serde_json::json!(["A", "B"]));
    }

    #[test]
    fn subcommands_in_any_position() {
        assert_eq!(parse(&v(&["check"])).unwrap().command, Command::Check);
        assert_eq!(
            parse(&v(&["run", "--dry-run"])).unwrap().command,
            Command::Run
        );
        assert_eq!(
            parse(&v(&["demo", "--out", "d"])).unwrap().command,
            Command::Demo
        );
        assert_eq!(parse(&v(&["package"])).unwrap().command, Command::Package);
        assert_eq!(
            parse(&v(&["--tql", "x", "check"])).unwrap().command,
            Command::Check
        );
        assert!(parse(&v(&["check", "run"])).is_err(), "one command");
        assert!(parse(&v(&["--version"])).unwrap().version);
        let e = parse(&v(&["--params"])).unwrap_err().to_string();
        assert!(e.contains("--params needs a file"), "{e}");
    }
}
