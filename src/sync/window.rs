//! What a run pulls: full or incremental (and why), the query window under the horizon, and
//! the job as the log describes it.

use std::collections::HashSet;
use std::fmt;

use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::intel::group::BucketKey;
use crate::intel::Format;
use crate::tc::tql;

use super::checkpoint::{Checkpoint, Due};
use super::grouped::layout::Layout as Buckets;
use super::index::SourceIndex;
use super::Layout;

/// Why a run compares the whole match set with the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    EmptySource,
    /// Take Over Source is on and the source holds documents this job did not make.
    TakeOver,
    ToGroups,
    ToSingles,
    FormatChanged,
    /// Two documents claim one bucket, or one lies inside another's.
    BucketOverlap,
    /// The checkpoint says so.
    Due(Due),
    LabelsChanged,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Full::EmptySource => "the source is empty",
            Full::TakeOver => {
                "Take Over Source is on and the source holds documents this job did not make"
            }
            Full::ToGroups => {
                "Indicators per Intel Document changed: single documents become groups"
            }
            Full::ToSingles => {
                "Indicators per Intel Document changed: grouped documents become single ones"
            }
            Full::FormatChanged => "the intel format changed",
            Full::BucketOverlap => {
                "a bucket is in two documents (a split or merge stopped half-way)"
            }
            Full::Due(d) => return d.fmt(f),
            Full::LabelsChanged => "the label params changed",
        })
    }
}

/// Why this run compares the whole match set with the source (None: incremental).
pub(super) fn full_reason(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    layout: Layout,
    (index, created): (&SourceIndex, bool),
    (now, lists): (OffsetDateTime, Option<u64>),
) -> Option<Full> {
    if (index.map.is_empty() && index.groups.is_empty()) || created {
        return Some(Full::EmptySource);
    }
    // Only a full reconcile can tell which of them cover an indicator the job sends, and the
    // admin who turns the setting on expects it to act now, not at the next interval.
    if config.take_over_source && !index.unidentified.is_empty() {
        return Some(Full::TakeOver);
    }
    let switch = match layout {
        Layout::Grouped { .. } => grouped_reason(index, config.intel_format),
        Layout::PerIndicator if !index.groups.is_empty() => Some(Full::ToSingles),
        Layout::PerIndicator => None,
    };
    if switch.is_some() {
        return switch;
    }
    let due = checkpoint.due(
        now,
        config.reconcile_interval,
        &config.selection_fingerprint(),
    );
    // A changed Intel Format must reach every document, not only the ones TC modified since.
    let reason = match due {
        Some(Due::FiltersChanged) => Some(Full::Due(Due::FiltersChanged)),
        // What the lists exclude may be in the source, unmodified: only a full pull finds it.
        _ if checkpoint.exclusions_changed(lists) => Some(Full::Due(Due::ExclusionListsChanged)),
        _ if index.other_format > 0 => Some(Full::FormatChanged),
        d => d.map(Full::Due),
    };
    // Only a full pull says every indicator's tags and score, so a change of the label rules
    // costs one; the content is compared as always (no document is uploaded again for it).
    reason.or_else(|| label_pass(checkpoint, config))
}

/// Why the run must compare everything, from what the listing shows of a grouped source
/// (None: nothing of the kind).
fn grouped_reason(index: &SourceIndex, format: Format) -> Option<Full> {
    if !index.map.is_empty() || !index.duplicates.is_empty() {
        return Some(Full::ToGroups);
    }
    if index
        .groups
        .iter()
        .any(|g| g.format.is_some_and(|f| f != format))
    {
        return Some(Full::FormatChanged);
    }
    let keys: Vec<BucketKey> = index.groups.iter().map(|g| g.key).collect();
    let distinct: HashSet<&BucketKey> = keys.iter().collect();
    if distinct.len() != keys.len() || Buckets::from_keys(&keys).overlaps() {
        return Some(Full::BucketOverlap);
    }
    None
}

fn label_pass(checkpoint: &Checkpoint, config: &JobConfig) -> Option<Full> {
    checkpoint
        .labels_changed(&config.labels)
        .then_some(Full::LabelsChanged)
}

