//! PLACEHOLDER (the lead replaces this file): the job's steps in order. The platform issue only
//! needs the signatures below so that `app` can call them.

use crate::cli::Options;
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::platform::ExitStatus;

/// What a run achieved, for message.tc, results.tc and the exit code.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status.
    pub status: ExitStatus,
    /// One-line summary for message.tc.
    pub message: String,
    /// results.tc updates (None removes a key); written only on Success or Partial.
    pub results: Vec<(String, Option<String>)>,
}

/// Runs the job with a validated config.
pub fn execute(config: &JobConfig, opts: &Options) -> Result<Outcome> {
    let _ = (config, opts);
    Ok(Outcome {
        status: ExitStatus::Success,
        message: "configuration is valid; sync not built yet".into(),
        results: Vec::new(),
    })
}

/// `check`: validates params and tests both connections.
pub fn check(config: &JobConfig, opts: &Options) -> Result<Outcome> {
    let _ = (config, opts);
    Err(Error::Other("not built yet".into()))
}

/// `demo`: runs the job against the built-in simulators.
pub fn demo(opts: &Options) -> Result<ExitStatus> {
    let _ = opts;
    Err(Error::Other("not built yet".into()))
}

/// `package`: builds the .tcx package.
pub fn package(opts: &Options) -> Result<ExitStatus> {
    let _ = opts;
    Err(Error::Other("not built yet".into()))
}
