//! The app's source as a run finds it: found or made (never one of Threat Response's own when
//! taking it over), listed, and what it holds besides the job's current documents.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::intel;
use crate::tanium::client::TaniumClient;
use crate::tc::model::IndicatorType;
use crate::words::counted;

use super::health;
use super::index::SourceIndex;
use super::{Layout, Run, SyncOptions};

/// The app's source, as this run found it.
pub(super) struct Source {
    pub name: String,
    pub id: Option<i64>,
    pub created: bool,
}

/// Refuses, before anything is written, to take over one of Threat Response's own sources.
pub fn refuse_built_in_source(config: &JobConfig, tanium: &TaniumClient) -> Result<()> {
    if !config.take_over_source {
        return Ok(());
    }
    let found = tanium
        .find_source(&config.tanium.source_name)?
        .map(|s| s.id);
    built_in_refusal(config, found).map_or(Ok(()), Err)
}

fn built_in_refusal(config: &JobConfig, found: Option<i64>) -> Option<Error> {
    let name = &config.tanium.source_name;
    let what =
        crate::tanium::model::built_in_source(found, name).filter(|_| config.take_over_source)?;
    Some(Error::Param(format!(
        "{} must be off for {} \"{name}\": it is {what} (id {}), whose documents are not the job's to replace; nothing was changed: give the job a source of its own",
        crate::param_names::TAKE_OVER_SOURCE.label,
        crate::param_names::TANIUM_SOURCE.label,
        found.map_or("?".to_string(), |id| id.to_string()),
    )))
}

/// Finds the source (a dry run never creates it) and lists what it holds.
pub(super) fn open_source(
    config: &JobConfig,
    opts: &SyncOptions,
    tanium: &TaniumClient,
) -> Result<(Source, SourceIndex)> {
    let name = config.tanium.source_name.clone();
    let found = tanium.find_source(&name)?.map(|s| s.id);
    if let Some(e) = built_in_refusal(config, found) {
        return Err(e);
    }
    let (id, created) = match found {
        Some(id) => (Some(id), false),
        None if opts.dry_run => (None, false),
        // (the client logs the creation once, and only when it did create it)
        None => (Some(tanium.find_or_create_source(&name)?.id), true),
    };
    let mut index = SourceIndex::default();
    if let Some(id) = id {
        // Listing pages do not depend on each other: they use the write pool's width.
        tanium.list_docs_parallel(id, config.workers, &mut |doc| {
            index.add(doc, config.intel_format)
        })?;
    }
    log::info!(
        "Tanium source \"{name}\" holds {} ({} identified, {}, {} unidentified)",
        counted(index.docs, "document"),
        index.map.len(),
        counted(index.duplicates.len() as u64, "duplicate"),
        index.unidentified.len()
    );
    Ok((Source { name, id, created }, index))
}

/// Taking the source over: reads each document this job did not make, and keeps those that
/// cover exactly one indicator (and no other document covers the same) for adoption.
fn scan_foreign(tanium: &TaniumClient, index: &mut SourceIndex) {
    let mut found: BTreeMap<(IndicatorType, String), Option<(i64, String)>> = BTreeMap::new();
    let mut unread = BTreeSet::new();
    for (doc_id, name, root) in &index.unidentified {
        let covered = match tanium.get_doc(*doc_id) {
            Ok(d) => d
                .and_then(|d| d.contents)
                .and_then(|c| intel::foreign::covered(&c)),
            Err(e) => {
                log::warn!("could not read document {doc_id} \"{name}\", which this job did not make: it stays until a run can read it ({e})");
                unread.insert(*doc_id);
                None
            }
        };
        if let (Some(key), false) = (covered, root.is_empty()) {
            found
                .entry(key)
                .and_modify(|v| *v = None)
                .or_insert_with(|| Some((*doc_id, root.clone())));
        }
    }
    index.unread = unread;
    index.adoptable = found
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    log::info!(
        "taking the source over: {} this job did not make; {} cover exactly one indicator each and are kept for it if the job sends it, the rest go",
        counted(index.unidentified.len() as u64, "document"),
        index.adoptable.len()
    );
}

/// What the run met in the source besides its own current documents.
pub(super) struct Met {
    /// Documents this job did not make.
    pub foreign: u64,
    pub disabled: health::DisabledCount,
    /// What Disabled Intel Label asks of the run (None: off).
    pub disabled_label: Option<health::LabelWork>,
}

/// Documents in the source this job did not make: left alone unless the job takes the source
/// over, when a full reconcile reads them for what they cover. Their count.
fn meet_foreign(
    config: &JobConfig,
    tanium: &TaniumClient,
    index: &mut SourceIndex,
    full: bool,
) -> u64 {
    let foreign = index.unidentified.len() as u64;
    if foreign > 0 && !config.take_over_source {
        log::info!(
            "the source holds {} this job did not make: they are left alone (Take Over Source is off)",
            counted(foreign, "document")
        );
    } else if foreign > 0 && full {
        scan_foreign(tanium, index);
    }
    foreign
}

/// What the run meets in the source besides its own current documents: documents this job did
/// not make (read for adoption in a per-indicator full reconcile that takes the source over),
/// documents Threat Response disabled, and what Disabled Intel Label asks.
pub(super) fn meet(run: &Run, index: &mut SourceIndex) -> Met {
    let scan = run.full.is_some() && run.layout == Layout::PerIndicator;
    Met {
        foreign: meet_foreign(run.config, run.tanium, index, scan),
        disabled: health::report(run.tanium, index),
        disabled_label: health::plan_label(run.tanium, run.config.disabled_label.as_deref(), index),
    }
}
