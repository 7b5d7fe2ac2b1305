//! Report Tanium Detections: the Threat Response alerts raised by the job's own documents
//! become observations on the ThreatConnect indicators they came from.
//!
//! Runs after the sync, inside the run lease (two runs never report the same alerts), and only
//! adds to the sync's outcome: a failure here holds the alert checkpoint and makes the run exit
//! 3, leaving the sync's own results as they are.
//!
//! One run: read the alerts stored since the checkpoint ([`mark`]); keep those on documents of
//! the job's source (one listing of the source); map each to the indicator it came from (a
//! single document through the TC id it names, a grouped one through the member the alert's
//! details name: the element id, else the matched value); confirm each indicator with TC by id
//! (its identity must be the document's); then one observation write per indicator, as many at
//! once as Parallel Tanium Writes allows. Alerts nobody can map are counted and logged, never
//! credited to a guess, and count as dealt with; alerts whose write failed stay open for the
//! next run.

pub mod mark;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;
use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::error::Error;
use crate::intel::group::{self, Member};
use crate::intel::identity::{self, Identity};
use crate::job::Outcome;
use crate::platform::{ExitStatus, MESSAGE_MAX_CHARS};
use crate::sync::Checkpoint;
use crate::tanium::{Alert, IntelDoc, TaniumClient};
use crate::tc::client::TcClient;
use crate::tc::observations::{Observed, WriteFailure, OBSERVATION_PERMISSION};
use crate::words::counted;

use mark::{AlertMark, AlertRead};

/// Refusals (403) in a row, none accepted, that stop the writes: the Api User lacks the option.
const REFUSALS_BEFORE_STOP: usize = 5;
/// Lines logged one by one for alerts that could not be mapped; the rest are counted.
const UNMAPPED_LINES: usize = 20;
/// Console links an indicator's log line shows.
const LINKS_SHOWN: usize = 3;
/// Writes sent again after one whose answer was lost and that the count shows did not count.
const TRIES_AFTER_A_LOST_ANSWER: u32 = 4;

/// What a detections pass needs.
pub struct Inputs<'a> {
    pub config: &'a JobConfig,
    pub checkpoint: &'a Checkpoint,
    pub tc: &'a TcClient,
    pub tanium: &'a TaniumClient,
    /// The job's source (None: it does not exist, so no alert is the job's).
    pub source_id: Option<i64>,
    pub dry_run: bool,
}

/// What a detections pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detections {
    /// New alerts read (stored since the checkpoint, not dealt with before).
    pub new: u64,
    /// Alerts reported as observations (in a dry run: that would be).
    pub reported: u64,
    /// Indicators those observations went to.
    pub indicators: u64,
    /// Alerts the checkpoint says were dealt with already (read again in the overlap).
    pub already: u64,
    /// Alerts on documents that are not in the job's source.
    pub other_sources: u64,
    /// Alerts on the job's documents that could not be mapped to an indicator.
    pub unmapped: u64,
    /// Alerts left for the next run (a read or a write failed).
    pub open: u64,
    /// What went wrong, each leading with `detections:`; the run exits 3 when there is any.
    pub trouble: Vec<String>,
    /// The checkpoint for results.tc (None: keep the last one).
    pub mark: Option<AlertMark>,
    pub dry_run: bool,
}

/// What a matched value and element of an alert's `details` say (only the values that could
/// be an address, a host name or a hash are kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub values: Vec<String>,
    pub elements: Vec<String>,
}

impl Details {
    /// Reads `details` (a JSON text): `match.properties` and `finding.whats[].intel_intra_ids`
    /// (strings, numbers, or objects such as `{"id_v2": "…"}`). None when it is not JSON.
    pub fn parse(text: &str) -> Option<Details> {
        let v: Value = serde_json::from_str(text).ok()?;
        let mut d = Details::default();
        if let Some(p) = v.pointer("/match/properties") {
            leaves(p, &mut d.values, 0);
        }
        for what in v
            .pointer("/finding/whats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for id in what
                .get("intel_intra_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match id {
                    Value::Object(o) => d.elements.extend(o.values().filter_map(scalar)),
                    other => d.elements.extend(scalar(other)),
                }
            }
        }
        Some(d)
    }
}

