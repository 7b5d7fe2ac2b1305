//! The intel deploy at the end of a run (TR 4.x): deploys are tasks, so the job keeps the task
//! id of the last one it started, asks what became of it on the next run, and never starts
//! another while it runs.

use crate::sync::checkpoint::Checkpoint;
use crate::tanium::client::TaniumClient;
use crate::tanium::{DeployAnswer, TaskState};

use super::Deploy;

/// After this many runs in a row whose deploy Tanium refused with 400, the refusal is reported
/// as a failure: a 400 is what Threat Response answers while another deploy runs, but no
/// deploy runs for hours, so the cause is another (the recorded 400's cause is unconfirmed).
pub const REFUSALS_TO_FAIL: u32 = 3;

/// What the deploy step of a run did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    pub outcome: Deploy,
    /// What became of the last deploy the job started (None: no task to ask about, or the
    /// server could not say).
    pub last: Option<TaskState>,
    /// The task the next run asks about.
    pub task: Option<i64>,
    /// Runs in a row, this one included, whose deploy was refused with 400.
    pub refusals: u32,
}

impl Step {
    /// A dry run: nothing asked, nothing started, the kept task left for the next real run.
    pub fn none(checkpoint: &Checkpoint) -> Step {
        Step {
            outcome: Deploy::NotNeeded,
            last: None,
            task: checkpoint.deploy_task,
            refusals: checkpoint.deploy_refusals,
        }
    }
}

/// Asks what became of the last deploy (when the job keeps its task), then deploys when
/// `needed` (something changed, or a deploy is owed) unless Deploy Intel is off or a deploy is
/// running: the job's last one, or one the intel status reports (a field no recorded status
/// has; read where a server has it).
pub(super) fn step(
    tanium: &TaniumClient,
    checkpoint: &Checkpoint,
    enabled: bool,
    needed: bool,
) -> Step {
    let last = checkpoint.deploy_task.and_then(|id| ask(tanium, id));
    let running = match &last {
        Some(TaskState::Running { started }) => Some(started.clone()),
        _ => None,
    };
    let mut step = Step {
        outcome: Deploy::NotNeeded,
        task: running
            .is_some()
            .then_some(checkpoint.deploy_task)
            .flatten(),
        last,
        refusals: 0,
    };
    if !needed {
        return step;
    }
    if !enabled {
        log::info!("Deploy Intel is off: the intel written awaits a deploy");
        step.outcome = Deploy::Disabled;
        return step;
    }
    if let Some(since) = running {
        log::info!("the last intel deploy is still running; the next run deploys this run's intel");
        step.outcome = Deploy::AlreadyRunning { since };
        return step;
    }
    if tanium.deploy_running() == Some(true) {
        log::info!(
            "the intel status says a deploy is running; the next run deploys this run's intel"
        );
        step.outcome = Deploy::AlreadyRunning { since: None };
        return step;
    }
    step.outcome = match tanium.deploy() {
        Ok(DeployAnswer::Started(task)) => {
            step.task = task;
            Deploy::Done { started: true }
        }
        Ok(DeployAnswer::NotAStep) => Deploy::Done { started: false },
        Ok(DeployAnswer::Refused(said)) => {
            step.refusals = checkpoint.deploy_refusals.saturating_add(1);
            if step.refusals >= REFUSALS_TO_FAIL {
                let msg = format!(
                    "intel deploy failed: refused with 400 {} runs in a row, as Tanium does while \
                     a deploy runs; check the deploys in Threat Response ({})",
                    step.refusals,
                    if said.is_empty() { "no details" } else { &said }
                );
                log::error!("{msg}");
                Deploy::Failed(msg)
            } else {
                log::info!("the next run deploys this run's intel");
                Deploy::Refused
            }
        }
        Err(e) => {
            let msg = format!("intel deploy failed: {e}");
            log::error!("{msg}");
            Deploy::Failed(msg)
        }
    };
    step
}

/// What the server says of deploy task `id`; None (logged) when it cannot say.
fn ask(tanium: &TaniumClient, id: i64) -> Option<TaskState> {
    match tanium.deploy_task(id) {
        Ok(Some(state)) => {
            match &state {
                TaskState::Completed { ended } => log::info!(
                    "the last intel deploy (task {id}) completed{}",
                    ended
                        .as_deref()
                        .map(|t| format!(" {t}"))
                        .unwrap_or_default()
                ),
                TaskState::Running { started } => log::info!(
                    "the last intel deploy (task {id}) is still running{}",
                    started
                        .as_deref()
                        .map(|t| format!(" (started {t})"))
                        .unwrap_or_default()
                ),
                TaskState::Ended {
                    status,
                    error,
                    ended,
                } => log::warn!(
                    "the last intel deploy (task {id}) ended {status}{}{}",
                    ended
                        .as_deref()
                        .map(|t| format!(" {t}"))
                        .unwrap_or_default(),
                    error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            }
            Some(state)
        }
        Ok(None) => {
            log::info!("Tanium says nothing of the last intel deploy (task {id}) any more");
            None
        }
        Err(e) => {
            log::info!("could not read the last intel deploy (task {id}): {e}");
            None
        }
    }
}
