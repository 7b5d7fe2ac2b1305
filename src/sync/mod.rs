//! The sync: read the app's Tanium source, pull what changed in ThreatConnect, create / update /
//! remove intel documents, deploy once, and say where the next run starts.
//!
//! Only this module knows the order of the steps (`run`): the source is opened, the run
//! context and the layout are decided once, the layout reconciles, and the report ends the
//! run. Each stage has its own file; `tc`, `tanium` and `intel` know nothing of each other,
//! this module maps between them.

mod cause;
pub mod checkpoint;
mod deploy;
mod doc_ops;
mod drive;
mod grouped;
mod guard;
mod health;
mod index;
mod label_book;
mod lists;
mod per_indicator;
mod pull;
mod report;
mod select;
mod source;
#[cfg(test)]
mod testkit;
mod window;

use std::path::PathBuf;
use std::time::Instant;

use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::error::Result;
use crate::tanium::client::TaniumClient;
use crate::tc::client::TcClient;

pub use checkpoint::{Checkpoint, Due, LabelsEnd, ListsEnd, RunEnd};
pub use lists::{Lists, Unread};
pub use report::{Deploy, Stop, SyncReport, Tally};
pub use source::refuse_built_in_source;
pub use window::{next_pull, Full, NextPull};

use label_book::LabelBook;
use source::Source;

/// What the caller asks of a run besides the job config.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Read both sides, write nothing to Tanium, print the plan.
    pub dry_run: bool,
    /// Where a dry run writes the rendered documents.
    pub out_dir: Option<PathBuf>,
    /// The run's start time (injected so tests can move the clock).
    pub now: OffsetDateTime,
}

/// How indicators map to documents, decided once per run from Indicators per Intel Document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One document per indicator, named and identified by it.
    PerIndicator,
    /// Indicators that earn the same labels share documents of up to `size` (see `grouped`).
    Grouped { size: u32 },
}

impl Layout {
    pub fn of(config: &JobConfig) -> Layout {
        match config.per_document {
            0 | 1 => Layout::PerIndicator,
            size => Layout::Grouped { size },
        }
    }
}

/// What every stage of a run reads: the job, where it starts, the caller's options, both
/// clients, the source, the layout and whether the run reconciles fully.
struct Run<'a> {
    pub config: &'a JobConfig,
    pub checkpoint: &'a Checkpoint,
    pub opts: &'a SyncOptions,
    pub tc: &'a TcClient,
    pub tanium: &'a TaniumClient,
    pub source: &'a Source,
    pub layout: Layout,
    /// Why the run compares the whole match set with the source (None: incremental).
    pub full: Option<Full>,
    /// ThreatConnect's exclusion lists, read once at the start.
    pub lists: &'a Lists,
}

impl Run<'_> {
    /// One plan line: printed (and logged) in a dry run, logged at debug otherwise.
    pub fn plan(&self, line: String) {
        if self.opts.dry_run {
            log::info!("plan: {line}");
            println!("{line}");
        } else {
            log::debug!("{line}");
        }
    }

    pub fn is_full(&self) -> bool {
        self.full.is_some()
    }
}

/// Runs one sync with already-connected clients.
pub fn run(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &SyncOptions,
    tc: &TcClient,
    tanium: &TaniumClient,
) -> Result<SyncReport> {
    let started = Instant::now();
    if let (true, Some(d)) = (opts.dry_run, &opts.out_dir) {
        std::fs::create_dir_all(d).map_err(|e| crate::error::Error::io(d, e))?;
    }
    let (source, mut index) = source::open_source(config, opts, tanium)?;
    let layout = Layout::of(config);
    let lists = Lists::read(config, tc);
    let full = window::full_reason(
        config,
        checkpoint,
        layout,
        (&index, source.created),
        (opts.now, lists.fingerprint()),
    );
    window::log_mode(checkpoint, full);
    let run = Run {
        config,
        checkpoint,
        opts,
        tc,
        tanium,
        source: &source,
        layout,
        full,
        lists: &lists,
    };
    let met = source::meet(&run, &mut index);
    let book = LabelBook::open(
        tanium,
        &config.labels,
        checkpoint.managed(&config.labels),
        config.disabled_label.as_deref(),
        checkpoint.labels_changed(&config.labels),
        opts.dry_run,
    );
    let done = match layout {
        Layout::PerIndicator => per_indicator::reconcile(&run, index, book)?,
        Layout::Grouped { size } => grouped::reconcile(&run, size, index, book)?,
    };
    Ok(report::report(&run, met, done, started))
}