/// Why an alert whose indicator TC no longer has is not credited.
const DELETED_IN_TC: &str = "the indicator was deleted in ThreatConnect";

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The string leaves of a match's properties that could name an indicator: short, one word,
/// no path separators.
fn leaves(v: &Value, out: &mut Vec<String>, depth: u8) {
    const MAX_VALUES: usize = 64;
    if depth > 8 || out.len() >= MAX_VALUES {
        return;
    }
    match v {
        Value::String(s) => {
            let s = s.trim();
            let plausible = !s.is_empty()
                && s.len() <= 255
                && !s.contains(|c: char| c.is_whitespace() || c == '\\' || c == '/');
            if plausible && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
        Value::Array(a) => a.iter().for_each(|x| leaves(x, out, depth + 1)),
        Value::Object(o) => o.values().for_each(|x| leaves(x, out, depth + 1)),
        _ => {}
    }
}

/// A new alert, as much of it as mapping needs.
struct Fresh {
    id: i64,
    created: OffsetDateTime,
    doc: Option<i64>,
    guid: Option<String>,
    details: Option<Details>,
}

/// A document of the job's source an alert names, read as far as mapping needs.
enum DocView {
    Single {
        identity: Identity,
        tc_id: Option<i64>,
    },
    Group(GroupIndex),
    /// In the source, but not a document this job made.
    NotJobs,
    Unreadable(String),
    Gone,
    /// Reading it failed: its alerts wait for the next run.
    Failed(String),
}

/// A grouped document's members, found by the values and element ids an alert may name.
struct GroupIndex {
    members: Vec<Member>,
    by_value: HashMap<String, Vec<usize>>,
    by_element: HashMap<Identity, usize>,
}

impl GroupIndex {
    fn new(members: Vec<Member>) -> GroupIndex {
        let mut by_value: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_element = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            for v in m.match_values() {
                by_value.entry(v).or_default().push(i);
            }
            for e in m.element_identities() {
                by_element.insert(e, i);
            }
        }
        GroupIndex {
            members,
            by_value,
            by_element,
        }
    }

    /// The one member `d` names: by element id when one is ours, else by matched value.
    fn member(&self, d: &Details) -> Result<&Member, &'static str> {
        let one = |hits: HashSet<usize>| -> Option<Result<&Member, &'static str>> {
            match hits.len() {
                0 => None,
                1 => hits.into_iter().next().map(|i| Ok(&self.members[i])),
                _ => Some(Err(
                    "its details name more than one member of the grouped document",
                )),
            }
        };
        let by_element: HashSet<usize> = d
            .elements
            .iter()
            .filter_map(|e| group::element_identity(e))
            .filter_map(|e| self.by_element.get(&e).copied())
            .collect();
        if let Some(r) = one(by_element) {
            return r;
        }
        let by_value: HashSet<usize> = d
            .values
            .iter()
            .flat_map(|v| group::match_value_forms(v))
            .filter_map(|f| self.by_value.get(&f))
            .flatten()
            .copied()
            .collect();
        one(by_value).unwrap_or(Err(
            "its details name no member of the grouped document (removed since the alert?)",
        ))
    }
}

/// Where an alert's observation goes.
#[derive(Clone, Copy)]
struct Target {
    tc_id: i64,
    identity: Identity,
}

/// One indicator's observation write: the alerts it reports.
struct Credit {
    observed: Observed,
    alerts: Vec<usize>,
}

enum Written {
    Counted,
    Refused(Error),
    Gone,
    Unsure(Error),
    Failed(Error),
    NotTried,
}