/// What the run pulls (the floor under it: the horizon narrowed by the age window).
pub(super) fn pull_window(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    now: OffsetDateTime,
    full: bool,
) -> (tql::Window, Option<OffsetDateTime>) {
    // The age window narrows the horizon: neither is ever pulled from behind.
    let age_floor = config
        .rails
        .max_indicator_age_days
        .map(|d| now - time::Duration::days(i64::from(d)));
    let floor = match (checkpoint.horizon, age_floor) {
        (Some(h), Some(a)) => Some(h.max(a)),
        (h, a) => h.or(a),
    };
    let window = tql::Window {
        after: (!full).then_some(checkpoint.last_modified),
        horizon: floor,
        until: None,
    };
    (window, floor)
}

/// The matching query a run sends, and the window it was built for.
#[derive(Debug, Clone)]
pub struct NextPull {
    pub tql: String,
    pub window: tql::Window,
    /// Why the run reconciles fully (None: incremental).
    pub full: Option<Full>,
}

/// For `check`: the matching query the next run sends, built as a run builds it. Full when
/// the source is missing or empty or the checkpoint says so; a change of layout or format,
/// which only the source's listing reveals, is not looked for (it would only drop the
/// incremental bound, never the horizon).
pub fn next_pull(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    source_empty: bool,
    now: OffsetDateTime,
) -> NextPull {
    let full = if source_empty {
        Some(Full::EmptySource)
    } else {
        checkpoint
            .due(
                now,
                config.reconcile_interval,
                &config.selection_fingerprint(),
            )
            .map(Full::Due)
            .or_else(|| label_pass(checkpoint, config))
    };
    let (window, _) = pull_window(config, checkpoint, now, full.is_some());
    NextPull {
        tql: tql::build(&config.filters, &window),
        window,
        full,
    }
}

/// The matching query of a run, logged with the job it applies.
pub(super) fn matching_query(config: &JobConfig, window: &tql::Window, full: bool) -> String {
    let tql = tql::build(&config.filters, window);
    log::info!("{}", describe_job(config));
    let grouped = match Layout::of(config) {
        Layout::Grouped { size } => format!("; grouped, {size} indicators per document"),
        Layout::PerIndicator => String::new(),
    };
    log::info!(
        "matching query ({}): {tql}{grouped}",
        if full {
            "every indicator the job selects"
        } else {
            "indicators modified since the last run"
        }
    );
    tql
}

/// The job as this run applies it, in one line of the words the admin set it with.
fn describe_job(config: &JobConfig) -> String {
    let f = &config.filters;
    let list = |v: &[String], none: &str| {
        if v.is_empty() {
            none.to_string()
        } else {
            v.join(", ")
        }
    };
    let selection = match tql::user_tql(f) {
        Some(t) => format!("TQL {t} (replaces every other filter)"),
        None => {
            let types: Vec<&str> = f.types.iter().map(|t| t.as_str()).collect();
            let min = |v: Option<u32>| v.map_or("none".to_string(), |n| n.to_string());
            format!(
                "Indicator Types {}; Owners {}; Include Tags {}; Exclude Tags {}; Minimum ThreatAssess Score {}, Confidence {}, Rating {}; Maximum False Positives {}",
                types.join(", "),
                list(&f.owners, "all the Api User can read"),
                list(&f.include_tags, "none"),
                list(&f.exclude_tags, "none"),
                min(f.min_threatassess_score),
                min(f.min_confidence),
                min(f.min_rating),
                min(f.max_false_positives)
            )
        }
    };
    let r = &config.rails;
    let on = |b: bool| if b { "on" } else { "off" };
    format!(
        "job: {selection}; Intel Format {}; Block Unsafe Indicators {}; Never Send {}; Maximum Indicators {}; Maximum Indicator Age {}; Honor Exclusion Lists {}; Honor Expiry {}",
        config.intel_format,
        on(r.guard.safeguards),
        list(&r.guard.never_send.canonical(), "none"),
        r.max_indicators.map_or("none".to_string(), |n| n.to_string()),
        r.max_indicator_age_days
            .map_or("none".to_string(), |d| format!("{d} days")),
        on(r.honor_exclusion_lists),
        on(r.honor_expiry)
    )
}

pub(super) fn log_mode(checkpoint: &Checkpoint, full: Option<Full>) {
    match checkpoint.horizon {
        Some(h) => log::info!(
            "job horizon: indicators last modified before {} are never sent",
            tql::format_time(h)
        ),
        None => log::info!("job horizon: none (the job ran before it kept one)"),
    }
    match full {
        Some(reason) => log::info!("full reconcile: {reason}"),
        None => log::info!(
            "incremental run: indicators modified after {}",
            tql::format_time(checkpoint.last_modified)
        ),
    }
}
