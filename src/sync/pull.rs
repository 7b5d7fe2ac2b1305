//! The pull, the same in both layouts: the matching query over the run's window (after the
//! rank pass Maximum Indicators needs in a full reconcile), page by page in id order; the
//! count of other types user TQL selects; and an incremental run's removal evidence, each on
//! positive evidence only (a TC deletion record, an indicator TC returned that no longer
//! qualifies, one whose expiry fell since the last run).

use std::time::Instant;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::intel;
use crate::tc::model::{Indicator, IndicatorType};
use crate::tc::tql;
use crate::words::counted;

use super::cause::Cause;
use super::report::{Counts, PullEnd};
use super::select::{log_blocked_rest, rank, select, Rank, Selection, Verdict};
use super::window::{matching_query, pull_window};
use super::{Run, Stop};

/// What a run pulls: the query, its window and the floor under it, and the selection.
pub(super) struct Query<'a> {
    pub tql: String,
    pub window: tql::Window,
    /// The horizon narrowed by Maximum Indicator Age.
    pub floor: Option<OffsetDateTime>,
    pub sel: Selection<'a>,
}

impl<'a> Query<'a> {
    /// The run's query (logged); in a full reconcile under Maximum Indicators, after the rank
    /// pass that says which indicators fit.
    pub fn start(run: &Run<'a>) -> Result<Query<'a>> {
        let config = run.config;
        let (window, floor) = pull_window(config, run.checkpoint, run.opts.now, run.is_full());
        let tql = matching_query(config, &window, run.is_full());
        let mut sel = Selection {
            filters: &config.filters,
            format: config.intel_format,
            guard: &config.rails.guard,
            exclusions: run.lists.exclusions(),
            expired_by: config.rails.honor_expiry.then_some(run.opts.now),
            cutoff: None,
        };
        if let (true, Some(cap)) = (run.is_full(), config.rails.max_indicators) {
            sel.cutoff = rank_cutoff(run, &tql, &sel, cap)?;
        }
        Ok(Query {
            tql,
            window,
            floor,
            sel,
        })
    }
}

/// Pulls the query page by page, `each` planning a page of `state` (it answers the first
/// indicator it could not hand over, when the writes stopped). An error before the first page
/// is the run's error (bad TQL, credentials, TC down); a later one ends the pull incomplete.
/// How it ended, and the first indicator not handed over.
pub(super) fn pages<S: AsMut<Counts>>(
    run: &Run,
    q: &Query,
    state: &mut S,
    mut each: impl FnMut(&mut S, Vec<Indicator>) -> Result<Option<Indicator>>,
) -> Result<(PullEnd, Option<Indicator>)> {
    let started = Instant::now();
    let mut seen = 0u64;
    let mut pages = run.tc.indicators(&q.tql);
    let mut end = PullEnd {
        complete: true,
        stop: None,
    };
    let mut undelivered = None;
    while let Some(page) = pages.next() {
        let page = match page {
            Ok(p) => p,
            Err(e) if pages.pages() == 0 => return Err(e),
            Err(e) => {
                log::error!("ThreatConnect pull stopped: {e}");
                end = PullEnd {
                    complete: false,
                    stop: Some(Stop::Pull(stop_reason(&e))),
                };
                break;
            }
        };
        seen += page.len() as u64;
        undelivered = each(state, page)?;
        if undelivered.is_some() {
            end = PullEnd {
                complete: false,
                stop: Some(Stop::TaniumDown),
            };
            break;
        }
        let c = state.as_mut();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        log::info!(
            "page {}: {} so far ({:.0}/s); {} matched, {} unchanged, {} skipped",
            pages.pages(),
            counted(seen, "indicator"),
            seen as f64 / secs,
            c.matched,
            c.unchanged,
            c.skipped_invalid
        );
    }
    let counts = state.as_mut();
    counts.dropped_other_types += pages.dropped();
    log_blocked_rest(counts);
    count_other_types(run, &q.window, counts);
    Ok((end, undelivered))
}

/// A full reconcile under Maximum Indicators reads the match set once more first, to know the
/// rank of the last indicator that fits (None: all of them fit).
fn rank_cutoff(run: &Run, tql: &str, sel: &Selection, cap: u64) -> Result<Option<Rank>> {
    log::info!("ranking pass for Maximum Indicators: {tql}");
    let mut ranks: Vec<Rank> = Vec::new();
    for page in run.tc.indicators(tql) {
        for ind in page? {
            if let Verdict::Sent(_) = select(&ind, sel, |i| intel::render(i, sel.format)) {
                ranks.push(rank(&ind));
            }
        }
    }
    ranks.sort_unstable();
    ranks.dedup_by_key(|r| r.3);
    log::info!(
        "Maximum Indicators {cap}: {} qualify{}",
        counted(ranks.len() as u64, "indicator"),
        if ranks.len() as u64 > cap {
            ", the best ranked are kept"
        } else {
            ""
        }
    );
    Ok(usize::try_from(cap)
        .ok()
        .and_then(|c| ranks.get(c.saturating_sub(1)).copied())
        .filter(|_| ranks.len() as u64 > cap))
}

/// Counts the indicators user TQL selects that are of no type the job can send: the job's
/// query leaves them out, so TC says how many there were.
fn count_other_types(run: &Run, window: &tql::Window, counts: &mut Counts) {
    if let Some(q) = tql::other_types(&run.config.filters, window) {
        log::info!("count of the other types the TQL selects: {q}");
        match run.tc.count(&q) {
            Ok(n) => counts.dropped_other_types += n,
            Err(e) => log::warn!("could not count the indicators of other types: {e}"),
        }
    }
    if counts.dropped_other_types > 0 {
        log::info!(
            "{} not sent (type not Address/File/Host)",
            counts.dropped_other_types
        );
    }
}

/// An incremental run's evidence of indicators that no longer qualify: deleted in TC (asked
/// per owner: the endpoint covers only the API user's Organization unless told), or modified
/// since the last run (deactivated included) so that the matching query no longer returns
/// them. `found` is told each identity, what it is and why. Every owner is asked even after
/// one fails; why the evidence is incomplete, when it is (logged).
pub(super) fn removal_evidence(
    run: &Run,
    q: &Query,
    mut found: impl FnMut(u128, String, Cause),
) -> Option<String> {
    let since = run.checkpoint.last_modified;
    let window = tql::Window {
        after: Some(since),
        horizon: q.floor,
        until: Some(run.opts.now),
    };
    let deleted = deleted(run, since, &mut found);
    let tql = tql::removal_check(&run.config.filters, &window);
    log::info!("removal check (modified since the last run, active or not): {tql}");
    let checked = run.tc.indicators(&tql).try_for_each(|page| {
        for ind in page? {
            let Some(kind) = ind.kind() else { continue };
            let Ok(key) = intel::identity_of(&ind.owner_name, kind, &ind.summary) else {
                continue;
            };
            let cause = match run.config.filters.rejection(&ind) {
                Some(r) => Cause::Rejected(r),
                // Without user TQL those filters are the whole selection: one it passes is
                // still selected, modified after the pull met its page (in the second the run
                // started, or by a TC clock behind ours); the next run, which starts before
                // this one's start, pulls it.
                None if tql::user_tql(&run.config.filters).is_none() => continue,
                None => Cause::NoLongerSelected,
            };
            found(key.as_u128(), describe(&ind), cause);
        }
        Ok::<(), Error>(())
    });
    let expired = expired(run, since, &mut found);
    let asked = checked.and(deleted).and(expired);
    asked.err().map(|e| {
        let msg = format!("could not check for removals: {e}");
        log::error!("{msg}");
        msg
    })
}

/// Indicators whose expiry fell since the last run (Honor Expiry): TC did not modify them, so
/// the incremental pull never meets them. One query, bounded by the time since the last run.
fn expired(
    run: &Run,
    since: OffsetDateTime,
    found: &mut impl FnMut(u128, String, Cause),
) -> Result<()> {
    if !run.config.rails.honor_expiry {
        return Ok(());
    }
    let tql = tql::expired_between(&run.config.filters, since, run.opts.now);
    log::info!("expired since the last run: {tql}");
    for page in run.tc.indicators(&tql) {
        for ind in page? {
            let (Some(kind), Some(at)) = (ind.kind(), ind.expires_at()) else {
                continue;
            };
            if let Ok(key) = intel::identity_of(&ind.owner_name, kind, &ind.summary) {
                found(key.as_u128(), describe(&ind), Cause::Expired(at));
            }
        }
    }
    Ok(())
}

/// The deletion records since `since`, owner by owner; the first failure once all were asked.
fn deleted(
    run: &Run,
    since: OffsetDateTime,
    found: &mut impl FnMut(u128, String, Cause),
) -> Result<()> {
    let (tc, filters) = (run.tc, &run.config.filters);
    let owners: Vec<String> = if tql::user_tql(filters).is_none() && !filters.owners.is_empty() {
        filters.owners.clone()
    } else {
        tc.owners()?.into_iter().map(|o| o.name).collect()
    };
    log::info!(
        "deleted indicators since {}: asking each of {}",
        tql::format_time(since),
        counted(owners.len() as u64, "owner")
    );
    let mut first_error = None;
    for owner in &owners {
        let asked = tc.deleted_since(since, Some(owner), &mut |d| {
            let Some(kind) = IndicatorType::parse(&d.type_name) else {
                return;
            };
            if let Ok(key) = intel::identity_of(&d.owner_name, kind, &d.summary) {
                let what = format!("{} {} ({})", d.type_name, d.summary, d.owner_name);
                found(key.as_u128(), what, Cause::DeletedInTc);
            }
        });
        if let Err(e) = asked {
            log::error!("could not read the indicators deleted in {owner}: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// message.tc is short: an unreadable answer is said by what was wrong, not by the request.
fn stop_reason(e: &Error) -> String {
    match e {
        Error::Protocol { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}

pub(super) fn describe(ind: &Indicator) -> String {
    format!("{} {} ({})", ind.type_name, ind.summary, ind.owner_name)
}