/// Reads the alerts since the checkpoint and reports the job's as observations (or, in a dry
/// run, says which it would).
pub fn report(x: &Inputs) -> Detections {
    let mut out = Detections {
        dry_run: x.dry_run,
        ..Detections::default()
    };
    let start = match &x.checkpoint.alerts {
        Some(m) => m.resumed(x.checkpoint.last_modified),
        None => {
            log::info!(
                "detections: no alert checkpoint yet; reading the alerts Threat Response stored since Last Modified ({})",
                stamp(x.checkpoint.last_modified)
            );
            AlertMark::starting_at(x.checkpoint.last_modified)
        }
    };
    let mut reads: Vec<AlertRead> = Vec::new();
    let mut fresh: Vec<Fresh> = Vec::new();
    let read = x.tanium.alerts_since(start.from, &mut |a: Alert| {
        if start.seen.contains(a.id) {
            reads.push(AlertRead {
                id: a.id,
                created: a.created_at,
                settled: true,
            });
            return;
        }
        fresh.push(Fresh {
            id: a.id,
            created: a.created_at,
            doc: a.intel_doc_id,
            guid: a.guid,
            details: a.details.as_deref().and_then(Details::parse),
        });
    });
    out.already = reads.len() as u64;
    out.new = fresh.len() as u64;
    if let Err(e) = read {
        let why = match &e {
            Error::Forbidden { needed, .. } => {
                format!("detections: Tanium refused the alerts read: {needed}")
            }
            other => format!("detections: the Threat Response alerts could not be read: {other}"),
        };
        log::warn!("{why}");
        out.trouble.push(why);
        // Kept as it was, even on the first run: Last Modified moves on, the alerts must not.
        out.mark = (!x.dry_run).then(|| start.clone());
        return out;
    }
    // Settled per fresh alert: Some(true) dealt with, Some(false) open; None: not decided yet.
    let mut settled: Vec<Option<bool>> = vec![None; fresh.len()];
    let mut unmapped_lines = 0usize;
    let mut unmapped = |out: &mut Detections, f: &Fresh, why: &str| {
        out.unmapped += 1;
        unmapped_lines += 1;
        if unmapped_lines <= UNMAPPED_LINES {
            log::info!(
                "detections: alert {} on intel {} not reported: {why}",
                f.id,
                f.doc.map_or("(none)".to_string(), |d| d.to_string())
            );
        }
    };
    let docs = match our_docs(x, &fresh) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("detections: the intel source could not be listed: {e}");
            log::warn!("{why}");
            out.trouble.push(why);
            return finish(
                out,
                &start,
                reads,
                &fresh,
                &vec![Some(false); fresh.len()],
                x,
            );
        }
    };
    let (mapped, failures) = map_alerts(x, docs, &fresh);
    let mut targets: Vec<Option<Target>> = vec![None; fresh.len()];
    for (i, f) in fresh.iter().enumerate() {
        match mapped.get(&i) {
            None => {
                out.other_sources += 1;
                settled[i] = Some(true);
            }
            Some(Mapped::To(t)) => targets[i] = Some(*t),
            Some(Mapped::Not(why)) => {
                unmapped(&mut out, f, why);
                settled[i] = Some(true);
            }
            Some(Mapped::Open) => settled[i] = Some(false),
        }
    }
    if let Some(e) = failures.first() {
        out.trouble.push(format!(
            "detections: {} could not be read, first error: {e}",
            counted(failures.len() as u64, "alerted intel document")
        ));
    }
    // Confirm each indicator with ThreatConnect: it is still there, and it is the one the
    // document was made from.
    let ids: Vec<i64> = {
        let mut ids: Vec<i64> = targets.iter().flatten().map(|t| t.tc_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let observed: HashMap<i64, Observed> = if ids.is_empty() {
        HashMap::new()
    } else {
        match x.tc.observed_by_id(&ids) {
            Ok(list) => list.into_iter().map(|o| (o.id, o)).collect(),
            Err(e) => {
                let why = format!("detections: ThreatConnect could not be read: {e}");
                log::warn!("{why}");
                out.trouble.push(why);
                for (i, t) in targets.iter().enumerate() {
                    if t.is_some() {
                        settled[i] = Some(false);
                    }
                }
                return finish(out, &start, reads, &fresh, &settled, x);
            }
        }
    };
    let mut credits: BTreeMap<i64, Credit> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        let Some(t) = t else { continue };
        match observed.get(&t.tc_id) {
            Some(o) if o.identity() == Some(t.identity) => {
                credits
                    .entry(t.tc_id)
                    .or_insert_with(|| Credit {
                        observed: o.clone(),
                        alerts: Vec::new(),
                    })
                    .alerts
                    .push(i);
            }
            Some(_) => {
                unmapped(
                    &mut out,
                    &fresh[i],
                    &format!("ThreatConnect id {} is another indicator now", t.tc_id),
                );
                settled[i] = Some(true);
            }
            None => {
                unmapped(
                    &mut out,
                    &fresh[i],
                    &format!("ThreatConnect indicator {} is gone", t.tc_id),
                );
                settled[i] = Some(true);
            }
        }
    }
    let credits: Vec<Credit> = credits.into_values().collect();
    if x.dry_run {
        for c in &credits {
            out.reported += c.alerts.len() as u64;
            out.indicators += 1;
            log::info!(
                "detections: would report {} on {}",
                counted(c.alerts.len() as u64, "observation"),
                credit_line(x, c, &fresh)
            );
        }
        log_summary(&out, &start);
        return out;
    }
    let credited = |out: &mut Detections, c: &Credit, how: &str| {
        let n = c.alerts.len() as u64;
        out.reported += n;
        out.indicators += 1;
        log::info!(
            "detections: reported {} on {}{how}",
            counted(n, "observation"),
            credit_line(x, c, &fresh)
        );
    };
    let written = write(x, &credits);
    let mut refused: Vec<&Error> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut unsure: Vec<(usize, &Error)> = Vec::new();
    let any_counted = written.iter().any(|w| matches!(w, Written::Counted));
    for (k, (c, w)) in credits.iter().zip(&written).enumerate() {
        let n = c.alerts.len() as u64;
        let settle = match w {
            Written::Counted => {
                credited(&mut out, c, "");
                true
            }
            Written::Gone => {
                for &i in &c.alerts {
                    unmapped(&mut out, &fresh[i], DELETED_IN_TC);
                }
                true
            }
            // Refused while others were accepted: this indicator's owner refuses the Api User;
            // trying again would be refused again.
            Written::Refused(e) if any_counted => {
                log::warn!(
                    "detections: ThreatConnect refused {} on indicator {} ({}): {e}",
                    counted(n, "observation"),
                    c.observed.id,
                    c.observed.summary
                );
                out.unmapped += n;
                refused.push(e);
                true
            }
            Written::Refused(e) => {
                refused.push(e);
                false
            }
            Written::Unsure(e) => {
                unsure.push((k, e));
                false
            }
            Written::Failed(e) => {
                failed.push(e.to_string());
                false
            }
            Written::NotTried => false,
        };
        for &i in &c.alerts {
            settled[i] = Some(settle);
        }
    }
    // A write whose answer was lost: the count read again says whether it went through.
    let mut still = 0u64;
    for (k, e) in &unsure {
        let c = &credits[*k];
        let n = c.alerts.len() as u64;
        let settle = match settle_lost(x, c, e) {
            Lost::Counted(how) => {
                credited(&mut out, c, &format!(" ({how})"));
                true
            }
            Lost::Gone => {
                for &i in &c.alerts {
                    unmapped(&mut out, &fresh[i], DELETED_IN_TC);
                }
                true
            }
            Lost::Failed(why) => {
                log::warn!(
                    "detections: the observation write for indicator {} got no answer and did not count; sent again, it failed ({why}); the next run sends it again",
                    c.observed.id
                );
                failed.push(why);
                false
            }
            Lost::Unknown(why) => {
                still += 1;
                log::warn!(
                    "detections: the observation write for indicator {} got no answer and the count cannot tell whether it went through ({why}); the next run sends it again, which may count {} twice",
                    c.observed.id,
                    counted(n, "alert")
                );
                false
            }
        };
        for &i in &c.alerts {
            settled[i] = Some(settle);
        }
    }
    if still > 0 {
        out.trouble.push(format!(
            "detections: {} got no answer; the next run sends {} again (they may count twice)",
            counted(still, "observation write"),
            if still == 1 { "it" } else { "them" }
        ));
    }
    if !refused.is_empty() && !any_counted {
        out.trouble.insert(
            0,
            format!("detections: TC refused the observation write: {OBSERVATION_PERMISSION}"),
        );
        log::warn!(
            "detections: ThreatConnect refused the observation writes: {}",
            refused[0]
        );
    } else if !refused.is_empty() {
        out.trouble.push(format!(
            "detections: TC refused the observations on {} (see app.log)",
            counted(refused.len() as u64, "indicator")
        ));
    }
    if let Some(e) = failed.first() {
        out.trouble.push(format!(
            "detections: {} failed, first error: {e}",
            counted(failed.len() as u64, "observation write")
        ));
    }
    finish(out, &start, reads, &fresh, &settled, x)
}

/// The job's documents among those the fresh alerts name (one listing of the source).
fn our_docs(x: &Inputs, fresh: &[Fresh]) -> crate::error::Result<HashMap<i64, IntelDoc>> {
    let wanted: HashSet<i64> = fresh.iter().filter_map(|f| f.doc).collect();
    let mut docs = HashMap::new();
    if let (Some(source), false) = (x.source_id, wanted.is_empty()) {
        x.tanium.list_docs(source, &mut |d| {
            if wanted.contains(&d.id) {
                docs.insert(d.id, d);
            }
        })?;
    }
    Ok(docs)
}

/// What became of an alert on one of the job's documents.
enum Mapped {
    To(Target),
    Not(String),
    /// Its document could not be read: the next run tries again.
    Open,
}

/// Maps the alerts on the job's documents, document by document (a document is read only when
/// its listing row does not say enough, and let go once its alerts are mapped, so a run holds
/// at most one grouped document per worker); alerts on other documents are left out. Also the
/// errors of the documents that could not be read.
fn map_alerts(
    x: &Inputs,
    docs: HashMap<i64, IntelDoc>,
    fresh: &[Fresh],
) -> (HashMap<usize, Mapped>, Vec<String>) {
    let mut by_doc: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, f) in fresh.iter().enumerate() {
        if let Some(d) = f.doc.filter(|d| docs.contains_key(d)) {
            by_doc.entry(d).or_default().push(i);
        }
    }
    let rows: Vec<(IntelDoc, Vec<usize>)> = docs
        .into_values()
        .filter_map(|d| by_doc.remove(&d.id).map(|alerts| (d, alerts)))
        .collect();
    let stop = AtomicBool::new(false);
    let done = in_parallel(&rows, x.config.workers, &stop, |(row, alerts)| {
        let view = view_doc(x.tanium, row);
        let failed = match &view {
            DocView::Failed(e) => Some(e.clone()),
            _ => None,
        };
        let mapped: Vec<(usize, Mapped)> = alerts
            .iter()
            .map(|&i| (i, map_alert(&view, &fresh[i])))
            .collect();
        (mapped, failed)
    });
    let mut out = HashMap::new();
    let mut failures = Vec::new();
    for ((_, alerts), d) in rows.iter().zip(done) {
        match d {
            Some((mapped, failed)) => {
                out.extend(mapped);
                failures.extend(failed);
            }
            None => out.extend(alerts.iter().map(|&i| (i, Mapped::Open))),
        }
    }
    (out, failures)
}

fn map_alert(view: &DocView, f: &Fresh) -> Mapped {
    let not = |why: &str| Mapped::Not(why.to_string());
    match view {
        DocView::Single {
            identity,
            tc_id: Some(tc_id),
        } => Mapped::To(Target {
            tc_id: *tc_id,
            identity: *identity,
        }),
        DocView::Single { tc_id: None, .. } => not("the document names no ThreatConnect id"),
        DocView::Group(ix) => match &f.details {
            None => not("its details cannot be read"),
            Some(d) => match ix.member(d) {
                Ok(m) => match m.tc_id() {
                    Some(tc_id) => Mapped::To(Target {
                        tc_id,
                        identity: m.identity,
                    }),
                    None => not("the member names no ThreatConnect id"),
                },
                Err(why) => not(why),
            },
        },
        DocView::NotJobs => not("a document in the source that this job did not make"),
        DocView::Unreadable(why) => Mapped::Not(format!("the document cannot be read: {why}")),
        DocView::Gone => not("the document is gone"),
        DocView::Failed(_) => Mapped::Open,
    }
}

fn view_doc(tanium: &TaniumClient, row: &IntelDoc) -> DocView {
    let grouped = group::marker(&row.name).is_some();
    let identity = identity::identity_from_doc(
        row.intrinsic_id.as_deref(),
        &row.name,
        row.description.as_deref(),
    );
    let listed_id = row
        .description
        .as_deref()
        .and_then(crate::intel::indicator_id_in);
    match (grouped, identity, listed_id) {
        (false, None, _) => return DocView::NotJobs,
        (false, Some(identity), Some(tc_id)) => {
            return DocView::Single {
                identity,
                tc_id: Some(tc_id),
            }
        }
        _ => {}
    }
    let doc = match tanium.get_doc(row.id) {
        Ok(Some(d)) => d,
        Ok(None) => return DocView::Gone,
        Err(e) => return DocView::Failed(e.to_string()),
    };
    let contents = doc.contents.as_deref().unwrap_or_default();
    if grouped {
        return match group::read(contents) {
            Ok(g) => DocView::Group(GroupIndex::new(g.members)),
            Err(why) => DocView::Unreadable(why),
        };
    }
    let tc_id = doc
        .description
        .as_deref()
        .and_then(crate::intel::indicator_id_in)
        .or_else(|| crate::intel::indicator_id_in(contents));
    match identity {
        Some(identity) => DocView::Single { identity, tc_id },
        None => DocView::NotJobs,
    }
}

/// What became of a write whose answer was lost.
enum Lost {
    Counted(&'static str),
    Gone,
    /// Surely not counted, and sending it again failed.
    Failed(String),
    /// The count cannot tell.
    Unknown(String),
}

/// Reads the count again after a write whose answer was lost: grown by the write, it counted;
/// unchanged, it did not, and it is sent again (as often as a call is tried); anything else
/// cannot tell (someone else reported on the indicator meanwhile, or the read failed).
fn settle_lost(x: &Inputs, c: &Credit, first: &Error) -> Lost {
    let id = c.observed.id;
    let n = c.alerts.len() as i64;
    let mut why = first.to_string();
    for _ in 0..TRIES_AFTER_A_LOST_ANSWER {
        let after = match x.tc.observed_by_id(&[id]) {
            Ok(list) => match list.into_iter().find(|o| o.id == id) {
                Some(o) => o.observations,
                None => return Lost::Gone,
            },
            Err(e) => return Lost::Unknown(format!("{why}; reading the count again: {e}")),
        };
        match (c.observed.observations, after) {
            (Some(b), Some(a)) if a >= b + n => {
                return Lost::Counted("the answer was lost; the count read again shows it")
            }
            (Some(b), Some(a)) if a == b => {}
            _ => return Lost::Unknown(why),
        }
        match x.tc.add_observations(id, n as u64) {
            Ok(()) => {
                return Lost::Counted("sent again: the first write got no answer and did not count")
            }
            Err(WriteFailure::Gone) => return Lost::Gone,
            Err(WriteFailure::Unsure(e)) => why = e.to_string(),
            Err(WriteFailure::Forbidden(e) | WriteFailure::Failed(e)) => {
                return Lost::Failed(e.to_string())
            }
        }
    }
    Lost::Unknown(why)
}

/// One observation write per indicator, as many at once as the write pool allows; the writes
/// stop once ThreatConnect refused several and accepted none.
fn write(x: &Inputs, credits: &[Credit]) -> Vec<Written> {
    let stop = AtomicBool::new(false);
    let refusals = AtomicUsize::new(0);
    let accepted = AtomicBool::new(false);
    in_parallel(credits, x.config.workers, &stop, |c| {
        match x.tc.add_observations(c.observed.id, c.alerts.len() as u64) {
            Ok(()) => {
                accepted.store(true, Ordering::SeqCst);
                Written::Counted
            }
            Err(WriteFailure::Forbidden(e)) => {
                let n = refusals.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= REFUSALS_BEFORE_STOP && !accepted.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::SeqCst);
                }
                Written::Refused(e)
            }
            Err(WriteFailure::Gone) => Written::Gone,
            Err(WriteFailure::Unsure(e)) => Written::Unsure(e),
            Err(WriteFailure::Failed(e)) => Written::Failed(e),
        }
    })
    .into_iter()
    .map(|w| w.unwrap_or(Written::NotTried))
    .collect()
}

/// Runs `f` on every item with up to `workers` threads; an item is not started once `stop`
/// is set (its result is None).
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    stop: &AtomicBool,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let threads = workers.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// `ThreatConnect Host evil.example (TC id 12, <link>); Threat Response alerts: <links>`.
fn credit_line(x: &Inputs, c: &Credit, fresh: &[Fresh]) -> String {
    let o = &c.observed;
    let link = o
        .web_link
        .as_deref()
        .map(|l| format!(", {l}"))
        .unwrap_or_default();
    let console = x.tanium.console_url().trim_end_matches('/');
    let guids: Vec<&str> = c
        .alerts
        .iter()
        .filter_map(|&i| fresh[i].guid.as_deref())
        .collect();
    let mut links: Vec<String> = guids
        .iter()
        .take(LINKS_SHOWN)
        .map(|g| format!("{console}/ui/threatresponse/alerts?guid={g}"))
        .collect();
    if guids.len() > LINKS_SHOWN {
        links.push(format!("and {} more", guids.len() - LINKS_SHOWN));
    }
    format!(
        "ThreatConnect {} {} (TC id {}{link}); Threat Response alerts: {}",
        o.type_name,
        o.summary,
        o.id,
        links.join(", ")
    )
}

/// The next checkpoint, and the counts in the log.
fn finish(
    mut out: Detections,
    start: &AlertMark,
    mut reads: Vec<AlertRead>,
    fresh: &[Fresh],
    settled: &[Option<bool>],
    x: &Inputs,
) -> Detections {
    for (f, s) in fresh.iter().zip(settled) {
        let s = s.unwrap_or(false);
        if !s {
            out.open += 1;
        }
        reads.push(AlertRead {
            id: f.id,
            created: f.created,
            settled: s,
        });
    }
    if !x.dry_run {
        out.mark = Some(start.next(&reads));
    }
    log_summary(&out, start);
    out
}

fn log_summary(out: &Detections, start: &AlertMark) {
    let verb = if out.dry_run {
        "would be reported"
    } else {
        "reported"
    };
    log::info!(
        "detections: {} stored since {} read ({} already dealt with); {} {verb} to ThreatConnect as observations on {}; {} on documents of other sources; {} on the job's documents could not be mapped; {} left for the next run",
        counted(out.new + out.already, "alert"),
        stamp(start.from),
        out.already,
        out.reported,
        counted(out.indicators, "indicator"),
        out.other_sources,
        out.unmapped,
        out.open
    );
}

fn stamp(t: OffsetDateTime) -> String {
    crate::tanium::lease::stamp(t)
}

impl Detections {
    /// The message's words for what was reported, and the same in fewer (None: nothing).
    pub fn summary(&self) -> Option<(String, String)> {
        if self.reported == 0 {
            return None;
        }
        let (n, on) = (
            counted(self.reported, "detection"),
            counted(self.indicators, "indicator"),
        );
        Some(if self.dry_run {
            (
                format!("would report {n} to ThreatConnect ({on})"),
                format!("would report {n}"),
            )
        } else {
            (
                format!("{n} reported to ThreatConnect ({on})"),
                format!("{n} reported"),
            )
        })
    }

    /// Adds this pass to the run's outcome: trouble leads the message and makes a clean run
    /// exit 3; what was reported follows the sync's counters; the checkpoint goes to results
    /// when the sync's results do.
    pub fn apply(&self, o: &mut Outcome, checkpoint: &Checkpoint) {
        if !self.trouble.is_empty() && o.status == ExitStatus::Success {
            o.status = ExitStatus::Partial;
        }
        let summary = self.summary();
        let words = summary.as_ref().map(|(l, s)| (l.as_str(), s.as_str()));
        o.message = compose(&self.trouble, &o.message, words);
        if !self.dry_run && o.status != ExitStatus::Failure {
            o.results
                .extend(checkpoint.alert_results(true, self.mark.as_ref()));
        }
    }
}

/// `<trouble>; <sync message>; <reported>`. The sync's message was fitted to the platform's
/// 255 characters: what was reported follows it only when it fits (else in fewer words, else
/// only in app.log), and trouble leads it even when the end of the whole is then cut.
fn compose(trouble: &[String], sync: &str, reported: Option<(&str, &str)>) -> String {
    let head = trouble.join("; ");
    let lead = if head.is_empty() {
        String::new()
    } else {
        format!("{head}; ")
    };
    let fits = |s: &String| s.chars().count() <= MESSAGE_MAX_CHARS;
    if let Some((long, short)) = reported {
        for tail in [long, short] {
            let whole = format!("{lead}{sync}; {tail}");
            if fits(&whole) {
                return whole;
            }
        }
    }
    format!("{lead}{sync}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_give_the_matched_values_and_element_ids_in_every_recorded_shape() {
        let text = serde_json::json!({
            "match": {"properties": {
                "remote_ip": "203.0.113.7",
                "fullpath": "C:\\Program Files\\x.exe",
                "file": {"hash": {"md5": "D193EA4B8D102D020C02DC45AF23FF0D"}},
                "args": "a b c",
                "port": 443
            }},
            "finding": {"whats": [
                {"intel_intra_ids": [{"id_v2": "901388892329936882"}, {"id": 850394582}]},
                {"intel_intra_ids": ["tctr:indicator-x", 7]}
            ]}
        })
        .to_string();
        let d = Details::parse(&text).unwrap();
        let mut values = d.values.clone();
        values.sort();
        assert_eq!(
            values,
            vec!["203.0.113.7", "D193EA4B8D102D020C02DC45AF23FF0D"]
        );
        assert_eq!(
            d.elements,
            vec!["901388892329936882", "850394582", "tctr:indicator-x", "7"]
        );
        assert_eq!(Details::parse("not json"), None);
        assert_eq!(Details::parse("{}"), Some(Details::default()));
    }

    #[test]
    fn the_message_keeps_trouble_first_and_says_what_was_reported_when_it_fits() {
        let trouble = vec!["detections: TC refused the observation write: x".to_string()];
        let words = Some((
            "5 detections reported to ThreatConnect (3 indicators)",
            "5 detections reported",
        ));
        assert_eq!(
            compose(&trouble, "Synced: a", words),
            "detections: TC refused the observation write: x; Synced: a; 5 detections reported to ThreatConnect (3 indicators)"
        );
        assert_eq!(compose(&[], "Synced: a", None), "Synced: a");
        // The sync's counters are never cut for it: fewer words, else none.
        let sync = "y".repeat(220);
        assert_eq!(
            compose(&[], &sync, words),
            format!("{sync}; 5 detections reported")
        );
        let sync = "y".repeat(240);
        assert_eq!(compose(&[], &sync, words), sync);
        // Trouble leads, whatever platform::one_line then cuts at the end.
        let m = compose(&trouble, &sync, words);
        assert!(
            m.starts_with("detections: TC refused") && m.ends_with(&sync),
            "{m}"
        );
    }

    #[test]
    fn a_summary_counts_detections_and_indicators_or_says_nothing() {
        let mut d = Detections {
            reported: 5,
            indicators: 3,
            ..Detections::default()
        };
        let long = |d: &Detections| d.summary().map(|(l, _)| l);
        assert_eq!(
            long(&d).as_deref(),
            Some("5 detections reported to ThreatConnect (3 indicators)")
        );
        d.dry_run = true;
        assert_eq!(
            long(&d).as_deref(),
            Some("would report 5 detections to ThreatConnect (3 indicators)")
        );
        d.reported = 0;
        assert_eq!(d.summary(), None);
    }
}
