//! Chaos: many consecutive runs of the real binary against both simulators. Between runs
//! ThreatConnect changes (create, modify, retag incl. excluded tags, rescore below minimums,
//! deactivate, reactivate, delete, new owners, now and then most of the source deactivated at
//! once) and an admin edits the job (filters or TQL, Never Send, Maximum Indicators, Maximum
//! Indicator Age, the label params, Take Over Source, Deploy Intel, the format; after a run the
//! removal guard held back, sometimes Maximum Removal Percent raised for a run); during runs
//! faults fire at random points (5xx / 429 bursts, dropped connections mid-page and mid-upload,
//! truncated bodies, answers slower than the timeout, non-JSON 200s, Tanium session expiry,
//! writes whose response is lost, a Tanium outage, the process killed mid-run), and now and then
//! two runs start at once.
//!
//! Where recorded real servers leave a choice open, each seed draws one (round 2 included: the
//! label listing capped at 100 with the job's label past it, `noLimit` honoured or not,
//! `meta.totalCount` or not, deploys running 0 to 1500 ms and refusing a second one with 400
//! or not, a progress field in the intel status or not, health fields in listing rows or not);
//! between runs Threat Response disables documents (everywhere or on some endpoints), enables
//! them again, an admin starts a deploy in the console or takes the job's label off a document
//! by hand, and another integration's documents may sit in the job's source. ThreatConnect keeps
//! Indicator Exclusion Lists (System and owner lists, values and patterns drawn from what it
//! holds, edited and deactivated between runs, now and then unreadable for a run) and expiry
//! dates (past, far ahead, and some falling between two runs); the job honours either or not.
//!
//! The oracle is the test's own: what the job must send is computed here from the TC
//! simulator's data with plain closures (filters, TQL, Never Send, the unsafe values, the age
//! window, the exclusion lists, the expiry dates, the cap's ranking, the label rules), and what Tanium holds is read out of each
//! document's XML with the test's own parser (value, owner, TC id, scores, tags, last modified,
//! description), never with the app's renderer or readers.
//!
//! After every run: exit code and message.tc agree with what happened, no secret was written
//! anywhere, Last Modified never moved past an undelivered change, documents outside the app's
//! source are untouched byte for byte (and another integration's documents in it, unless the
//! job takes the source over), no label is made twice, message.tc of a clean run counts exactly
//! the documents TR disabled, a run that changed the source deployed or says the deploy is owed
//! (and with Deploy Intel off never deployed). After every run that completed its writes (exit
//! 0, or exit 3 for a held-back removal, a failed deploy or an incomplete removal check) every
//! indicator the job must send has a current document carrying exactly the labels it earns, and
//! a held-back run leaves exactly the N surplus documents it says it held back. After every
//! exit-0 run no indicator has two documents unless a write whose answer was lost explains it,
//! and the next run that completes removes the duplicate and counts it. Taken over, a source
//! keeps another integration's document that covers exactly one indicator the job sends, in
//! place, as that indicator's only document, and loses the rest. After a final fault-free run
//! the source holds exactly the expected set; a second fault-free run writes nothing.
//!
//! With Report Tanium Detections on (a stream of its own draws it, and switches it now and
//! then), endpoints raise alerts between runs and faults hit the alerts read and the
//! observation writes; TC never counts more observations of an indicator than the alerts
//! naming it plus the documented window (README, *Exactly once, and what is left*), and after
//! the final runs every alert raised while reporting was on, on a document still there as it
//! was, is counted (see [`Detections`]).
//!
//! `chaos_grouped` runs the same with indicators grouped (Indicators per Intel Document 3 to
//! 500, so buckets split and merge): each member of a grouped document is read as one
//! indicator, and the same checks hold indicator by indicator (`CHAOS_GROUPED_SEEDS`, default 6).
//!
//! `cargo test` runs seeds 1 to 12 (grouped 1 to 6); CI also runs a batch from a base derived
//! from the commit (`.ci/run` prints it). Locally:
//!   CHAOS_SEEDS=1000 CHAOS_RUNS=12 CHAOS_JOBS=2 cargo test --test integration chaos::chaos -- --nocapture
//! Replay one seed: CHAOS_SEED=<seed> [CHAOS_RUNS=<runs>] cargo test --test integration chaos::chaos -- --exact --nocapture
//! (`chaos::chaos_grouped` for a grouped seed). CHAOS_SEED_BASE=<n> starts a batch at seed n.
//! CHAOS_JOBS (default: the number of cores) seeds run at once. CHAOS_BIN=<copy of the app
//! binary> keeps a long run immune to rebuilds; CHAOS_KEEP=1 keeps the run folders (logs,
//! message.tc, results.tc); CHAOS_VERBOSE=1 prints job edits.
//! (Faults fire on request counts, so a replay meets the same faults; which worker thread meets
//! a write fault can differ between replays.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{empty_lab, expected_name, expire_leases, BIN};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::intel;
use tanium_tr_indicators::sim::alerts::AlertSpec;
use tanium_tr_indicators::sim::dataset::{self, Rng, OWNERS, TAGS};
use tanium_tr_indicators::sim::lab::{Lab, RunResult, LAB_PARAM_KEY};
use tanium_tr_indicators::sim::server::{Fault, FaultRule, Server};
use tanium_tr_indicators::sim::tanium::{DocHealth, IntrinsicFrom, SimDoc};
use tanium_tr_indicators::sim::tc_exclusions::SimExclusionList;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;
use tanium_tr_indicators::tc::tql::format_time;
use time::OffsetDateTime;

/// The app binary the chaos runs start: `CHAOS_BIN` (a copy, so a long run survives rebuilds)
/// or the one cargo built.
fn app_binary() -> std::path::PathBuf {
    std::env::var_os("CHAOS_BIN")
        .map(Into::into)
        .unwrap_or_else(|| BIN.into())
}
/// The app's `http_timeout_secs` for chaos runs: several seeds share the cores, so an answer
/// that is not held back must never come near it.
const TIMEOUT_SECS: u64 = 5;
/// How long `Fault::Delay` holds an answer: well past the timeout, so the app has given up.
const SLOW: Duration = Duration::from_millis(TIMEOUT_SECS * 1000 + 2000);
/// Attempts per call in the app's default retry policy: up to this many - 1 faults are absorbed.
const ATTEMPTS: u32 = 5;
const APP_SOURCE: &str = "ThreatConnect";
const FOREIGN_SOURCE: &str = "Analyst Intel";
/// A second label of the job's own, and the label for documents TR disabled.
const CHAOS_LABEL: &str = "Chaos Feed";
const DISABLED_LABEL: &str = "TR Disabled Intel";
/// Indicators whose last modified time is this close to the age window's edge may fall either
/// side of it during a seed.
const AGE_EDGE_SECS: i64 = 600;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The job, and what it must select, written independently of the app's filter code
// ---------------------------------------------------------------------------------------------

/// User TQL as chaos writes it, with the test's own reading of what it selects (the simulator's
/// semantics: an unset confidence or rating fails a comparison, an unset ThreatAssess score
/// counts as 0, tag names compare without case inside hasTag, type names without case).
#[derive(Debug, Clone)]
enum Tql {
    ScoreAtLeast(u32),
    ConfidenceAtLeast(u32),
    RatingAbove(u32),
    Tag(&'static str),
    Owners(Vec<&'static str>),
    NotOwner(&'static str),
    Type(&'static str),
    And(Box<Tql>, Box<Tql>),
    Or(Box<Tql>, Box<Tql>),
}

impl Tql {
    fn random(rng: &mut Rng, depth: u32) -> Tql {
        if depth < 2 && chance(rng, 40) {
            let a = Box::new(Tql::random(rng, depth + 1));
            let b = Box::new(Tql::random(rng, depth + 1));
            return if chance(rng, 50) {
                Tql::And(a, b)
            } else {
                Tql::Or(a, b)
            };
        }
        match rng.below(7) {
            0 => Tql::ScoreAtLeast(rng.below(800) as u32),
            1 => Tql::ConfidenceAtLeast(rng.below(80) as u32),
            2 => Tql::RatingAbove(rng.below(4) as u32),
            3 => Tql::Tag(pick_str(rng, &TAGS)),
            4 => {
                let a = *pick(rng, &OWNERS);
                let b = *pick(rng, &OWNERS);
                Tql::Owners(if a == b { vec![a] } else { vec![a, b] })
            }
            5 => Tql::NotOwner(pick_str(rng, &OWNERS)),
            _ => Tql::Type(pick_str(rng, &["Address", "File", "Host"])),
        }
    }

    fn text(&self) -> String {
        match self {
            Tql::ScoreAtLeast(n) => format!("threatAssessScore >= {n}"),
            Tql::ConfidenceAtLeast(n) => format!("confidence >= {n}"),
            Tql::RatingAbove(n) => format!("rating > {n}"),
            Tql::Tag(t) => format!("hasTag(summary = \"{t}\")"),
            Tql::Owners(o) => format!(
                "ownerName IN ({})",
                o.iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Tql::NotOwner(o) => format!("ownerName NOT IN (\"{o}\")"),
            Tql::Type(t) => format!("typeName = \"{t}\""),
            Tql::And(a, b) => format!("({}) AND ({})", a.text(), b.text()),
            Tql::Or(a, b) => format!("({}) OR ({})", a.text(), b.text()),
        }
    }

    fn selects(&self, i: &Indicator) -> bool {
        match self {
            Tql::ScoreAtLeast(n) => i.threat_assess_score.unwrap_or(0) >= i64::from(*n),
            Tql::ConfidenceAtLeast(n) => i.confidence.is_some_and(|c| c >= i64::from(*n)),
            Tql::RatingAbove(n) => i.rating.is_some_and(|r| r > f64::from(*n)),
            Tql::Tag(t) => i.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
            Tql::Owners(o) => o.contains(&i.owner_name.as_str()),
            Tql::NotOwner(o) => i.owner_name != *o,
            Tql::Type(t) => i.type_name.eq_ignore_ascii_case(t),
            Tql::And(a, b) => a.selects(i) && b.selects(i),
            Tql::Or(a, b) => a.selects(i) || b.selects(i),
        }
    }
}

#[derive(Debug, Clone)]
struct Job {
    types: Vec<&'static str>,
    owners: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    min_score: Option<u32>,
    min_confidence: Option<u32>,
    min_rating: Option<u32>,
    max_fp: Option<u32>,
    /// Replaces every filter above when set.
    tql: Option<Tql>,
    never_send: Vec<String>,
    max_indicators: Option<u64>,
    max_age_days: Option<u32>,
    openioc: bool,
    /// The first Last Modified (epoch seconds): the job horizon no pull reaches behind.
    horizon: i64,
    /// Indicators per Intel Document (1: one document each).
    per_document: u32,
    /// Tanium Labels (None: never set, so the default label).
    labels: Option<Vec<String>>,
    tags_as_labels: Vec<&'static str>,
    threatassess_labels: bool,
    disabled_label: bool,
    take_over: bool,
    deploy: bool,
    /// Maximum Removal Percent as the admin set it (None: the default).
    removal_percent: Option<u32>,
    /// Honor Exclusion Lists and Honor Expiry (on by default; toggled from the rails' own
    /// stream, see [`TcKnows`]).
    honor_lists: bool,
    honor_expiry: bool,
    /// Report Tanium Detections (drawn by [`Detections`], from a stream of its own).
    detections: bool,
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn pick_str(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    items[rng.below(items.len() as u64) as usize]
}

fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

fn some_tags(rng: &mut Rng, max: u64) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for _ in 0..1 + rng.below(max) {
        let t = pick(rng, &TAGS).to_string();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The aspects of a job an admin edits between runs (see [`Job::change`]).
const ASPECTS: u64 = 17;

impl Job {
    fn random(rng: &mut Rng, snapshot: &[Indicator]) -> Job {
        let mut j = Job {
            types: vec!["Address", "File", "Host"],
            owners: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            min_score: None,
            min_confidence: None,
            min_rating: None,
            max_fp: None,
            tql: None,
            never_send: Vec::new(),
            max_indicators: None,
            max_age_days: None,
            openioc: chance(rng, 50),
            // 30 days cuts the generated data (60 days) in half; 600 days takes it all and
            // the hostile fixtures (mid 2025) too.
            horizon: now_secs() - if chance(rng, 50) { 30 } else { 600 } * 86_400,
            per_document: 1,
            labels: None,
            tags_as_labels: Vec::new(),
            threatassess_labels: false,
            disabled_label: false,
            take_over: false,
            deploy: true,
            removal_percent: None,
            honor_lists: true,
            honor_expiry: true,
            detections: false,
        };
        for aspect in 0..6 {
            if chance(rng, 35) {
                j.change(rng, aspect, snapshot);
            }
        }
        // The rest of the mix, each less often: a seed tries a few settings, not all at once.
        for (aspect, percent) in [
            (6, 15),
            (7, 25),
            (8, 15),
            (9, 15),
            (10, 20),
            (11, 25),
            (12, 20),
            (13, 20),
            (15, 12),
            (16, 12),
        ] {
            if chance(rng, percent) {
                j.change(rng, aspect, snapshot);
            }
        }
        j
    }

    /// Re-draws one aspect of the job (what an admin editing it does).
    fn change(&mut self, rng: &mut Rng, aspect: u64, snapshot: &[Indicator]) {
        match aspect {
            0 => {
                let all = ["Address", "File", "Host"];
                let mask = 1 + rng.below(7);
                self.types = (0..3)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| all[i])
                    .collect();
            }
            1 => {
                self.owners = if chance(rng, 40) {
                    Vec::new()
                } else {
                    let mut o: Vec<String> = Vec::new();
                    for _ in 0..1 + rng.below(3) {
                        let x = pick(rng, &OWNERS).to_string();
                        if !o.contains(&x) {
                            o.push(x);
                        }
                    }
                    o
                }
            }
            2 => {
                self.include = if chance(rng, 50) {
                    Vec::new()
                } else {
                    some_tags(rng, 4)
                }
            }
            3 => self.exclude = some_tags(rng, 3),
            4 => {
                self.min_score = chance(rng, 60).then(|| rng.below(700) as u32);
                self.min_confidence = chance(rng, 40).then(|| rng.below(70) as u32);
                self.min_rating = chance(rng, 30).then(|| rng.below(5) as u32);
                self.max_fp = chance(rng, 40).then(|| rng.below(3) as u32);
            }
            5 => self.openioc = !self.openioc,
            6 => {
                self.tql = match self.tql {
                    Some(_) if chance(rng, 50) => None,
                    _ => Some(Tql::random(rng, 0)),
                }
            }
            7 => {
                self.never_send = if !self.never_send.is_empty() && chance(rng, 40) {
                    Vec::new()
                } else {
                    never_send_entries(rng, snapshot)
                }
            }
            8 => {
                self.max_indicators = match self.max_indicators {
                    Some(_) if chance(rng, 40) => None,
                    _ => Some(*pick(rng, &[5, 12, 30, 70])),
                }
            }
            9 => {
                self.max_age_days = match self.max_age_days {
                    Some(_) if chance(rng, 40) => None,
                    _ => Some(*pick(rng, &[2, 7, 20, 45])),
                }
            }
            10 => {
                self.labels = pick(
                    rng,
                    &[
                        None,
                        Some(Vec::new()),
                        Some(vec!["ThreatConnect".to_string(), CHAOS_LABEL.to_string()]),
                        Some(vec![CHAOS_LABEL.to_lowercase()]),
                    ],
                )
                .clone()
            }
            11 => {
                self.tags_as_labels = pick(
                    rng,
                    &[
                        vec![],
                        vec!["APT"],
                        vec!["apt*"],
                        vec!["Phishing", "c2"],
                        vec!["ta*"],
                        vec!["ransom*", "TOR"],
                    ],
                )
                .clone()
            }
            12 => self.threatassess_labels = !self.threatassess_labels,
            13 => self.disabled_label = !self.disabled_label,
            14 => self.take_over = !self.take_over,
            15 => self.deploy = !self.deploy,
            _ => {
                // A job whose removals the guard holds back at any share.
                self.removal_percent = match self.removal_percent {
                    Some(_) => None,
                    None => Some(*pick(rng, &[0, 10])),
                }
            }
        }
    }

    fn apply(&self, lab: &mut Lab) {
        let list = |v: &[String]| {
            if v.is_empty() {
                Value::Null
            } else {
                json!(v.join(","))
            }
        };
        let num = |v: Option<u32>| v.map_or(Value::Null, |n| json!(n.to_string()));
        lab.set("indicator_types", json!(self.types.join("|")));
        lab.set(
            "owners",
            if self.owners.is_empty() {
                Value::Null
            } else {
                json!(self.owners)
            },
        );
        lab.set("include_tags", list(&self.include));
        lab.set("exclude_tags", list(&self.exclude));
        lab.set("min_threatassess_score", num(self.min_score));
        lab.set("min_confidence", num(self.min_confidence));
        lab.set("min_rating", num(self.min_rating));
        lab.set("max_false_positives", num(self.max_fp));
        lab.set(
            "tql",
            self.tql.as_ref().map_or(Value::Null, |q| json!(q.text())),
        );
        lab.set("never_send", list(&self.never_send));
        lab.set(
            "max_indicators",
            self.max_indicators
                .map_or(Value::Null, |n| json!(n.to_string())),
        );
        lab.set("max_indicator_age_days", num(self.max_age_days));
        lab.set(
            "intel_format",
            json!(if self.openioc { "OpenIOC" } else { "STIX" }),
        );
        let horizon = OffsetDateTime::from_unix_timestamp(self.horizon).unwrap();
        lab.set("last_modified", json!(format_time(horizon)));
        lab.set(
            "indicators_per_document",
            json!(self.per_document.to_string()),
        );
        lab.set(
            "tanium_labels",
            self.labels
                .as_ref()
                .map_or(Value::Null, |l| json!(l.join("|"))),
        );
        lab.set(
            "tags_as_labels",
            if self.tags_as_labels.is_empty() {
                Value::Null
            } else {
                json!(self.tags_as_labels.join(","))
            },
        );
        lab.set("threatassess_labels", json!(self.threatassess_labels));
        lab.set(
            "disabled_intel_label",
            if self.disabled_label {
                json!(DISABLED_LABEL)
            } else {
                Value::Null
            },
        );
        lab.set("take_over_source", json!(self.take_over));
        lab.set("deploy_intel", json!(self.deploy));
        lab.set("max_removal_percent", num(self.removal_percent));
        lab.set("honor_exclusion_lists", json!(self.honor_lists));
        lab.set("honor_expiry", json!(self.honor_expiry));
        lab.set("report_detections", json!(self.detections));
    }

    /// Whether the job's filters (or TQL) select `i`: a plain reading of the documented filters.
    fn selects(&self, i: &Indicator) -> bool {
        if let Some(q) = &self.tql {
            return q.selects(i);
        }
        let lower = |s: &str| s.to_lowercase();
        let has = |tags: &[String]| {
            i.tags
                .iter()
                .any(|t| tags.iter().any(|w| lower(w) == lower(t)))
        };
        let at_least = |v: Option<f64>, min: Option<u32>| match min {
            None | Some(0) => true,
            Some(m) => v.is_some_and(|v| v >= f64::from(m)),
        };
        self.types.contains(&i.type_name.as_str())
            && (self.owners.is_empty() || self.owners.contains(&i.owner_name))
            && (self.include.is_empty() || has(&self.include))
            && !has(&self.exclude)
            && at_least(
                Some(i.threat_assess_score.unwrap_or(0) as f64),
                self.min_score,
            )
            && at_least(i.confidence.map(|c| c as f64), self.min_confidence)
            && at_least(i.rating, self.min_rating)
            && self
                .max_fp
                .is_none_or(|m| i.false_positives.unwrap_or(0) <= i64::from(m))
    }

    /// Whether the job may send `i` at time `now`: selected, within the horizon and the age
    /// window, neither unsafe nor on the Never Send list, nor (when honoured) on one of TC's
    /// exclusion lists or past its expiry (before Maximum Indicators).
    fn eligible(&self, i: &Indicator, now: i64, tc: &TcKnows) -> bool {
        if self.honor_lists && tc.on_a_list(i) {
            return false;
        }
        if self.honor_expiry && expiry(i).is_some_and(|t| t <= now) {
            return false;
        }
        let modified = epoch(&i.last_modified);
        i.active
            && self.selects(i)
            && modified >= self.horizon
            && self
                .max_age_days
                .is_none_or(|d| modified >= now - i64::from(d) * 86_400)
            && !unsafe_value(i)
            && !never_sends(&self.never_send, i)
            && expected_name(i).is_some()
    }

    /// The labels (lower case) the document of `i` must carry by the label params.
    fn labels_for(&self, i: &Indicator) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let fixed = self
            .labels
            .clone()
            .unwrap_or_else(|| vec!["ThreatConnect".to_string()]);
        for f in fixed {
            if !f.trim().is_empty() {
                out.insert(f.trim().to_lowercase());
            }
        }
        for t in &i.tags {
            let key = t.trim().to_lowercase();
            let nameable = !key.is_empty() && !t.chars().any(char::is_control);
            let ruled = self
                .tags_as_labels
                .iter()
                .any(|r| match r.strip_suffix('*') {
                    Some(prefix) => key.starts_with(&prefix.to_lowercase()),
                    None => key == r.to_lowercase(),
                });
            if nameable && ruled {
                out.insert(key);
            }
        }
        if self.threatassess_labels {
            out.insert(band(i.threat_assess_score.unwrap_or(0)).to_lowercase());
        }
        out
    }
}

/// The ThreatAssess band labels, as the README gives them (quarters of 0-1000).
fn band(score: i64) -> &'static str {
    match score {
        750.. => "ThreatAssess Critical",
        500.. => "ThreatAssess High",
        250.. => "ThreatAssess Medium",
        _ => "ThreatAssess Low",
    }
}

/// Maximum Indicators' order (README): ThreatAssess score, rating, confidence, highest first
/// (unset below any set one), then the TC id, oldest first. Smaller ranks better.
fn rank(i: &Indicator) -> (i64, i64, i64, i64) {
    (
        -i.threat_assess_score.unwrap_or(0),
        -i.rating.map_or(-1, |r| (r * 100.0).round() as i64),
        -i.confidence.unwrap_or(-1),
        i.id,
    )
}

/// The value a document of `i` is named after (normalised as the README's names show it).
fn sent_value(i: &Indicator) -> Option<String> {
    let name = expected_name(i)?;
    name.strip_prefix(&format!("ThreatConnect {} ", i.type_name))
        .map(str::to_string)
}

/// Every hash a File indicator has, lower case.
fn file_hashes(i: &Indicator) -> BTreeSet<String> {
    [&i.md5, &i.sha1, &i.sha256]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

/// Never Send entries drawn from what TC holds: an address, its /16, /8 or /48, a host name or
/// its parent domain, a hash; now and then a range only new indicators fall in.
fn never_send_entries(rng: &mut Rng, snapshot: &[Indicator]) -> Vec<String> {
    let sendable: Vec<&Indicator> = snapshot
        .iter()
        .filter(|i| i.active && expected_name(i).is_some())
        .collect();
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if sendable.is_empty() || chance(rng, 15) {
            out.push(
                pick(
                    rng,
                    &["chaos.example", "198.18.0.0/16", "2001:db8:c4a0::/48"],
                )
                .to_string(),
            );
            continue;
        }
        let i = *pick(rng, &sendable);
        let Some(value) = sent_value(i) else { continue };
        let entry = match i.type_name.as_str() {
            "Address" => match value.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => {
                    let o = v4.octets();
                    match rng.below(3) {
                        0 => value,
                        1 => format!("{}.{}.0.0/16", o[0], o[1]),
                        _ => format!("{}.0.0.0/8", o[0]),
                    }
                }
                Ok(IpAddr::V6(v6)) => {
                    let s = v6.segments();
                    if chance(rng, 50) {
                        value
                    } else {
                        format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
                    }
                }
                Err(_) => continue,
            },
            "Host" => match value.split_once('.') {
                Some((_, parent)) if chance(rng, 50) => parent.to_string(),
                _ => value,
            },
            _ => {
                let hashes: Vec<&String> =
                    [&i.md5, &i.sha1, &i.sha256].into_iter().flatten().collect();
                match hashes.is_empty() {
                    true => continue,
                    false => pick(rng, &hashes).to_string(),
                }
            }
        };
        out.push(entry);
    }
    out
}

fn in_range(ip: &str, entry: &str) -> bool {
    let (net, bits) = match entry.split_once('/') {
        Some((n, b)) => (n, b.trim().parse::<u32>().ok()),
        None => (entry, None),
    };
    match (ip.parse::<IpAddr>(), net.trim().parse::<IpAddr>()) {
        (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(n))) => {
            let mask = u32::MAX.checked_shl(32 - bits.unwrap_or(32)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(n))) => {
            let mask = u128::MAX
                .checked_shl(128 - bits.unwrap_or(128))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether a Never Send entry names `i` (README: IPs, CIDR ranges, host names with their
/// subdomains, hashes).
fn never_sends(entries: &[String], i: &Indicator) -> bool {
    let Some(value) = sent_value(i) else {
        return false;
    };
    entries.iter().any(|e| {
        let e = e.trim().to_ascii_lowercase();
        match i.type_name.as_str() {
            "Address" => in_range(&value, &e),
            "Host" => value == e || value.ends_with(&format!(".{e}")),
            "File" => file_hashes(i).contains(&e),
            _ => false,
        }
    })
}

fn epoch(s: &str) -> i64 {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// What the source must hold after a run, computed from the TC snapshot.
struct Target {
    /// TC id -> record, for every indicator the job may send.
    eligible: BTreeMap<i64, Indicator>,
    /// Those the source must hold.
    wanted: BTreeSet<i64>,
    /// Those it may hold.
    allowed: BTreeSet<i64>,
    /// Those whose documents, when held, must be current.
    current: BTreeSet<i64>,
    /// The source must hold exactly `wanted`.
    exact: bool,
    /// Report Tanium Detections is on: documents leave out last modified and the score.
    detections: bool,
}

/// Under Maximum Indicators a run that is no full reconcile adds only while there is room and
/// evicts nothing (README), so only a full reconcile says which are held; one that met an
/// indicator changed mid-run may have ranked it either way.
fn target(
    job: &Job,
    tc: &TcKnows,
    snapshot: &[Indicator],
    now: i64,
    (full, racing): (bool, bool),
) -> Target {
    let eligible: BTreeMap<i64, Indicator> = snapshot
        .iter()
        .filter(|i| job.eligible(i, now, tc))
        .map(|i| (i.id, i.clone()))
        .collect();
    let all: BTreeSet<i64> = eligible.keys().copied().collect();
    let Some(cap) = job.max_indicators else {
        return Target {
            eligible,
            wanted: all.clone(),
            allowed: all.clone(),
            current: all,
            exact: true,
            detections: job.detections,
        };
    };
    let mut ranked: Vec<&Indicator> = eligible.values().collect();
    ranked.sort_by_key(|i| rank(i));
    let top: BTreeSet<i64> = ranked.iter().take(cap as usize).map(|i| i.id).collect();
    let (wanted, allowed, current, exact) = match (full, racing) {
        (true, false) => (top.clone(), top.clone(), top, true),
        (true, true) => (BTreeSet::new(), all, top, false),
        (false, _) => (BTreeSet::new(), all.clone(), all, false),
    };
    Target {
        eligible,
        wanted,
        allowed,
        current,
        exact,
        detections: job.detections,
    }
}

// ---------------------------------------------------------------------------------------------
// What ThreatConnect already knows: its exclusion lists and expiry dates
// ---------------------------------------------------------------------------------------------

/// `externalDateExpires`, epoch seconds, when it is set and a date.
fn expiry(i: &Indicator) -> Option<i64> {
    i.external_date_expires
        .as_deref()
        .map(epoch)
        .filter(|t| *t > 0)
}

/// ThreatConnect's exclusion lists as the test keeps them (its own copy of what the simulator
/// serves, by list id), and the status they answer this run (None: readable).
struct TcKnows {
    lists: Vec<(i64, SimExclusionList)>,
    denied: Option<u16>,
    /// Every indicator a list named at some run of the seed: a run that cannot read the lists
    /// knows nothing of their edits since the last that could.
    ever_listed: BTreeSet<i64>,
}

impl TcKnows {
    /// Whether an active list excludes `i`, read from the documented rules: fixed values
    /// exactly (addresses as addresses, names and hashes without case), CIDR ranges for
    /// addresses, `*` for any run of characters in names, an owner's list for that owner's
    /// indicators only, other list types never.
    fn on_a_list(&self, i: &Indicator) -> bool {
        self.lists.iter().any(|(_, l)| l.active && excludes(l, i))
    }
}

/// A list's type, its name without the optional `Indicator-` prefix, lower case.
fn list_type(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    n.strip_prefix("indicator-").unwrap_or(&n).to_string()
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => text.strip_prefix(head).is_some_and(|tail| {
            (0..=tail.len())
                .filter(|k| tail.is_char_boundary(*k))
                .any(|k| glob(rest, &tail[k..]))
        }),
    }
}

fn excludes(l: &SimExclusionList, i: &Indicator) -> bool {
    if l.owner.as_ref().is_some_and(|o| *o != i.owner_name) {
        return false;
    }
    let Some(value) = sent_value(i) else {
        return false;
    };
    let kind = list_type(&l.name);
    let fixed = |f: &dyn Fn(&str) -> bool| l.fixed.iter().any(|v| f(v.trim()));
    let variable = |f: &dyn Fn(&str) -> bool| l.variable.iter().any(|v| f(v.trim()));
    match (i.type_name.as_str(), kind.as_str()) {
        ("Address", "address-ipv4" | "address-ipv6") => {
            let Ok(ip) = value.parse::<IpAddr>() else {
                return false;
            };
            ip.is_ipv4() == (kind == "address-ipv4")
                && (fixed(&|v| v.parse::<IpAddr>().ok() == Some(ip))
                    || variable(&|v| v.contains('/') && in_range(&value, v)))
        }
        ("Host", "host") => {
            fixed(&|v| v.to_lowercase().trim_end_matches('.') == value)
                || variable(&|v| glob(&v.to_lowercase(), &value))
        }
        ("File", "file-md5" | "file-sha1" | "file-sha256") => {
            let len = match kind.as_str() {
                "file-md5" => 32,
                "file-sha1" => 40,
                _ => 64,
            };
            file_hashes(i)
                .iter()
                .filter(|h| h.len() == len)
                .any(|h| fixed(&|v| v.to_ascii_lowercase() == *h))
        }
        _ => false,
    }
}

/// Lists drawn from what TC holds: a System address list (a value or two and the /28 around
/// another), an owner's host list named without the prefix (a value in upper case, a pattern
/// that names one generated host, sometimes one that names hosts chaos creates later), a
/// System MD5 list in upper case, a list of a type the job never sends, and now and then an
/// inactive list naming a value (which must not count).
fn draw_lists(rng: &mut Rng, snapshot: &[Indicator]) -> Vec<SimExclusionList> {
    let sendable: Vec<&Indicator> = snapshot
        .iter()
        .filter(|i| i.active && sent_value(i).is_some())
        .collect();
    let of = |t: &str| -> Vec<&Indicator> {
        sendable
            .iter()
            .filter(|i| i.type_name == t)
            .copied()
            .collect()
    };
    let list = |name: &str, owner: Option<String>, fixed: Vec<String>, variable: Vec<String>| {
        SimExclusionList {
            name: name.into(),
            owner,
            managed: false,
            active: true,
            fixed,
            variable,
        }
    };
    let mut out = Vec::new();
    let v4: Vec<String> = of("Address")
        .iter()
        .filter_map(|i| sent_value(i))
        .filter(|v| v.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    if !v4.is_empty() {
        let fixed: Vec<String> = (0..1 + rng.below(2))
            .map(|_| pick(rng, &v4).clone())
            .collect();
        let base: std::net::Ipv4Addr = pick(rng, &v4).parse().unwrap();
        let net = std::net::Ipv4Addr::from(u32::from(base) & !15);
        let name = *pick(rng, &["Indicator-Address-IPv4", "Address-IPv4"]);
        let mut l = list(name, None, fixed, vec![format!("{net}/28")]);
        l.managed = chance(rng, 50);
        out.push(l);
    }
    let hosts = of("Host");
    if !hosts.is_empty() {
        let h = *pick(rng, &hosts);
        let fixed = vec![sent_value(h).unwrap_or_default().to_uppercase()];
        let o = *pick(rng, &hosts);
        let other = sent_value(o).unwrap_or_default();
        let mut variable = vec![match other.split_once('-') {
            Some((head, _)) if head.starts_with('h') => format!("{head}-*"),
            _ => other,
        }];
        if chance(rng, 30) {
            variable.push("new50000*.chaos.example".into());
        }
        out.push(list("Host", Some(h.owner_name.clone()), fixed, variable));
    }
    let md5s: Vec<String> = of("File").iter().filter_map(|i| i.md5.clone()).collect();
    if !md5s.is_empty() {
        let fixed = vec![pick(rng, &md5s).to_uppercase()];
        out.push(list("Indicator-File-MD5", None, fixed, Vec::new()));
    }
    if !sendable.is_empty() && chance(rng, 30) {
        let i = *pick(rng, &sendable);
        let name = match i.type_name.as_str() {
            "Address" if i.summary.contains(':') => "Indicator-Address-IPv6",
            "Address" => "Indicator-Address-IPv4",
            "Host" => "Indicator-Host",
            _ => "Indicator-File-SHA256",
        };
        let mut l = list(
            name,
            None,
            vec![sent_value(i).unwrap_or_default()],
            Vec::new(),
        );
        l.active = false;
        out.push(l);
    }
    out.push(list(
        "Indicator-ASN-AS Number",
        None,
        vec!["AS13335".into()],
        Vec::new(),
    ));
    out
}

/// From the rails' own stream (so the rest of a seed's mix stays as it was): whether this
/// seed's ThreatConnect keeps exclusion lists and expiry dates (some past, some far ahead,
/// some a few seconds to minutes ahead, so they pass between two runs), and whether the job
/// honours them.
fn tc_knows(rng: &mut Rng, lab: &Lab, job: &mut Job, stats: &mut Stats) -> TcKnows {
    let mut tc = TcKnows {
        lists: Vec::new(),
        denied: None,
        ever_listed: BTreeSet::new(),
    };
    let snapshot = lab.tc.snapshot();
    if chance(rng, 50) {
        for l in draw_lists(rng, &snapshot) {
            let id = lab.tc.add_exclusion_list(l.clone());
            tc.lists.push((id, l));
        }
        stats.saw("seeds with exclusion lists");
    }
    if chance(rng, 50) {
        let now = now_secs();
        for i in &snapshot {
            let at = match rng.below(100) {
                0..=3 => now - 86_400 * (1 + rng.below(10) as i64),
                4..=7 => now + 30 * 86_400,
                8..=11 => now + 5 + rng.below(90) as i64,
                _ => continue,
            };
            let mut x = i.clone();
            x.external_date_expires = OffsetDateTime::from_unix_timestamp(at)
                .ok()
                .map(format_time);
            lab.tc.insert(x);
        }
        stats.saw("seeds with expiry dates");
    }
    job.honor_lists = !chance(rng, 15);
    job.honor_expiry = !chance(rng, 15);
    for (off, what) in [
        (!job.honor_lists, "seeds with Honor Exclusion Lists off"),
        (!job.honor_expiry, "seeds with Honor Expiry off"),
    ] {
        if off {
            stats.saw(what);
        }
    }
    tc
}

/// Between runs, from the rails' own stream: a list edited (a value added or dropped, the list
/// deactivated or reactivated), the Api User unable to read the lists for one run (401 or
/// 403), or the admin turning one of the two params over. Whether the job changed.
fn tc_acts(rng: &mut Rng, lab: &Lab, tc: &mut TcKnows, job: &mut Job, stats: &mut Stats) -> bool {
    if !tc.lists.is_empty() && chance(rng, 10) {
        let snapshot = lab.tc.snapshot();
        let k = rng.below(tc.lists.len() as u64) as usize;
        let (id, l) = &mut tc.lists[k];
        match rng.below(3) {
            0 => l.active = !l.active,
            1 => {
                let kind = list_type(&l.name);
                let fits: Vec<String> = snapshot
                    .iter()
                    .filter(|i| match kind.as_str() {
                        "address-ipv4" => i.type_name == "Address" && !i.summary.contains(':'),
                        "address-ipv6" => i.type_name == "Address" && i.summary.contains(':'),
                        "host" => i.type_name == "Host",
                        _ => false,
                    })
                    .filter_map(sent_value)
                    .collect();
                if !fits.is_empty() {
                    l.fixed.push(pick(rng, &fits).clone());
                }
            }
            _ => {
                l.fixed.pop();
            }
        }
        let edited = l.clone();
        lab.tc.edit_exclusion_list(*id, |x| *x = edited);
        stats.saw("exclusion lists edited between runs");
    }
    if chance(rng, 5) {
        tc.denied = Some(*pick(rng, &[401u16, 403]));
        lab.tc.deny_exclusion_lists(tc.denied);
        stats.saw("runs whose exclusion lists were unreadable");
    }
    if chance(rng, 4) {
        if chance(rng, 50) {
            job.honor_lists = !job.honor_lists;
        } else {
            job.honor_expiry = !job.honor_expiry;
        }
        stats.saw("Honor Exclusion Lists or Honor Expiry turned over");
        return true;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Tc,
    Tanium,
}

/// One planned fault: where, what, and whether the app can absorb it by retrying.
#[derive(Debug, Clone)]
struct Planned {
    side: Side,
    rule: FaultRule,
    kind: &'static str,
}

#[derive(Debug, Default, Clone)]
struct Plan {
    faults: Vec<Planned>,
    /// Expire every Tanium session once the run has sent this many Tanium requests.
    expire_at: Option<u64>,
    /// Change TC (as analysts and feeds do) once the run has sent this many TC requests.
    mutate_at: Option<u64>,
    /// Kill the process once the run has sent this many requests (both sides).
    kill_at: Option<u64>,
    /// Start two runs at once, no fault planned (the run lease).
    together: bool,
}

fn status_fault(rng: &mut Rng) -> (Fault, &'static str) {
    let status = *pick(rng, &[500u16, 502, 503, 504, 429, 408]);
    let retry_after = match rng.below(3) {
        0 => None,
        1 => Some(0),
        _ => Some(1),
    };
    (
        Fault::Status {
            status,
            retry_after,
        },
        if status == 429 { "429" } else { "5xx" },
    )
}

fn plan_faults(rng: &mut Rng, generation: ApiGeneration, last_requests: u64) -> Plan {
    let base = generation.base_path();
    let mut plan = Plan::default();
    let n = match rng.below(10) {
        0..=2 => 0,
        3..=6 => 1,
        7 | 8 => 2,
        _ => 3,
    };
    let burst = |rng: &mut Rng| {
        if chance(rng, 12) {
            ATTEMPTS + rng.below(4) as u32 // outlasts the retries
        } else {
            1 + rng.below(2) as u32
        }
    };
    let skip = |rng: &mut Rng| rng.below(6) as u32;
    for _ in 0..n {
        let (side, method, prefix, fault, kind, count): (
            Side,
            Option<&str>,
            String,
            Fault,
            &'static str,
            u32,
        ) = match rng.below(16) {
            0 | 1 => {
                let (f, k) = status_fault(rng);
                let c = burst(rng);
                (Side::Tc, Some("GET"), "/api/v3/indicators".into(), f, k, c)
            }
            2 => (
                Side::Tc,
                Some("GET"),
                "/api/v3/indicators".into(),
                Fault::Drop,
                "drop mid-pull",
                1,
            ),
            3 => (
                Side::Tc,
                Some("GET"),
                "/api/v3/indicators".into(),
                Fault::TruncateBody,
                "truncated page",
                1,
            ),
            4 => (
                Side::Tc,
                Some("GET"),
                "/api/v3/indicators".into(),
                if chance(rng, 50) {
                    Fault::Garbage
                } else {
                    Fault::Delay(SLOW)
                },
                "slow or garbage page",
                1,
            ),
            5 => {
                let (f, k) = status_fault(rng);
                let c = burst(rng);
                (
                    Side::Tc,
                    Some("GET"),
                    "/api/v3/indicators/deleted".into(),
                    f,
                    k,
                    c,
                )
            }
            6 | 7 => {
                let (f, k) = status_fault(rng);
                let c = burst(rng);
                (
                    Side::Tanium,
                    Some("POST"),
                    format!("{base}/sources/"),
                    f,
                    k,
                    c,
                )
            }
            8 => (
                Side::Tanium,
                Some("POST"),
                format!("{base}/sources/"),
                Fault::Drop,
                "drop mid-upload",
                1 + rng.below(2) as u32,
            ),
            9 => {
                let method = *pick(rng, &["POST", "POST", "PUT", "DELETE"]);
                (
                    Side::Tanium,
                    Some(method),
                    if method == "POST" {
                        format!("{base}/sources/")
                    } else {
                        format!("{base}/intels")
                    },
                    match rng.below(5) {
                        0..=2 => Fault::DropAfterHandling,
                        3 => Fault::TruncateBody,
                        _ => Fault::Garbage, // a 200 that is not JSON (write not done)
                    },
                    "write done, answer lost or garbled",
                    1 + rng.below(3) as u32,
                )
            }
            10 => (
                Side::Tanium,
                Some(*pick(rng, &["POST", "PUT", "DELETE"])),
                format!("{base}/"),
                Fault::Delay(SLOW),
                "slow write",
                1,
            ),
            11 => {
                let (f, k) = status_fault(rng);
                let c = burst(rng);
                (Side::Tanium, Some("GET"), format!("{base}/intels"), f, k, c)
            }
            12 => (
                Side::Tanium,
                Some("GET"),
                format!("{base}/intels"),
                pick(
                    rng,
                    &[
                        Fault::Drop,
                        Fault::TruncateBody,
                        Fault::Garbage,
                        Fault::Drop,
                    ],
                )
                .clone(),
                "listing broken",
                1,
            ),
            13 => {
                let (f, _) = status_fault(rng);
                let c = burst(rng);
                (
                    Side::Tanium,
                    Some("POST"),
                    format!("{base}/intel/deploy"),
                    f,
                    "deploy refused",
                    c,
                )
            }
            14 => (
                Side::Tanium,
                None,
                format!("{base}/"),
                Fault::Status {
                    status: 503,
                    retry_after: Some(0),
                },
                "Tanium outage",
                30 + rng.below(150) as u32,
            ),
            _ => (
                Side::Tc,
                Some("GET"),
                "/api/v3/indicators".into(),
                Fault::Status {
                    status: 503,
                    retry_after: Some(0),
                },
                "TC outage",
                ATTEMPTS * (1 + rng.below(3) as u32),
            ),
        };
        let skip = if side == Side::Tanium && method != Some("GET") {
            rng.below(3) as u32 // incremental runs write little
        } else {
            skip(rng)
        };
        let rule = FaultRule::new(method, &prefix, count, fault).after(skip);
        plan.faults.push(Planned { side, rule, kind });
    }
    if chance(rng, 15) {
        plan.expire_at = Some(rng.below(40));
    }
    if chance(rng, 25) {
        plan.mutate_at = Some(1 + rng.below(6));
    }
    if chance(rng, 12) {
        plan.kill_at = Some(1 + rng.below(last_requests.max(2)));
    }
    plan
}

/// Faults that fired, by kind, after a run: armed minus what is left.
fn fired(plan: &Plan, left: &[(Side, FaultRule)]) -> Vec<(Side, &'static str, u32, bool)> {
    let mut remaining: Vec<(Side, FaultRule)> = left.to_vec();
    plan.faults
        .iter()
        .map(|p| {
            let pos = remaining.iter().position(|(s, r)| {
                *s == p.side
                    && r.method == p.rule.method
                    && r.path_prefix == p.rule.path_prefix
                    && r.fault == p.rule.fault
            });
            let left = pos.map(|i| remaining.remove(i).1.count).unwrap_or(0);
            let n = p.rule.count.saturating_sub(left);
            let retryable = !matches!(p.rule.fault, Fault::Garbage);
            (p.side, p.kind, n, retryable)
        })
        .collect()
}

/// Faults that may have done a write whose answer the app never read (so it tried again).
fn lost_answers(fired: &[(Side, &'static str, u32, bool)]) -> u64 {
    fired
        .iter()
        .filter(|f| f.1 == "write done, answer lost or garbled" || f.1 == "slow write")
        .map(|f| u64::from(f.2))
        .sum()
}

fn foreign_docs(lab: &Lab) -> Vec<SimDoc> {
    let app = lab.tanium.source_id(APP_SOURCE);
    lab.tanium
        .docs()
        .into_iter()
        .filter(|d| Some(d.source_id) != app)
        .collect()
}
// ---------------------------------------------------------------------------------------------
// Mutations of ThreatConnect between runs
// ---------------------------------------------------------------------------------------------

struct World {
    next_id: i64,
    new_owners: u32,
    /// TC id -> when TC recorded its deletion (epoch seconds)
    deleted: HashMap<i64, i64>,
}

fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Values the safety rails must keep out of Tanium (by default), written out here so the
/// test's idea of "unsafe" does not come from the code under test.
const UNSAFE_ADDRESSES: [&str; 10] = [
    "10.9.8.7",
    "127.0.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "8.8.8.8",
    "::1",
    "fe80::1",
    // Cloudflare's resolvers, which the dataset's `N.0.0.M` addresses can be.
    "1.0.0.1",
    "1.0.0.2",
    "1.0.0.3",
];
const UNSAFE_HOSTS: [&str; 3] = ["localhost", "intranet", "co.uk"];
const EMPTY_FILE_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

fn unsafe_value(i: &Indicator) -> bool {
    let v = i.summary.to_ascii_lowercase();
    UNSAFE_ADDRESSES.contains(&v.as_str())
        || UNSAFE_HOSTS.contains(&v.as_str())
        || v.split(" : ").any(|h| h == EMPTY_FILE_MD5)
}

fn new_indicator(rng: &mut Rng, w: &mut World) -> Indicator {
    let id = w.next_id;
    w.next_id += 1;
    let owner = if chance(rng, 15) {
        w.new_owners += 1;
        format!("Chaos Owner {}", w.new_owners)
    } else {
        pick(rng, &OWNERS).to_string()
    };
    let mut i = Indicator {
        id,
        owner_id: None,
        owner_name: owner,
        tags: if chance(rng, 70) {
            some_tags(rng, 3)
        } else {
            Vec::new()
        },
        rating: chance(rng, 80).then(|| rng.below(6) as f64),
        confidence: chance(rng, 80).then(|| rng.below(101) as i64),
        threat_assess_score: Some(rng.below(1001) as i64),
        false_positives: Some(rng.below(3) as i64),
        last_modified: format_time(OffsetDateTime::now_utc()),
        ..Indicator::default()
    };
    match rng.below(3) {
        0 => {
            let ip = if chance(rng, 10) {
                pick(rng, &UNSAFE_ADDRESSES).to_string()
            } else if chance(rng, 30) {
                format!("2001:db8:c4a0::{:x}", id)
            } else {
                format!(
                    "198.{}.{}.{}",
                    18 + ((id >> 16) & 1),
                    (id >> 8) & 255,
                    id & 255
                )
            };
            i.type_name = "Address".into();
            i.summary = ip.clone();
            i.ip = Some(ip);
        }
        1 => {
            let h = if chance(rng, 10) {
                pick(rng, &UNSAFE_HOSTS).to_string()
            } else {
                format!("new{id}.chaos.example")
            };
            i.type_name = "Host".into();
            i.summary = h.clone();
            i.host_name = Some(h);
        }
        _ => {
            let md5 = if chance(rng, 5) {
                EMPTY_FILE_MD5.to_string()
            } else {
                format!("{:032x}", (id as u128) * 0x9E37_79B9_7F4A_7C15_u128)
            };
            i.type_name = "File".into();
            i.summary = md5.clone();
            i.md5 = Some(md5);
        }
    }
    i
}

/// Changes TC the way analysts do; returns what changed (kind, TC id). `keep_set`: only
/// changes that leave no indicator out of a running query's result set (the known paging gap:
/// see `an_indicator_deleted_during_a_full_pull_does_not_cost_another_its_document`).
fn mutate(
    rng: &mut Rng,
    lab: &Lab,
    w: &mut World,
    count: u64,
    keep_set: bool,
) -> Vec<(&'static str, i64)> {
    let mut done = Vec::new();
    for _ in 0..count {
        let snapshot = lab.tc.snapshot();
        let any = |rng: &mut Rng| -> Option<Indicator> {
            (!snapshot.is_empty()).then(|| pick(rng, &snapshot).clone())
        };
        let what = if keep_set {
            *pick(rng, &[0u64, 2, 6])
        } else {
            rng.below(10)
        };
        match what {
            0 | 1 => {
                let i = new_indicator(rng, w);
                done.push(("create", i.id));
                lab.tc.insert(i);
            }
            2 => {
                if let Some(i) = any(rng) {
                    let d = format!("edited {}", rng.next_u64());
                    lab.tc.update(i.id, |x| x.description = Some(d));
                    done.push(("modify", i.id));
                }
            }
            3 | 4 => {
                if let Some(i) = any(rng) {
                    let add = pick(rng, &TAGS).to_string();
                    let drop_one = chance(rng, 40);
                    lab.tc.update(i.id, |x| {
                        if drop_one && !x.tags.is_empty() {
                            x.tags.remove(0);
                        } else if !x.tags.contains(&add) {
                            x.tags.push(add);
                        }
                    });
                    done.push(("retag", i.id));
                }
            }
            5 => {
                if let Some(i) = any(rng) {
                    let (s, c, r) = (rng.below(1001), rng.below(101), rng.below(6));
                    lab.tc.update(i.id, |x| {
                        x.threat_assess_score = Some(s as i64);
                        x.confidence = Some(c as i64);
                        x.rating = Some(r as f64);
                        x.false_positives = Some((s % 3) as i64);
                    });
                    done.push(("rescore", i.id));
                }
            }
            6 | 7 => {
                let i = if keep_set {
                    snapshot.iter().find(|i| !i.active).cloned()
                } else {
                    any(rng)
                };
                if let Some(i) = i {
                    lab.tc.set_active(i.id, !i.active);
                    done.push((if i.active { "deactivate" } else { "reactivate" }, i.id));
                }
            }
            _ => {
                if let Some(i) = any(rng) {
                    if lab.tc.delete(i.id) {
                        w.deleted.insert(i.id, now_secs());
                        done.push(("delete", i.id));
                    }
                }
            }
        }
    }
    done
}

/// Most of the source deactivated at once (a feed withdrawn, an owner's data retired): more
/// removals than the guard allows on an incremental run. How many.
fn mass_deactivate(rng: &mut Rng, lab: &Lab) -> u64 {
    let mut n = 0;
    for i in lab.tc.snapshot().into_iter().filter(|i| i.active) {
        if chance(rng, 60) && lab.tc.set_active(i.id, false) {
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// What Tanium holds, read out of each document's XML by the test's own parser
// ---------------------------------------------------------------------------------------------

/// One indicator as a document of the app's shows it (a grouped document: one per member).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// The Tanium document.
    doc: i64,
    grouped: bool,
    /// The name users see: the document's (its adopted suffix cut) or the member's title.
    title: String,
    /// Address / Host / File, by the observable's element.
    kind: String,
    /// The observable values, normalised (addresses parsed, names and hashes in lower case).
    values: BTreeSet<String>,
    owner: String,
    tc_id: i64,
    rating: Option<f64>,
    confidence: Option<i64>,
    score: Option<i64>,
    tags: Vec<String>,
    /// "(and N more)" after the listed tags.
    more_tags: usize,
    modified: Option<i64>,
    /// The TC description (single documents only).
    description: Option<String>,
    /// Grouped: the label-set part of the document's bucket, as its root id shows it.
    label_set: Option<String>,
}

impl Seen {
    /// The same indicator content, wherever it is held.
    fn same_content(&self, other: &Seen) -> bool {
        Seen {
            doc: other.doc,
            label_set: other.label_set.clone(),
            ..self.clone()
        } == *other
    }
}

/// The app's source as the test reads it.
struct Observed {
    seen: Vec<Seen>,
    /// Every document of the source, by Tanium id.
    docs: BTreeMap<i64, SimDoc>,
    /// Documents the test cannot read as the job's (another integration's, or unreadable).
    other: BTreeSet<i64>,
}

impl Observed {
    fn holders(&self) -> BTreeMap<i64, Vec<&Seen>> {
        let mut by_id: BTreeMap<i64, Vec<&Seen>> = BTreeMap::new();
        for s in &self.seen {
            by_id.entry(s.tc_id).or_default().push(s);
        }
        by_id
    }

    /// Documents of the job's that Threat Response has disabled (everywhere or on endpoints).
    fn disabled(&self) -> BTreeSet<i64> {
        let ours: BTreeSet<i64> = self.seen.iter().map(|s| s.doc).collect();
        ours.into_iter()
            .filter(|id| {
                self.docs
                    .get(id)
                    .is_some_and(|d| d.health.disabled || d.health.disabled_endpoints > 0)
            })
            .collect()
    }
}

fn observe(lab: &Lab) -> Observed {
    let docs: BTreeMap<i64, SimDoc> = lab
        .tanium
        .source_id(APP_SOURCE)
        .map(|id| lab.tanium.docs_in(id))
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let mut seen = Vec::new();
    let mut other = BTreeSet::new();
    for d in docs.values() {
        match read_doc(d) {
            Some(s) if !s.is_empty() => seen.extend(s),
            _ => {
                other.insert(d.id);
            }
        }
    }
    Observed { seen, docs, other }
}

/// Only letters and digits, in lower case: how texts are compared whatever the renderer does
/// with control characters, white space, escaping and `;` in provenance lines.
fn akey(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn norm_value(kind: &str, v: &str) -> String {
    let v = v.trim();
    match kind {
        "Address" => v
            .parse::<IpAddr>()
            .map_or_else(|_| v.to_string(), |ip| ip.to_string()),
        "Host" => v.strip_suffix('.').unwrap_or(v).to_lowercase(),
        _ => v.to_ascii_lowercase(),
    }
}

fn local<'a>(n: &roxmltree::Node<'a, 'a>) -> &'a str {
    n.tag_name().name()
}

fn text_of(n: roxmltree::Node) -> String {
    n.descendants()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect()
}

fn child<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    n.children().find(|c| c.is_element() && local(c) == name)
}

/// The observables under `n` of a STIX document: (kind, value).
fn stix_values(n: roxmltree::Node) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for e in n.descendants().filter(|e| e.is_element()) {
        let kind = match local(&e) {
            "Address_Value" => "Address",
            "Simple_Hash_Value" => "File",
            "Value"
                if e.parent_element().is_some_and(|p| {
                    p.attributes()
                        .any(|a| a.name() == "type" && a.value().contains("DomainName"))
                }) =>
            {
                "Host"
            }
            _ => continue,
        };
        out.push((kind, norm_value(kind, &text_of(e))));
    }
    out
}

fn ioc_kind(search: &str) -> Option<&'static str> {
    match search {
        "PortItem/remoteIP" => Some("Address"),
        "Network/DNS" | "DnsEntryItem/Host" => Some("Host"),
        "FileItem/Md5sum" | "FileItem/Sha1sum" | "FileItem/Sha256sum" => Some("File"),
        _ => None,
    }
}

/// An OpenIOC document's items: id -> (kind, value).
fn ioc_items(root: roxmltree::Node) -> BTreeMap<String, (&'static str, String)> {
    let mut out = BTreeMap::new();
    for item in root
        .descendants()
        .filter(|e| e.is_element() && local(e) == "IndicatorItem")
    {
        let search = child(item, "Context")
            .and_then(|c| c.attribute("search"))
            .unwrap_or("");
        let content = child(item, "Content").map(text_of).unwrap_or_default();
        if let Some(kind) = ioc_kind(search) {
            out.insert(
                item.attribute("id").unwrap_or("").to_string(),
                (kind, norm_value(kind, &content)),
            );
        }
    }
    out
}

/// Tags as a document lists them: `A, B (and N more)`.
fn listed_tags(s: &str) -> (Vec<String>, usize) {
    let (list, more) = match s.rfind(" (and ") {
        Some(at) if s.ends_with(" more)") => {
            let n = s[at + 6..s.len() - 6].trim().parse().unwrap_or(0);
            (&s[..at], n)
        }
        _ => (s, 0),
    };
    (
        list.split(", ")
            .map(str::to_string)
            .filter(|t| !t.is_empty())
            .collect(),
        more,
    )
}

fn number_before_slash(s: &str) -> Option<String> {
    s.split(" / ").next().map(|v| v.trim().to_string())
}

/// A single document's description: the context lines (README: owner, rating, confidence,
/// ThreatAssess score, tags, TC description, last modified, link). None without a TC id.
fn read_context(seen: &mut Seen, description: &str) -> Option<()> {
    let mut tc_id = None;
    let mut desc: Option<Vec<&str>> = None;
    for line in description.lines().skip(1) {
        if line.trim_start().starts_with("tc-sync:") {
            break;
        }
        if let Some(d) = desc.as_mut() {
            d.push(line);
            continue;
        }
        let Some((k, v)) = line.split_once(": ") else {
            continue;
        };
        match k {
            "Owner" => seen.owner = v.to_string(),
            "ThreatConnect id" => tc_id = v.trim().parse().ok(),
            "Rating" => seen.rating = number_before_slash(v).and_then(|n| n.parse().ok()),
            "Confidence" => seen.confidence = number_before_slash(v).and_then(|n| n.parse().ok()),
            "ThreatAssess score" => {
                seen.score = number_before_slash(v).and_then(|n| n.parse().ok())
            }
            "Tags" => (seen.tags, seen.more_tags) = listed_tags(v),
            "Last modified" => seen.modified = Some(epoch(v.trim())),
            "Description" => desc = Some(vec![v]),
            _ => {}
        }
    }
    seen.tc_id = tc_id?;
    seen.description = desc.map(|d| d.join("\n"));
    Some(())
}

/// A grouped member's provenance line (`Host evil.example; owner Demo Org; id 12; rating 3 /
/// 5; confidence 60 / 100; ThreatAssess 500 / 1000; tags APT, C2; modified …; <link> tc-sync:
/// …`). None without a TC id.
fn read_provenance(seen: &mut Seen, line: &str) -> Option<()> {
    let line = match line.rfind(" tc-sync: ") {
        Some(at) => &line[..at],
        None => line,
    };
    let mut fields = line.split("; ");
    let head = fields.next()?;
    seen.title = format!("ThreatConnect {head}");
    let mut tc_id = None;
    for f in fields {
        let (k, v) = f.split_once(' ').unwrap_or((f, ""));
        match k {
            "owner" => seen.owner = v.to_string(),
            "id" => tc_id = v.trim().parse().ok(),
            "rating" => seen.rating = number_before_slash(v).and_then(|n| n.parse().ok()),
            "confidence" => seen.confidence = number_before_slash(v).and_then(|n| n.parse().ok()),
            "ThreatAssess" => seen.score = number_before_slash(v).and_then(|n| n.parse().ok()),
            "tags" => (seen.tags, seen.more_tags) = listed_tags(v),
            "modified" => seen.modified = Some(epoch(v.trim())),
            _ => {}
        }
    }
    seen.tc_id = tc_id?;
    Some(())
}

fn blank(doc: i64, grouped: bool) -> Seen {
    Seen {
        doc,
        grouped,
        title: String::new(),
        kind: String::new(),
        values: BTreeSet::new(),
        owner: String::new(),
        tc_id: 0,
        rating: None,
        confidence: None,
        score: None,
        tags: Vec::new(),
        more_tags: 0,
        modified: None,
        description: None,
        label_set: None,
    }
}

/// Gives `seen` the observables `values`, which must all be of one kind.
fn observables(seen: &mut Seen, values: Vec<(&'static str, String)>) -> Option<()> {
    let kinds: BTreeSet<&str> = values.iter().map(|(k, _)| *k).collect();
    if kinds.len() != 1 {
        return None;
    }
    seen.kind = kinds.into_iter().next()?.to_string();
    seen.values = values.into_iter().map(|(_, v)| v).collect();
    Some(())
}

/// What a document of the app's holds (None: not one the test can read as the app's).
fn read_doc(d: &SimDoc) -> Option<Vec<Seen>> {
    let xml = roxmltree::Document::parse(&d.body).ok()?;
    let root = xml.root_element();
    let root_id = root.attribute("id").unwrap_or("");
    // `tctr:Group-<label set>-b<bits>` / `tc-group-<label set>-b<bits>`
    let label_set = root_id
        .to_ascii_lowercase()
        .split_once("group-")
        .and_then(|(_, rest)| rest.split_once("-b").map(|(l, _)| l.to_string()));
    let mut out = Vec::new();
    match local(&root) {
        "STIX_Package" => {
            let indicators: Vec<roxmltree::Node> = root
                .descendants()
                .filter(|e| e.is_element() && local(e) == "Indicator")
                .filter(|e| {
                    e.parent_element()
                        .is_some_and(|p| local(&p) == "Indicators")
                })
                .collect();
            if root_id.starts_with("tctr:Group-") {
                for ind in indicators
                    .into_iter()
                    .filter(|e| !e.attribute("id").unwrap_or("").contains("indicator-group-"))
                {
                    let mut s = blank(d.id, true);
                    s.label_set = label_set.clone();
                    read_provenance(&mut s, &child(ind, "Description").map(text_of)?)?;
                    s.title = child(ind, "Title").map(text_of)?;
                    observables(&mut s, stix_values(ind))?;
                    out.push(s);
                }
            } else {
                let header = child(root, "STIX_Header")?;
                let mut s = blank(d.id, false);
                read_context(&mut s, &child(header, "Description").map(text_of)?)?;
                s.title = single_title(&d.name);
                observables(&mut s, stix_values(root))?;
                out.push(s);
            }
        }
        "OpenIOC" => {
            let items = ioc_items(root);
            if root_id.starts_with("tc-group-") {
                // Each item's provenance is a param pointing at it; a member is the items that
                // share one provenance line.
                let mut members: BTreeMap<String, Vec<(&'static str, String)>> = BTreeMap::new();
                for p in root
                    .descendants()
                    .filter(|e| e.is_element() && local(e) == "param")
                {
                    let item = items.get(p.attribute("ref-id").unwrap_or(""))?;
                    let line = child(p, "value").map(text_of)?;
                    members.entry(line).or_default().push(item.clone());
                }
                for (line, values) in members {
                    let mut s = blank(d.id, true);
                    s.label_set = label_set.clone();
                    read_provenance(&mut s, &line)?;
                    observables(&mut s, values)?;
                    out.push(s);
                }
            } else {
                let meta = child(root, "metadata")?;
                let mut s = blank(d.id, false);
                read_context(&mut s, &child(meta, "description").map(text_of)?)?;
                s.title = single_title(&d.name);
                observables(&mut s, items.into_values().collect())?;
                out.push(s);
            }
        }
        _ => return None,
    }
    Some(out)
}

/// A document's name without the marker an adopted document's name carries (README:
/// "its name gaining the job's marker").
fn single_title(name: &str) -> String {
    match name.find(" (tc-sync: ") {
        Some(at) => name[..at].to_string(),
        None => name.to_string(),
    }
}

/// The values a document of `i` must show.
fn values_of(i: &Indicator) -> BTreeSet<String> {
    match i.type_name.as_str() {
        "File" => file_hashes(i),
        kind => sent_value(i)
            .map(|v| norm_value(kind, &v))
            .into_iter()
            .collect(),
    }
}

/// Why `s` is not the current document of `i` (None: it is). While detections are reported
/// (`detections`), a document leaves out the score and last modified (README).
fn mismatch(s: &Seen, i: &Indicator, detections: bool) -> Option<String> {
    let differ = |what: &str, held: String, want: String| {
        Some(format!("{what} is {held:?}, TC says {want:?}"))
    };
    if s.title != expected_name(i).unwrap_or_default() {
        return differ(
            "the name",
            s.title.clone(),
            expected_name(i).unwrap_or_default(),
        );
    }
    if s.kind != i.type_name || s.values != values_of(i) {
        return differ(
            "the observable",
            format!("{} {:?}", s.kind, s.values),
            format!("{} {:?}", i.type_name, values_of(i)),
        );
    }
    if akey(&s.owner) != akey(&i.owner_name) {
        return differ("the owner", s.owner.clone(), i.owner_name.clone());
    }
    if s.tc_id != i.id {
        return differ("the TC id", s.tc_id.to_string(), i.id.to_string());
    }
    if s.rating != i.rating {
        return differ(
            "the rating",
            format!("{:?}", s.rating),
            format!("{:?}", i.rating),
        );
    }
    if s.confidence != i.confidence {
        return differ(
            "the confidence",
            format!("{:?}", s.confidence),
            format!("{:?}", i.confidence),
        );
    }
    let score = (!detections).then(|| i.threat_assess_score.unwrap_or(0));
    if s.score != score {
        return differ("the score", format!("{:?}", s.score), format!("{score:?}"));
    }
    let want: BTreeSet<String> = i
        .tags
        .iter()
        .map(|t| akey(t))
        .filter(|t| !t.is_empty())
        .collect();
    let listed: BTreeSet<String> = s.tags.iter().map(|t| akey(t)).collect();
    let tags_ok = if s.more_tags == 0 {
        listed == want
    } else {
        listed.is_subset(&want) && listed.len() + s.more_tags >= want.len()
    };
    if !tags_ok {
        return differ("the tags", format!("{:?}", s.tags), format!("{:?}", i.tags));
    }
    let modified = (!detections).then(|| epoch(&i.last_modified));
    if s.modified != modified {
        return differ(
            "last modified",
            format!("{:?}", s.modified),
            i.last_modified.clone(),
        );
    }
    if !s.grouped {
        let tc = i.description.as_deref().unwrap_or("").trim();
        let held = akey(s.description.as_deref().unwrap_or(""));
        // Long descriptions are cut (README: trimmed), so the document holds the start.
        let ok = held == akey(tc) || (tc.chars().count() > 1000 && akey(tc).starts_with(&held));
        if !ok || (tc.is_empty() != s.description.is_none()) {
            return differ(
                "the description",
                s.description.clone().unwrap_or_default(),
                tc.to_string(),
            );
        }
    }
    None
}

/// Differences between the app's source and what it must hold, by TC id.
#[derive(Debug, Default)]
struct Diff {
    /// Indicators without a current document (missing, or stale content).
    undelivered: Vec<i64>,
    /// Why, for those that have a document.
    stale: BTreeMap<i64, String>,
    /// Indicators held that must not be.
    extra: Vec<i64>,
    /// Indicators held more than once.
    duplicated: Vec<i64>,
    /// The documents holding them beyond the first (by Tanium id).
    duplicate_docs: BTreeSet<i64>,
}

fn diff(t: &Target, obs: &Observed) -> Diff {
    let by_id = obs.holders();
    let mut out = Diff::default();
    let candidates: BTreeSet<i64> = by_id
        .keys()
        .filter(|id| t.current.contains(id))
        .chain(&t.wanted)
        .copied()
        .collect();
    for id in candidates {
        let i = &t.eligible[&id];
        match by_id.get(&id) {
            None => out.undelivered.push(id),
            Some(held) if held.iter().any(|s| mismatch(s, i, t.detections).is_none()) => {}
            Some(held) => {
                out.undelivered.push(id);
                out.stale
                    .insert(id, mismatch(held[0], i, t.detections).unwrap_or_default());
            }
        }
    }
    for (id, held) in &by_id {
        if !t.allowed.contains(id) {
            out.extra.push(*id);
        }
        if held.len() > 1 {
            out.duplicated.push(*id);
            let docs: BTreeSet<i64> = held.iter().map(|s| s.doc).collect();
            out.duplicate_docs.extend(docs.into_iter().skip(1));
        }
    }
    out
}
// ---------------------------------------------------------------------------------------------
// Another integration's documents in the job's source (Take Over Source)
// ---------------------------------------------------------------------------------------------

/// (kind, value): an item of a document, or what it covers.
type Covered = (&'static str, String);

/// A document chaos put in the app's source as another integration would, and the values it
/// covers: (kind, normalised value).
#[derive(Debug, Clone)]
struct Planted {
    doc: i64,
    covers: Vec<Covered>,
}

/// An OpenIOC 1.0 document as an earlier integration wrote them: its own ids, one OR of items.
fn legacy_ioc(id: &str, items: &[(&str, String)]) -> String {
    let items: String = items
        .iter()
        .enumerate()
        .map(|(n, (search, v))| {
            format!(
                r#"<IndicatorItem id="{id}-i{n}" condition="is"><Context document="X" search="{search}" type="mir"/><Content type="string">{v}</Content></IndicatorItem>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?><ioc xmlns="http://schemas.mandiant.com/2010/ioc" id="{id}"><short_description>legacy {id}</short_description><definition><Indicator operator="OR" id="{id}-or">{items}</Indicator></definition></ioc>"#
    )
}

/// The item an earlier integration wrote for `i` (a File by its MD5), and what it covers.
fn legacy_item(i: &Indicator) -> Option<(Covered, Covered)> {
    let kind: &'static str = match i.type_name.as_str() {
        "Address" => "Address",
        "Host" => "Host",
        "File" => "File",
        _ => return None,
    };
    let (search, raw) = match kind {
        "Address" => ("PortItem/remoteIP", i.ip.clone()?),
        "Host" => ("Network/DNS", i.host_name.clone()?),
        _ => ("FileItem/Md5sum", i.md5.clone()?),
    };
    let value = match kind {
        "File" => raw.trim().to_ascii_lowercase(),
        _ => norm_value(kind, &sent_value(i)?),
    };
    Some(((search, raw), (kind, value)))
}

/// Puts documents of another integration in the app's source: some cover exactly one value TC
/// holds, one covers two, one a value TC does not have, sometimes two cover the same value,
/// sometimes one is no intel the job knows at all.
fn plant(rng: &mut Rng, lab: &Lab, next: &mut u32) -> Vec<Planted> {
    let source = lab
        .tanium
        .source_id(APP_SOURCE)
        .unwrap_or_else(|| lab.tanium.add_source(APP_SOURCE));
    let snapshot = lab.tc.snapshot();
    let candidates: Vec<&Indicator> = snapshot
        .iter()
        .filter(|i| expected_name(i).is_some() && legacy_item(i).is_some())
        .collect();
    let mut out = Vec::new();
    let mut add = |items: Vec<Covered>, covers: Vec<Covered>| {
        *next += 1;
        let id = format!("legacy-{next}");
        let doc = lab.tanium.add_doc(
            source,
            &format!("legacy indicator {next}"),
            &legacy_ioc(&id, &items),
        );
        out.push(Planted { doc, covers });
    };
    if candidates.is_empty() {
        return out;
    }
    for _ in 0..1 + rng.below(4) {
        let (item, covers) = legacy_item(candidates[rng.below(candidates.len() as u64) as usize])
            .unwrap_or_default();
        add(vec![item], vec![covers]);
    }
    let (a, ca) =
        legacy_item(candidates[rng.below(candidates.len() as u64) as usize]).unwrap_or_default();
    let (b, cb) =
        legacy_item(candidates[rng.below(candidates.len() as u64) as usize]).unwrap_or_default();
    if ca != cb {
        add(vec![a, b], vec![ca, cb]);
    }
    add(
        vec![("PortItem/remoteIP", "203.0.113.250".into())],
        vec![("Address", "203.0.113.250".into())],
    );
    if chance(rng, 40) {
        let (item, covers) = legacy_item(candidates[rng.below(candidates.len() as u64) as usize])
            .unwrap_or_default();
        add(vec![item.clone()], vec![covers.clone()]);
        add(vec![item], vec![covers]);
    }
    if chance(rng, 30) {
        *next += 1;
        let doc = lab.tanium.add_doc(
            source,
            &format!("legacy rule {next}"),
            &format!("rule legacy_{next} {{ condition: true }}"),
        );
        out.push(Planted {
            doc,
            covers: Vec::new(),
        });
    }
    out
}

/// What a document of another integration must become in a run that takes the source over.
#[derive(Debug, PartialEq)]
enum Fate {
    /// Adopted in place as the only document of this TC id.
    Adopted(i64),
    Gone,
    /// An indicator it covers changed while the run worked (or the run was held to no exact
    /// set): either way.
    Unsure,
}

/// README: one that covers exactly one indicator the job sends (and no other document of
/// another integration covers the same) is adopted; the rest go; grouped, none is adopted.
fn fate(
    p: &Planted,
    present: &[Planted],
    t: &Target,
    snapshot: &[Indicator],
    racing: &BTreeSet<i64>,
    grouped: bool,
) -> Fate {
    if !t.exact {
        return Fate::Unsure;
    }
    if grouped || p.covers.len() != 1 {
        return Fate::Gone;
    }
    let value = &p.covers[0];
    let rivals = present
        .iter()
        .filter(|q| q.covers.len() == 1 && q.covers[0] == *value)
        .count();
    if rivals > 1 {
        return Fate::Gone;
    }
    let covered: Vec<&Indicator> = snapshot
        .iter()
        .filter(|i| legacy_item(i).is_some_and(|(_, c)| &c == value))
        .collect();
    if covered.iter().any(|i| racing.contains(&i.id)) {
        return Fate::Unsure;
    }
    match covered.iter().find(|i| t.wanted.contains(&i.id)) {
        Some(i) => Fate::Adopted(i.id),
        None => Fate::Gone,
    }
}

// ---------------------------------------------------------------------------------------------
// Checks on messages and logs
// ---------------------------------------------------------------------------------------------

fn count_in(message: &str, word: &str) -> Option<u64> {
    let at = message.find(&format!(" {word}"))?;
    let digits: String = message[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The N of "held back N removals".
fn held_back_in(message: &str) -> Option<u64> {
    let at = message.find("held back ")?;
    let digits: String = message[at + "held back ".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The count before `word` in the log's last "run finished" line (the run's tally).
fn tally_in_log(log: &str, word: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("run finished in "))?;
    count_in(line, word)
}

/// Every document holding one of `ids`.
fn holder_docs(obs: &Observed, ids: &[i64]) -> BTreeSet<i64> {
    obs.seen
        .iter()
        .filter(|s| ids.contains(&s.tc_id))
        .map(|s| s.doc)
        .collect()
}

/// "N writes and M removals failed" of the log's last "run finished" line.
fn failed_in_log(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains("run finished in "))?;
    let at = line.find(" writes and ")?;
    let writes = count_in(&line[..at + " writes".len()], "writes")?;
    let rest = &line[at + " writes and ".len()..];
    let removals: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((writes, removals.parse().ok()?))
}

const SECRETS: [&str; 3] = ["sim-secret-key", "s3cret!", LAB_PARAM_KEY];

const STOOD_DOWN: &str = "Another run of this job is writing to Tanium source ";

/// The documents holding the first few of `ids`: Tanium id, name, kind, revision.
fn holders_of(obs: &Observed, ids: &[i64]) -> String {
    let holders = obs.holders();
    ids.iter()
        .take(2)
        .flat_map(|id| holders.get(id).into_iter().flatten())
        .filter_map(|s| obs.docs.get(&s.doc))
        .map(|d| format!("{} {:?} {} rev {}", d.id, d.name, d.kind, d.revision_id))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe(ids: &[i64], snapshot: &[Indicator], obs: &Observed) -> String {
    ids.iter()
        .take(4)
        .map(|id| match snapshot.iter().find(|i| i.id == *id) {
            Some(i) => format!("{} {} (TC id {id})", i.type_name, i.summary),
            None => obs
                .seen
                .iter()
                .find(|s| s.tc_id == *id)
                .map_or(format!("TC id {id}"), |s| {
                    format!("{} (TC id {id}, deleted)", s.title)
                }),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// One seed
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Stats {
    runs: u64,
    killed: u64,
    faults: BTreeMap<&'static str, u64>,
    expiries: u64,
    codes: BTreeMap<i32, u64>,
    mutations: u64,
    mid_run_mutations: u64,
    job_changes: u64,
    duplicates_seen: u64,
    /// What the mix made happen: seeds with a setting drawn, runs held back, documents
    /// adopted, runs started together, what the round-2 switches did, ...
    mix: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.runs += o.runs;
        self.killed += o.killed;
        self.expiries += o.expiries;
        self.mutations += o.mutations;
        self.mid_run_mutations += o.mid_run_mutations;
        self.job_changes += o.job_changes;
        self.duplicates_seen += o.duplicates_seen;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in &o.codes {
            *self.codes.entry(*k).or_default() += v;
        }
        for (k, v) in &o.mix {
            *self.mix.entry(k).or_default() += v;
        }
    }

    fn saw(&mut self, what: &'static str) {
        self.saw_n(what, 1);
    }

    fn saw_n(&mut self, what: &'static str, n: u64) {
        if n > 0 {
            *self.mix.entry(what).or_default() += n;
        }
    }

    fn total_faults(&self) -> u64 {
        self.faults.values().sum::<u64>() + self.expiries + self.killed
    }
}

fn server(lab: &Lab, side: Side) -> &Server {
    match side {
        Side::Tc => lab.tc.server(),
        Side::Tanium => lab.tanium.server(),
    }
}

fn writes(lab: &Lab, g: ApiGeneration) -> u64 {
    let base = g.base_path();
    let s = lab.tanium.server();
    s.hits(&format!("POST {base}/sources/"))
        + s.hits(&format!("PUT {base}/intels"))
        + s.hits(&format!("DELETE {base}/intels"))
}

struct Outcome {
    result: RunResult,
    /// The other run of two started together.
    other: Option<RunResult>,
    killed: bool,
    requests: u64,
}

fn run_with(
    lab: &mut Lab,
    plan: &Plan,
    stats: &mut Stats,
    during: &mut dyn FnMut(&Lab),
) -> Result<Outcome, String> {
    let base_tc = lab.tc.server().total_requests();
    let base_ta = lab.tanium.server().total_requests();
    if plan.together {
        let mut runs = lab
            .run_together(&[Map::new(), Map::new()])
            .map_err(|e| format!("cannot start the binary: {e}"))?;
        if !lab.quiesce(Duration::from_secs(60)) {
            return Err("the simulators still serve connections a minute after the runs".into());
        }
        // The run that wrote is the one checked; the other stood down or ran after it.
        let stood = runs.iter().position(|r| r.message.starts_with(STOOD_DOWN));
        let other = runs.remove(stood.unwrap_or(0));
        let requests = lab.tc.server().total_requests() - base_tc
            + lab.tanium.server().total_requests()
            - base_ta;
        return Ok(Outcome {
            result: runs.remove(0),
            other: Some(other),
            killed: false,
            requests,
        });
    }
    for p in &plan.faults {
        server(lab, p.side).inject(p.rule.clone());
    }
    let mut running = lab
        .start_run(&Map::new(), &[])
        .map_err(|e| format!("cannot start the binary: {e}"))?;
    let mut expired = false;
    let mut mutated = false;
    let mut killed = false;
    let started = Instant::now();
    loop {
        if running.has_exited().map_err(|e| e.to_string())? {
            break;
        }
        let ta = lab.tanium.server().total_requests() - base_ta;
        let all = ta + lab.tc.server().total_requests() - base_tc;
        if let Some(k) = plan.mutate_at {
            if !mutated && all - ta >= k {
                during(lab);
                mutated = true;
            }
        }
        if let Some(k) = plan.expire_at {
            if !expired && ta >= k {
                lab.tanium.expire_sessions();
                expired = true;
                stats.expiries += 1;
            }
        }
        if plan.kill_at.is_some_and(|k| all >= k) {
            running.kill().map_err(|e| e.to_string())?;
            killed = true;
            stats.killed += 1;
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = running.kill();
            return Err("the run did not end within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let result = lab.finish(running).map_err(|e| e.to_string())?;
    if !lab.quiesce(Duration::from_secs(60)) {
        return Err("the simulators still serve connections a minute after the run".into());
    }
    let requests =
        lab.tc.server().total_requests() - base_tc + lab.tanium.server().total_requests() - base_ta;
    Ok(Outcome {
        result,
        other: None,
        killed,
        requests,
    })
}

/// The round-2 simulator switches a seed drew, for the checks that depend on them.
#[derive(Debug, Clone, Copy)]
struct Round2 {
    /// Listing rows carry TR's intel health fields (4.x).
    health_listed: bool,
    /// Filler labels made before the job's, so its label is past the first page of 100.
    labels_capped: bool,
    deploy_ms: u64,
    /// Tanium reads a STIX document's intrinsic id from its first indicator.
    stix_first_indicator: bool,
}

fn seed_lab(
    seed: u64,
    dir: &Path,
    grouped: bool,
) -> Result<(Lab, Job, ApiGeneration, Rng, Round2), String> {
    let mut rng = Rng::new(seed);
    let generation = if chance(&mut rng, 50) {
        ApiGeneration::V4
    } else {
        ApiGeneration::V3
    };
    let mut lab = Lab::start(dir, &app_binary(), generation).map_err(|e| e.to_string())?;
    let now = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let size = 30 + rng.below(150) as usize;
    lab.tc.load(dataset::generate_at(size, rng.next_u64(), now));
    if chance(&mut rng, 40) {
        lab.tc.load(dataset::hostile());
    }
    let mut job = Job::random(&mut rng, &lab.tc.snapshot());
    if grouped {
        job.per_document = *pick(&mut rng, &[3, 10, 40, 500]);
    }
    lab.set("http_timeout_secs", json!(TIMEOUT_SECS.to_string()));
    if let Ok(level) = std::env::var("CHAOS_LOG") {
        lab.set("tc_log_level", json!(level));
    }
    lab.set("tanium_workers", json!((1 + rng.below(8)).to_string()));
    lab.set("tc_page_size", json!((5 + rng.below(60)).to_string()));
    // Under a cap only a full reconcile says exactly which indicators are held.
    if chance(&mut rng, if job.max_indicators.is_some() { 50 } else { 25 }) {
        lab.set("reconcile_interval_hours", json!("0"));
    }
    lab.persist_on_partial = chance(&mut rng, 70);
    lab.tanium.set_honour_source_filter(chance(&mut rng, 50));
    lab.tanium.set_ids_as_strings(chance(&mut rng, 20));
    // What real servers may do where the recorded evidence is silent: each way, at random.
    let stix_first_indicator = !chance(&mut rng, 50);
    lab.tanium.set_intrinsic_from(if stix_first_indicator {
        IntrinsicFrom::FirstIndicator
    } else {
        IntrinsicFrom::PackageRoot
    });
    lab.tanium.set_reserialise(chance(&mut rng, 30));
    lab.tanium.set_delete_reply_text(chance(&mut rng, 20));
    lab.tanium
        .set_other_generation_status(*pick(&mut rng, &[404, 403, 500]));
    lab.tc.set_ids_as_strings(chance(&mut rng, 20));
    // Whether two sources may share a name and whether sources can be deleted (the run lease),
    // drawn from a stream of their own so each seed's other choices stay as they were.
    let mut lease_rng = Rng::new(seed ^ 0x1EA5E);
    lab.tanium
        .set_duplicate_source_names(chance(&mut lease_rng, 50));
    if chance(&mut lease_rng, 20) {
        lab.tanium
            .set_source_delete_status(Some(*pick(&mut lease_rng, &[404, 405])));
    }

    // Someone else's source: a copy of one of our documents (same intrinsic id), other intel,
    // and sometimes enough documents that the listing spans several pages.
    let foreign = lab.tanium.add_source(FOREIGN_SOURCE);
    let sample: Vec<Indicator> = lab.tc.snapshot().into_iter().take(3).collect();
    for i in &sample {
        if let Ok(p) = intel::render(i, job.format()) {
            lab.tanium.add_doc(foreign, &p.name, &p.body);
        }
    }
    lab.tanium
        .add_doc(foreign, "analyst rule", "rule analyst { condition: true }");
    if chance(&mut rng, 35) {
        for n in 0..(400 + rng.below(700)) {
            lab.tanium
                .add_doc(foreign, &format!("bulk {n}"), &format!("rule r{n} {{}}"));
        }
    }
    // What the second batch of recordings showed (labels paged by the server, deploys that
    // are tasks running for a while, TR disabling noisy intel), and where they are silent
    // (meta.totalCount on these listings, health fields in listing rows, the 400 to a deploy,
    // a progress field in the status): each way at random.
    let labels_capped = chance(&mut rng, 40);
    if labels_capped {
        for n in 0..(100 + rng.below(150)) {
            lab.tanium
                .add_label(&format!("Threat Response label {n:03}"));
        }
    }
    lab.tanium.set_labels_no_limit(chance(&mut rng, 50));
    lab.tanium.set_list_meta(chance(&mut rng, 40));
    let health_listed = chance(&mut rng, 80);
    lab.tanium.set_health_listed(health_listed);
    let deploy_ms = *pick(&mut rng, &[0u64, 0, 30, 300, 1500]);
    lab.tanium
        .set_deploy_duration(Some(Duration::from_millis(deploy_ms)));
    lab.tanium
        .set_refuse_deploy_while_running(chance(&mut rng, 80));
    lab.tanium.set_status_reports_deploy(chance(&mut rng, 20));
    let round2 = Round2 {
        health_listed,
        labels_capped,
        deploy_ms,
        stix_first_indicator,
    };
    Ok((lab, job, generation, rng, round2))
}

impl Job {
    fn format(&self) -> intel::Format {
        if self.openioc {
            intel::Format::OpenIoc
        } else {
            intel::Format::Stix
        }
    }
}

/// TR between runs: turns noisy documents of the job's off (everywhere or on some endpoints)
/// and now and then on again, an admin starts a deploy in the console (finished by the next
/// run's start) or takes one of the job's own labels off a document by hand (which document
/// and label: `by_hand`). What it did, for the stats.
fn threat_response_acts(
    rng: &mut Rng,
    lab: &Lab,
    job: &Job,
    console: &mut bool,
    stats: &mut Stats,
    by_hand: &mut BTreeMap<i64, String>,
) {
    if std::mem::take(console) {
        lab.tanium.finish_deploys();
    }
    if chance(rng, 10) {
        lab.tanium.start_console_deploy();
        *console = true;
        stats.saw("console deploys started");
    }
    let docs = lab.source_docs();
    if docs.is_empty() {
        return;
    }
    if chance(rng, 20) {
        for _ in 0..1 + rng.below(2) {
            let d = pick(rng, &docs);
            let everywhere = chance(rng, 50);
            lab.tanium.set_doc_health(
                d.id,
                DocHealth {
                    disabled: everywhere,
                    disabled_endpoints: 1 + rng.below(900),
                    throttled_findings: rng.below(50),
                },
            );
            stats.saw("documents disabled by TR");
        }
    }
    if chance(rng, 10) {
        let d = pick(rng, &docs);
        lab.tanium.set_doc_health(d.id, DocHealth::default());
    }
    // The job's own labels come back at the next run, even one that meets no document.
    let own = job
        .labels
        .clone()
        .unwrap_or_else(|| vec!["ThreatConnect".to_string()]);
    if chance(rng, 8) && !own.is_empty() {
        let d = pick(rng, &docs);
        let name = pick(rng, &own).to_lowercase();
        let label = lab
            .tanium
            .labels()
            .into_iter()
            .find(|l| l.name.to_lowercase() == name);
        if let Some(l) = label.filter(|l| d.label_ids.contains(&l.id)) {
            lab.tanium.unlabel_doc(d.id, l.id);
            by_hand.insert(d.id, name);
            stats.saw("job labels taken off by hand");
            if std::env::var_os("CHAOS_VERBOSE").is_some() {
                eprintln!("label {:?} taken off document {} by hand", l.name, d.id);
            }
        }
    }
}

fn counted(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// What of a document another integration wrote must stay as it was while the job leaves it
/// alone (TR's own health flags may change).
fn untouched(d: &SimDoc) -> (String, String, i64, Vec<i64>) {
    (
        d.name.clone(),
        d.body.clone(),
        d.revision_id,
        d.label_ids.clone(),
    )
}

// ---------------------------------------------------------------------------------------------
// Report Tanium Detections: alerts raised between runs, faults on their read and on the TC
// writes, and the test's own account of what TC may count
// ---------------------------------------------------------------------------------------------

/// One alert chaos raised, and which indicator it must be credited to, as the test reads the
/// document it names (None: it must never be credited: another source's document, no document
/// at all, unreadable details, or a grouped value two members share). Alerts on another
/// integration's documents in the job's source are left out: taken over later, such a
/// document becomes the job's.
#[derive(Debug, Clone)]
struct Raised {
    target: Option<i64>,
    doc: i64,
    grouped: bool,
    /// The document's revision when the alert was raised.
    revision: i64,
    /// Raised while reporting was on, and it stayed on since.
    on_since: bool,
}

/// The detections part of a seed, drawn from a stream of its own (so seeds without it run as
/// before). What TC counts is checked after every run: never more observations of an
/// indicator than alerts raised on it, plus what the documented window allows (README, *Exactly
/// once, and what is left*): the observations of a run whose results were not kept (killed,
/// exit 1, exit 3 dropped by the platform), of two runs started together that both synced, and
/// of a write the log says may count twice. After the final fault-free runs, every alert raised
/// while reporting was on, on a document that is still there as it was, is counted.
struct Detections {
    rng: Rng,
    raised: Vec<Raised>,
    /// Observations TC may count beyond the alerts raised, by TC id.
    extra: BTreeMap<i64, i64>,
    /// TC's counts after the last run.
    counted: BTreeMap<i64, i64>,
    /// The job ever reported detections in this seed.
    used: bool,
}

impl Detections {
    fn new(seed: u64) -> Detections {
        Detections {
            rng: Rng::new(seed ^ 0xDE7E_C7ED),
            raised: Vec::new(),
            extra: BTreeMap::new(),
            counted: BTreeMap::new(),
            used: false,
        }
    }

    /// Whether this seed reports detections, and whether TC moves an indicator's lastModified
    /// when it counts an observation (unconfirmed; not with an age window, which would then
    /// take the indicator in).
    fn start(&mut self, job: &mut Job, lab: &Lab, stats: &mut Stats) {
        job.detections = chance(&mut self.rng, 40);
        self.used = job.detections;
        lab.tc
            .set_observation_moves_last_modified(chance(&mut self.rng, 50));
        if job.detections {
            stats.saw("seeds reporting detections");
        }
    }

    /// Between runs: now and then the admin switches reporting; endpoints raise alerts on the
    /// job's documents and on others.
    fn between_runs(&mut self, job: &mut Job, lab: &mut Lab, stats: &mut Stats) {
        if chance(&mut self.rng, 4) {
            job.detections = !job.detections;
            job.apply(lab);
            if !job.detections {
                for r in &mut self.raised {
                    r.on_since = false;
                }
            }
            self.used |= job.detections;
            stats.saw("Report Tanium Detections switched");
        }
        if job.max_age_days.is_some() {
            lab.tc.set_observation_moves_last_modified(false);
        }
        if !self.used {
            return;
        }
        let obs = observe(lab);
        let foreign: Vec<i64> = foreign_docs(lab).iter().map(|d| d.id).collect();
        for _ in 0..self.rng.below(5) {
            let (doc, target, grouped, spec) = match self.rng.below(10) {
                0..=6 if !obs.seen.is_empty() => {
                    let s = pick(&mut self.rng, &obs.seen).clone();
                    if !s.grouped {
                        (s.doc, Some(s.tc_id), false, AlertSpec::on(s.doc, json!({})))
                    } else if chance(&mut self.rng, 10) {
                        let spec = AlertSpec {
                            raw_details: Some("{\"match\": ".into()),
                            ..AlertSpec::on(s.doc, json!({}))
                        };
                        (s.doc, None, true, spec)
                    } else {
                        let value = s.values.iter().next().cloned().unwrap_or_default();
                        // A value two members of the document share names neither; and by the
                        // time a run reads the alert, another indicator of that value may be
                        // the document's member instead: it may be credited once.
                        let shared = obs
                            .seen
                            .iter()
                            .filter(|o| o.doc == s.doc && o.values.contains(&value))
                            .count()
                            > 1;
                        for i in lab.tc.snapshot() {
                            if i.id != s.tc_id && values_of(&i).contains(&value) {
                                *self.extra.entry(i.id).or_default() += 1;
                            }
                        }
                        if shared {
                            *self.extra.entry(s.tc_id).or_default() += 1;
                        }
                        let target = (!shared).then_some(s.tc_id);
                        (
                            s.doc,
                            target,
                            true,
                            AlertSpec::on(s.doc, json!({ "value": value })),
                        )
                    }
                }
                7 | 8 if !foreign.is_empty() => {
                    let doc = *pick(&mut self.rng, &foreign);
                    (doc, None, false, AlertSpec::on(doc, json!({})))
                }
                _ => (9_000_000, None, false, AlertSpec::on(9_000_000, json!({}))),
            };
            lab.tanium.raise_alert(spec);
            let revision = obs.docs.get(&doc).map_or(0, |d| d.revision_id);
            self.raised.push(Raised {
                target,
                doc,
                grouped,
                revision,
                on_since: job.detections,
            });
            stats.saw("alerts raised");
        }
    }

    /// Faults on the alerts read and on the observation writes, for a run that reports.
    fn faults(&mut self, job: &Job, generation: ApiGeneration) -> Vec<Planned> {
        if !job.detections {
            return Vec::new();
        }
        let base = generation.base_path();
        let mut out = Vec::new();
        for _ in 0..self.rng.below(3) {
            let (side, method, prefix, fault, kind, count) = match self.rng.below(6) {
                0 => {
                    let (f, _) = status_fault(&mut self.rng);
                    let most = if chance(&mut self.rng, 15) { 6 } else { 2 };
                    let c = 1 + self.rng.below(most) as u32;
                    (
                        Side::Tanium,
                        "GET",
                        format!("{base}/alerts"),
                        f,
                        "alerts read refused",
                        c,
                    )
                }
                1 => (
                    Side::Tanium,
                    "GET",
                    format!("{base}/alerts"),
                    pick(
                        &mut self.rng,
                        &[Fault::Drop, Fault::TruncateBody, Fault::Garbage],
                    )
                    .clone(),
                    "alerts read broken",
                    1,
                ),
                2 | 3 => {
                    let (f, _) = status_fault(&mut self.rng);
                    let most = if chance(&mut self.rng, 15) { 6 } else { 2 };
                    let c = 1 + self.rng.below(most) as u32;
                    (
                        Side::Tc,
                        "PUT",
                        "/api/v3/indicators/".to_string(),
                        f,
                        "observation write refused",
                        c,
                    )
                }
                _ => (
                    Side::Tc,
                    "PUT",
                    "/api/v3/indicators/".to_string(),
                    if chance(&mut self.rng, 50) {
                        Fault::DropAfterHandling
                    } else {
                        Fault::Drop
                    },
                    "observation write answer lost",
                    1 + self.rng.below(2) as u32,
                ),
            };
            let rule =
                FaultRule::new(Some(method), &prefix, count, fault).after(self.rng.below(3) as u32);
            out.push(Planned { side, rule, kind });
        }
        out
    }

    /// After a run: what TC counted is within what the alerts and the window allow. `kept`:
    /// the platform keeps this run's results; `both_synced`: two runs started together both
    /// got past the lease.
    fn after_run(
        &mut self,
        lab: &Lab,
        runs: &[&RunResult],
        kept: bool,
        both_synced: bool,
        stats: &mut Stats,
    ) -> Result<(), String> {
        let now = lab.tc.observed();
        let alive: BTreeSet<i64> = lab.tc.snapshot().iter().map(|i| i.id).collect();
        let mut delta: BTreeMap<i64, i64> = BTreeMap::new();
        for (id, n) in &now {
            let d = n - self.counted.get(id).copied().unwrap_or(0);
            if d > 0 {
                delta.insert(*id, d);
            }
        }
        stats.saw_n("observations reported", delta.values().sum::<i64>() as u64);
        if !kept || both_synced {
            for (id, d) in &delta {
                *self.extra.entry(*id).or_default() += d;
            }
            stats.saw_n(
                "observations a later run may repeat (results not kept, or two runs at once)",
                delta.values().sum::<i64>() as u64,
            );
        }
        for r in runs {
            for line in r
                .log
                .lines()
                .filter(|l| l.contains("for indicator ") && l.contains("may count "))
            {
                let id = line
                    .split("for indicator ")
                    .nth(1)
                    .and_then(|s| s.split(' ').next())
                    .and_then(|s| s.parse::<i64>().ok());
                let n = line
                    .split("may count ")
                    .nth(1)
                    .and_then(|s| s.split(' ').next())
                    .and_then(|s| s.parse::<i64>().ok());
                match (id, n) {
                    (Some(id), Some(n)) => {
                        *self.extra.entry(id).or_default() += n;
                        stats.saw("observation writes the log says may count twice");
                    }
                    _ => return Err(format!("an unreadable 'may count twice' line: {line}")),
                }
            }
        }
        let mut raised: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &self.raised {
            if let Some(t) = r.target {
                *raised.entry(t).or_default() += 1;
            }
        }
        for (id, n) in &now {
            // TC forgets the counts of an indicator it deletes.
            if !alive.contains(id) {
                continue;
            }
            let allowed =
                raised.get(id).copied().unwrap_or(0) + self.extra.get(id).copied().unwrap_or(0);
            if *n > allowed {
                return Err(format!(
                    "TC counts {n} observations of indicator {id}, but {} alerts name it and the documented window allows {} more: an alert was reported twice outside it, or credited to the wrong indicator",
                    raised.get(id).copied().unwrap_or(0),
                    self.extra.get(id).copied().unwrap_or(0)
                ));
            }
        }
        self.counted = now;
        Ok(())
    }

    /// After the final fault-free runs: every alert raised while reporting was on (and stayed
    /// on), on a document of the job's that is still there as it was, holding an indicator TC
    /// still has, was counted.
    fn at_the_end(&self, lab: &Lab, obs: &Observed) -> Result<(), String> {
        let alive: BTreeSet<i64> = lab.tc.snapshot().iter().map(|i| i.id).collect();
        let mut must: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &self.raised {
            let Some(t) = r.target else { continue };
            let Some(doc) = obs.docs.get(&r.doc) else {
                continue;
            };
            let holds = obs.seen.iter().any(|s| s.doc == r.doc && s.tc_id == t);
            let as_it_was = !r.grouped || doc.revision_id == r.revision;
            if r.on_since && holds && as_it_was && alive.contains(&t) {
                *must.entry(t).or_default() += 1;
            }
        }
        let counted = lab.tc.observed();
        for (id, n) in &must {
            let c = counted.get(id).copied().unwrap_or(0);
            if c < *n {
                return Err(format!(
                    "{n} alerts on indicator {id} were raised while Report Tanium Detections was on, its document is still there, yet TC counts {c}: an alert was lost"
                ));
            }
        }
        Ok(())
    }
}

fn run_seed(seed: u64, runs: u64, grouped: bool) -> Result<Stats, String> {
    let mut tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    if std::env::var_os("CHAOS_KEEP").is_some() {
        tmp.disable_cleanup(true);
        eprintln!("seed {seed}: run folders in {}", tmp.path().display());
    }
    let (mut lab, mut job, generation, mut rng, r2) = seed_lab(seed, tmp.path(), grouped)?;
    let mut stats = Stats::default();
    if r2.labels_capped {
        stats.saw("seeds with the job's label past the first page");
    }
    if r2.deploy_ms >= 300 {
        stats.saw("seeds with deploys of 300 ms or more");
    }
    // Another integration's documents in the job's source, and whether the job takes the
    // source over; from a stream of their own.
    let mut plant_rng = Rng::new(seed ^ 0x7A4E_0FE5);
    let mut legacy = 0u32;
    let mut planted: Vec<Planted> = Vec::new();
    if chance(&mut plant_rng, 30) {
        planted = plant(&mut plant_rng, &lab, &mut legacy);
        job.take_over = chance(&mut plant_rng, 60);
        stats.saw("seeds with another integration's documents in the source");
    } else {
        job.take_over = chance(&mut plant_rng, 10);
    }
    let mut rails_rng = Rng::new(seed ^ 0x7C4A_11E5);
    let mut tc = tc_knows(&mut rails_rng, &lab, &mut job, &mut stats);
    let mut det = Detections::new(seed);
    det.start(&mut job, &lab, &mut stats);
    job.apply(&mut lab);
    for (on, what) in [
        (job.tql.is_some(), "seeds with TQL"),
        (!job.never_send.is_empty(), "seeds with Never Send"),
        (
            job.max_indicators.is_some(),
            "seeds with Maximum Indicators",
        ),
        (
            job.max_age_days.is_some(),
            "seeds with Maximum Indicator Age",
        ),
        (job.labels.is_some(), "seeds with other Tanium Labels"),
        (!job.tags_as_labels.is_empty(), "seeds with Tags as Labels"),
        (job.threatassess_labels, "seeds with ThreatAssess Labels"),
        (job.disabled_label, "seeds with Disabled Intel Label"),
        (job.take_over, "seeds with Take Over Source on"),
        (!job.deploy, "seeds with Deploy Intel off"),
        (
            job.removal_percent.is_some(),
            "seeds with a strict removal guard",
        ),
    ] {
        if on {
            stats.saw(what);
        }
    }
    let mut console = false;
    let mut first_fault_free_dropped = false;
    let mut world = World {
        next_id: 500_000,
        new_owners: 0,
        deleted: HashMap::new(),
    };
    let foreign_before = foreign_docs(&lab);
    let mut last_requests = 60;
    // A run the app saw through changed the source but no deploy followed yet (4.x only).
    let mut deploy_owed = false;
    // What an exit-0 run left duplicated (TC ids, extra documents), for the next run that
    // completes its writes to remove and count.
    let mut pending_dups: Option<(Vec<i64>, BTreeSet<i64>)> = None;
    // Maximum Removal Percent before the admin raised it for a held-back run.
    let mut raised_from: Option<Option<u32>> = None;
    // Labels of the job's taken off documents by hand, not yet seen back: document -> label.
    let mut by_hand: BTreeMap<i64, String> = BTreeMap::new();
    let seed_started = now_secs();
    let mut last_run_started = seed_started;
    let total_runs = runs + 2;
    for run in 0..total_runs {
        let fault_free = run >= runs;
        let ctx = |msg: String| format!("seed {seed} run {run}: {msg}");
        if fault_free && run == runs {
            // Nothing keeps the owed deploy from the fault-free runs.
            lab.tanium.finish_deploys();
            lab.tanium.set_deploy_duration(Some(Duration::ZERO));
            console = false;
            // Under a cap only a full reconcile says exactly which indicators are held.
            if job.max_indicators.is_some() {
                lab.set("reconcile_interval_hours", json!("0"));
            }
        }
        if !fault_free && run > 0 {
            threat_response_acts(&mut rng, &lab, &job, &mut console, &mut stats, &mut by_hand);
            let n = rng.below(7);
            stats.mutations += mutate(&mut rng, &lab, &mut world, n, false).len() as u64;
            if chance(&mut rng, 3) {
                let n = mass_deactivate(&mut rng, &lab);
                stats.mutations += n;
                stats.saw("mass deactivations");
            }
            if chance(&mut rng, 10) {
                let aspect = rng.below(ASPECTS);
                job.change(&mut rng, aspect, &lab.tc.snapshot());
                job.apply(&mut lab);
                if std::env::var_os("CHAOS_VERBOSE").is_some() {
                    eprintln!("seed {seed} run {run}: job edited (aspect {aspect}): {job:?}");
                }
                stats.job_changes += 1;
            }
            if !planted.is_empty() && chance(&mut plant_rng, 5) {
                planted.extend(plant(&mut plant_rng, &lab, &mut legacy));
                stats.saw("another integration wrote into the source again");
            }
            if tc_acts(&mut rails_rng, &lab, &mut tc, &mut job, &mut stats) {
                job.apply(&mut lab);
                stats.job_changes += 1;
            }
            det.between_runs(&mut job, &mut lab, &mut stats);
        }
        // Runs here follow one another: a lease left by an earlier one (killed, or its delete
        // failed) is of a run that ended, as if its expiry had passed.
        expire_leases(&lab);
        let mut plan = if fault_free {
            Plan::default()
        } else {
            plan_faults(&mut rng, generation, last_requests)
        };
        if !fault_free && run > 0 && chance(&mut rng, 5) {
            plan = Plan {
                together: true,
                ..Plan::default()
            };
        }
        if !fault_free && !plan.together {
            plan.faults.extend(det.faults(&job, generation));
        }
        if std::env::var_os("CHAOS_VERBOSE").is_some() && !plan.faults.is_empty() {
            eprintln!("seed {seed} run {run}: plan {:?}", plan.faults);
        }
        let before = observe(&lab);
        let docs_before = lab.source_docs();
        // The checkpoint this run starts from (the lab's first runs use "90 days ago").
        let start_lm = lab
            .persisted
            .get("last_modified")
            .and_then(Value::as_str)
            .map(epoch)
            .unwrap_or(job.horizon);
        let deploys_before = lab.tanium.deploy_count();
        let writes_before = writes(&lab, generation);
        let visible_health = generation == ApiGeneration::V4 && r2.health_listed;
        let disabled_before = if visible_health {
            before.disabled().len()
        } else {
            0
        };
        let planted_before: Vec<Planted> = planted
            .iter()
            .filter(|p| before.other.contains(&p.doc))
            .cloned()
            .collect();
        let take_over = job.take_over;
        let mut touched: Vec<i64> = Vec::new();
        let mid_run = plan.mutate_at.map(|_| 1 + rng.below(4)).unwrap_or(0);
        let mut mid_rng = Rng::new(rng.next_u64());
        // The run's own start, which its expiry check and verdicts are measured against.
        let run_started = now_secs();
        let lists_unread = tc.denied.is_some() && job.honor_lists;
        let listed: Vec<i64> = lab
            .tc
            .snapshot()
            .iter()
            .filter(|i| tc.on_a_list(i))
            .map(|i| i.id)
            .collect();
        tc.ever_listed.extend(listed);
        let out = run_with(&mut lab, &plan, &mut stats, &mut |lab| {
            touched = mutate(&mut mid_rng, lab, &mut world, mid_run, true)
                .into_iter()
                .map(|(_, id)| id)
                .collect();
        })
        .map_err(ctx)?;
        if tc.denied.take().is_some() {
            lab.tc.deny_exclusion_lists(None);
        }
        stats.mid_run_mutations += touched.len() as u64;
        let left: Vec<(Side, FaultRule)> = [Side::Tc, Side::Tanium]
            .into_iter()
            .flat_map(|s| {
                let rules = server(&lab, s).armed_faults();
                server(&lab, s).clear_faults();
                rules.into_iter().map(move |r| (s, r))
            })
            .collect();
        let fired = fired(&plan, &left);
        let mut per_side: BTreeMap<Side, u32> = BTreeMap::new();
        let mut fatal_possible = false;
        for (side, kind, n, retryable) in &fired {
            if *n > 0 {
                *stats.faults.entry(kind).or_default() += u64::from(*n);
                *per_side.entry(*side).or_default() += n;
                fatal_possible |= !retryable;
            }
        }
        fatal_possible |= per_side.values().any(|n| *n >= ATTEMPTS);
        // A request that timed out is sent once more only (README): two slow answers may end it.
        let slow = |side: Side| -> u32 {
            plan.faults
                .iter()
                .zip(&fired)
                .filter(|(p, _)| p.side == side && matches!(p.rule.fault, Fault::Delay(_)))
                .map(|(_, f)| f.2)
                .sum()
        };
        fatal_possible |= slow(Side::Tc) >= 2 || slow(Side::Tanium) >= 2;
        // Refused three runs in a row (deploys running that long) is a failure by design.
        fatal_possible |= out
            .result
            .message
            .contains("intel deploy failed: refused with 400");
        // A source create that got no clear answer is not sent again (README): the run ends.
        fatal_possible |= out.result.message.contains("got no clear answer")
            && plan.faults.iter().zip(&fired).any(|(p, f)| {
                f.2 > 0 && p.side == Side::Tanium && p.rule.method.as_deref() != Some("GET")
            });
        let tanium_write_faults = plan.faults.iter().zip(&fired).any(|(p, f)| {
            f.2 > 0 && p.side == Side::Tanium && p.rule.method.as_deref() != Some("GET")
        });
        let lost = lost_answers(&fired);
        let r = &out.result;
        // Detections: what TC counted, whatever became of the run (a killed one included).
        let both_synced = out
            .other
            .as_ref()
            .is_some_and(|o| !o.message.starts_with(STOOD_DOWN))
            && !r.message.starts_with(STOOD_DOWN);
        let kept = |x: &RunResult| x.code == 0 || (x.code == 3 && lab.persist_on_partial);
        let all_kept = !out.killed && kept(r) && out.other.as_ref().is_none_or(kept);
        let finished: Vec<&RunResult> = std::iter::once(r).chain(out.other.as_ref()).collect();
        det.after_run(&lab, &finished, all_kept, both_synced, &mut stats)
            .map_err(|e| {
                ctx(format!(
                    "{e}\n    exit {} message {:?}; killed {}; faults fired {:?}; run folder {}",
                    r.code,
                    r.message,
                    out.killed,
                    fired
                        .iter()
                        .filter(|f| f.2 > 0)
                        .map(|f| (f.1, f.2))
                        .collect::<Vec<_>>(),
                    r.dir.display()
                ))
            })?;
        stats.runs += 1 + u64::from(out.other.is_some());
        *stats.codes.entry(r.code).or_default() += 1;
        if !out.killed {
            last_requests = out.requests.max(2);
        }
        let snapshot = lab.tc.snapshot();
        let now = now_secs();
        // Indicators changed while the run was in flight may or may not have been seen by it;
        // the next run must catch up (the Last Modified check below still covers them).
        // Those at the age window's edge may have been either side of it when the run pulled.
        let touched: BTreeSet<i64> = touched.into_iter().collect();
        let edge: BTreeSet<i64> = match job.max_age_days {
            Some(days) => {
                let limit = now - i64::from(days) * 86_400;
                let slack = AGE_EDGE_SECS + (now - seed_started);
                snapshot
                    .iter()
                    .filter(|i| (epoch(&i.last_modified) - limit).abs() <= slack)
                    .map(|i| i.id)
                    .collect()
            }
            None => BTreeSet::new(),
        };
        let mut racing: BTreeSet<i64> = touched.union(&edge).copied().collect();
        // Lists the run could not read: it sends and removes as if there were none, so what
        // they name may be held or not. An expiry that fell while the run worked: either side.
        if lists_unread {
            racing.extend(tc.ever_listed.iter().copied());
            racing.extend(snapshot.iter().filter(|i| tc.on_a_list(i)).map(|i| i.id));
        }
        let expiring = |from: i64| -> BTreeSet<i64> {
            snapshot
                .iter()
                .filter(|i| {
                    job.honor_expiry && expiry(i).is_some_and(|t| t >= from - 2 && t <= now + 2)
                })
                .map(|i| i.id)
                .collect()
        };
        racing.extend(expiring(run_started));
        // (for the second fault-free run: an expiry since the first one is a change to make)
        let expired_since_last = expiring(last_run_started);
        last_run_started = run_started;
        if !expiring(run_started).is_empty() {
            stats.saw("runs during which an expiry fell");
        }
        let full = r.log.contains("full reconcile: ");
        let t = target(&job, &tc, &snapshot, now, (full, !racing.is_empty()));
        let obs = observe(&lab);
        if std::env::var_os("CHAOS_DUMP").is_some() {
            eprintln!("DUMP run {run}: {} docs", obs.docs.len());
            for d in obs.docs.values() {
                let held: Vec<i64> = obs
                    .seen
                    .iter()
                    .filter(|s| s.doc == d.id)
                    .map(|s| s.tc_id)
                    .collect();
                eprintln!(
                    "DUMP   {} {:?} {} rev {} src {} holds TC ids {held:?}",
                    d.id, d.name, d.kind, d.revision_id, d.source_id
                );
            }
        }
        let d = diff(&t, &obs);
        if std::env::var_os("CHAOS_DUMP").is_some() && job.max_indicators.is_some() {
            let mut ranked: Vec<&Indicator> = t.eligible.values().collect();
            ranked.sort_by_key(|i| rank(i));
            for i in ranked.iter().take(20) {
                eprintln!(
                    "DUMP rank {:?} {} {} wanted {}",
                    rank(i),
                    i.type_name,
                    i.summary,
                    t.wanted.contains(&i.id)
                );
            }
        }
        let holders = obs.holders();
        // Known product bug (grouped): a full reconcile retires the documents of a label set no
        // indicator earns any more without reading them, and counts their members as removals
        // though they moved to other label sets' documents: the guard holds back a run that
        // removes nothing ("held back N", exit 3) and a run it does not hold back says "N
        // removed". Such runs are checked without those two counts.
        let label_sets = |o: &Observed| -> BTreeSet<Option<String>> {
            o.seen.iter().map(|s| s.label_set.clone()).collect()
        };
        let label_set_gone = grouped && !label_sets(&before).is_subset(&label_sets(&obs));
        if label_set_gone {
            stats.saw("grouped runs in which a label set lost all its documents");
        }
        stats.duplicates_seen += d.duplicated.len() as u64;
        let detail = || {
            format!(
                "exit {} message {:?}; faults fired {:?}; expire_at {:?}; kill_at {:?}; together {}; run folder {}",
                r.code,
                r.message,
                fired
                    .iter()
                    .filter(|f| f.2 > 0)
                    .map(|f| (f.1, f.2))
                    .collect::<Vec<_>>(),
                plan.expire_at,
                plan.kill_at,
                plan.together,
                r.dir.display()
            )
        };
        let fail = |what: String| Err(ctx(format!("{what}\n    {}", detail())));

        // Documents of other sources: never touched, byte for byte.
        if foreign_docs(&lab) != foreign_before {
            return fail("documents outside the app's source changed".into());
        }
        if lab.tanium.sources_named(APP_SOURCE) > 1 {
            return fail("the app created its source twice".into());
        }
        // Another integration's documents in the source: left alone unless taken over.
        if !take_over {
            for p in &planted_before {
                let was = before.docs.get(&p.doc).map(untouched);
                let is = obs.docs.get(&p.doc).map(untouched);
                if was != is {
                    return fail(format!(
                        "document {} of another integration changed while Take Over Source is off",
                        p.doc
                    ));
                }
            }
        }
        // Every document of the source is the job's or one chaos planted.
        if let Some(doc) = obs
            .other
            .iter()
            .find(|id| !planted.iter().any(|p| p.doc == **id))
        {
            let d = &obs.docs[doc];
            return fail(format!(
                "document {doc} {:?} in the app's source is not one the test can read: {}",
                d.name,
                d.body.chars().take(300).collect::<String>()
            ));
        }
        // No secret anywhere the app writes.
        for run_result in std::iter::once(r).chain(out.other.as_ref()) {
            let results_text =
                std::fs::read_to_string(run_result.dir.join("out").join("results.tc"))
                    .unwrap_or_default();
            for s in SECRETS {
                for (what, text) in [
                    ("message.tc", &run_result.message),
                    ("app.log", &run_result.log),
                    ("stdout", &run_result.stdout),
                    ("stderr", &run_result.stderr),
                    ("results.tc", &results_text),
                ] {
                    if text.contains(s) {
                        return fail(format!("a secret appears in {what}"));
                    }
                }
            }
        }
        if !r.param_file_deleted && !out.killed {
            return fail("the param file was left behind".into());
        }
        if out.killed && r.code == -1 {
            continue;
        }
        // Two runs started together: one stood down (exit 0, nothing changed, no checkpoint)
        // or, when the first had finished before the second looked, both synced one after the
        // other.
        let stood_down = r.message.starts_with(STOOD_DOWN);
        let mut two_writers = false;
        if let Some(other) = &out.other {
            if stood_down {
                return fail(format!(
                    "both runs started together stood down: {:?}",
                    other.message
                ));
            }
            if other.message.starts_with(STOOD_DOWN) {
                if other.code != 0
                    || other.results.contains_key("last_modified")
                    || !other
                        .message
                        .ends_with("this run stood down; nothing changed")
                {
                    return fail(format!(
                        "the run that stood down exited {} with {:?} and results {:?}",
                        other.code, other.message, other.results
                    ));
                }
                stats.saw("runs that stood down for another");
            } else {
                two_writers = true;
                stats.saw("runs started together that both synced, one after the other");
                let explained = other.message.contains("held back")
                    || other.message.contains("exclusion lists unreadable");
                if other.code != 0 && !(other.code == 3 && explained) {
                    return fail(format!(
                        "of two fault-free runs started together one exited {}: {:?}",
                        other.code, other.message
                    ));
                }
            }
        } else if stood_down {
            return fail("a run alone stood down".into());
        }
        let mut by_name: BTreeMap<String, u32> = BTreeMap::new();
        for l in lab.tanium.labels() {
            *by_name.entry(l.name.to_lowercase()).or_default() += 1;
        }
        if let Some((name, n)) = by_name.iter().find(|(_, n)| **n > 1) {
            return fail(format!("{n} labels named {name:?}: one was made twice"));
        }
        if r.code == 0 {
            let said = r.message.contains("disabled by Threat Response");
            // Of two runs that both synced, the one checked may have started after the other
            // removed some of the disabled documents.
            let fewest = if two_writers && visible_health {
                obs.disabled().len().min(disabled_before)
            } else {
                disabled_before
            };
            let says = |n: usize| {
                r.message
                    .contains(&format!(" {n} document{} ", if n == 1 { "" } else { "s" }))
            };
            let right = if said {
                (fewest.max(1)..=disabled_before).any(says)
            } else {
                fewest == 0
            };
            if !right {
                return fail(format!(
                    "{disabled_before} documents TR disabled, and the message says otherwise"
                ));
            }
            if said {
                stats.saw("runs that reported documents TR disabled");
            }
            let foreign_said = r.message.contains("this job did not make left alone");
            let want = counted(planted_before.len(), "document");
            if !take_over
                && (foreign_said == planted_before.is_empty()
                    || (foreign_said
                        && !r
                            .message
                            .contains(&format!("{want} this job did not make left alone"))))
            {
                return fail(format!(
                    "{want} of another integration in the source, and the message says otherwise"
                ));
            }
        }
        if r.log
            .contains("deploy is still running; the next run deploys")
            || r.log
                .contains("says a deploy is running; the next run deploys")
        {
            stats.saw("runs that waited for a running deploy");
        }
        if r.log.contains("taken as a deploy already running") {
            stats.saw("deploys refused with 400 (owed)");
        }
        if r.log.contains("the last intel deploy (task") && r.log.contains(") completed") {
            stats.saw("runs that said when the last deploy completed");
        }

        // Exit code and message.tc agree with what happened.
        if r.message.is_empty() || r.message.contains('\n') || r.message.chars().count() > 255 {
            return fail("message.tc must be one non-empty line of at most 255 characters".into());
        }
        let held_back = r.message.contains("held back");
        let says_failed = r.message.contains(" failed")
            || r.message.contains("incomplete")
            || r.message.contains("exclusion lists unreadable")
            || held_back
            || r.message.starts_with("detections: ");
        if lists_unread && !stood_down && r.code == 0 {
            return fail("the exclusion lists could not be read, yet the run exited 0".into());
        }
        fatal_possible |= lists_unread;
        match r.code {
            0 => {
                if !r.message.starts_with("Synced: ") || says_failed {
                    return fail("exit 0 with a message that reports trouble".into());
                }
                let extra: Vec<i64> = d
                    .extra
                    .iter()
                    .filter(|i| !racing.contains(*i))
                    .copied()
                    .collect();
                if !extra.is_empty() {
                    return fail(format!(
                        "exit 0 but the source holds indicators the job must not send: {}",
                        describe(&extra, &snapshot, &obs)
                    ));
                }
            }
            3 => {
                if !says_failed {
                    return fail("exit 3 with a message that does not say what failed".into());
                }
            }
            1 => {
                if !r.results.is_empty() {
                    return fail("exit 1 must not write results.tc".into());
                }
            }
            other => return fail(format!("unexpected exit code {other}")),
        }
        // The mass-removal guard at its default holds back what a job edit removes in bulk.
        if !fatal_possible && r.code != 0 && !held_back {
            return fail(
                "every fault was retryable within the attempts, yet the run did not succeed".into(),
            );
        }

        // A run that says it completed its writes (exit 0; exit 3 for a held-back removal, an
        // incomplete removal check or a failed deploy) left every indicator the job sends a
        // current document.
        let writes_complete = r.code == 0
            || (r.code == 3
                && failed_in_log(&r.log) == Some((0, 0))
                && !r.message.contains("pull incomplete")
                && !r.message.contains("stopped early")
                && !r.log.contains("ThreatConnect pull stopped"));
        if r.code == 3 && writes_complete {
            stats.saw("exit-3 runs that completed their writes");
        }
        if writes_complete {
            let undelivered: Vec<i64> = d
                .undelivered
                .iter()
                .filter(|i| !racing.contains(*i))
                .copied()
                .collect();
            if let Some(id) = undelivered.first() {
                let why = d
                    .stale
                    .get(id)
                    .map_or("no document".to_string(), |s| format!("its document's {s}"));
                return fail(format!(
                    "the run completed its writes but {} of the indicators the job sends lack a current document: {} ({why}; TC last modified {}, the run started from {})",
                    undelivered.len(),
                    describe(&undelivered, &snapshot, &obs),
                    t.eligible[id].last_modified,
                    format_time(OffsetDateTime::from_unix_timestamp(start_lm).unwrap())
                ));
            }
        }
        // What a held-back run left is exactly what it says it held back.
        let planted_left: usize = planted
            .iter()
            .filter(|p| obs.other.contains(&p.doc))
            .count();
        if writes_complete && held_back {
            stats.saw("runs held back by the removal guard");
            let count = |ids: &mut dyn Iterator<Item = &i64>| -> usize {
                ids.map(|id| holders.get(id).map_or(0, Vec::len)).sum()
            };
            let foreign = if take_over { planted_left } else { 0 };
            // (held back after a removal check that could not ask every owner, the run met
            // only part of the surplus)
            // (grouped, the guard counts indicators: copies of one document a lost create
            // answer made hold the same ones)
            let sure = if r.log.contains("could not check for removals") {
                0
            } else if grouped {
                d.extra
                    .iter()
                    .filter(|i| !racing.contains(*i) && holders.contains_key(*i))
                    .count()
                    + foreign
            } else {
                count(&mut d.extra.iter().filter(|i| !racing.contains(*i))) + foreign
            };
            // A racing indicator may have been planned for removal or not.
            // (under a cap, a full run that met a racing indicator held back those over the cap
            // by its ranking)
            let beyond: Vec<i64> = holders
                .keys()
                .filter(|id| !t.current.contains(id))
                .copied()
                .collect();
            let all = count(&mut beyond.iter()) + count(&mut racing.iter()) + foreign;
            let n = held_back_in(&r.message).unwrap_or(u64::MAX) as usize;
            if n < sure || (n > all && !label_set_gone) {
                return fail(format!(
                    "held back {n} removals, but the source holds {sure} surplus {} ({} of another integration): {}",
                    if grouped { "indicators" } else { "documents" },
                    foreign,
                    describe(&d.extra, &snapshot, &obs)
                ));
            }
        }

        // Duplicates: a write whose answer was lost may make one (the app cannot know it was
        // done), nothing else may; the next run that completes removes it and counts it.
        if writes_complete && !two_writers {
            if let Some((ids, docs)) = pending_dups.take() {
                // (a run in between, killed or failed, may have removed some)
                let gone = docs
                    .iter()
                    .filter(|doc| before.docs.contains_key(doc) && !obs.docs.contains_key(doc))
                    .count();
                let still: Vec<i64> = ids
                    .iter()
                    .filter(|id| d.duplicated.contains(id))
                    .copied()
                    .collect();
                if !still.is_empty() && lost == 0 {
                    return fail(format!(
                        "duplicates left by the last run are still there: {}",
                        describe(&still, &snapshot, &obs)
                    ));
                }
                // (the log's tally: message.tc may be cut before its counts)
                let removed = tally_in_log(&r.log, "removed").unwrap_or(0) as usize;
                if !grouped && removed < gone {
                    return fail(format!(
                        "the run removed {gone} duplicate documents, yet counts {removed} removed"
                    ));
                }
                stats.saw_n("duplicates removed by the next run", gone as u64);
            }
        }
        // Two runs at once without a lease (Tanium cannot delete sources: README, Two runs at
        // once) may both create a document.
        let unleased = two_writers
            && std::iter::once(r)
                .chain(out.other.as_ref())
                .all(|x| x.log.contains("this run takes no run lease"));
        if r.code == 0 && !d.duplicated.is_empty() && unleased {
            stats.saw("duplicates two runs without a lease made");
            pending_dups = Some((d.duplicated.clone(), holder_docs(&obs, &d.duplicated)));
        } else if r.code == 0 && !d.duplicated.is_empty() {
            if lost == 0 || (!grouped && d.duplicate_docs.len() as u64 > lost) {
                return fail(format!(
                    "exit 0 with {} duplicated indicators ({} extra documents) and {lost} lost write answers to explain them: {} (held by {})",
                    d.duplicated.len(),
                    d.duplicate_docs.len(),
                    describe(&d.duplicated, &snapshot, &obs),
                    holders_of(&obs, &d.duplicated)
                ));
            }
            stats.saw("exit-0 runs with a duplicate a lost answer explains");
            pending_dups = Some((d.duplicated.clone(), holder_docs(&obs, &d.duplicated)));
        }

        // Labels: every document of an indicator the job sends carries exactly what it earns.
        if writes_complete && racing.is_empty() {
            let disabled = obs.disabled();
            for s in &obs.seen {
                // Beyond Maximum Indicators at a full reconcile, a document stays only while
                // its removal is held back: the job no longer manages its labels.
                let Some(i) = t
                    .eligible
                    .get(&s.tc_id)
                    .filter(|_| t.current.contains(&s.tc_id))
                else {
                    continue;
                };
                if d.duplicated.contains(&s.tc_id) || mismatch(s, i, t.detections).is_some() {
                    continue;
                }
                let mut want = job.labels_for(i);
                if job.disabled_label && visible_health && disabled.contains(&s.doc) {
                    want.insert(DISABLED_LABEL.to_lowercase());
                }
                // Disabled Intel Label turned off leaves the label where it is (the job no
                // longer manages it).
                let have: BTreeSet<String> = lab
                    .tanium
                    .doc_label_names(s.doc)
                    .iter()
                    .map(|l| l.to_lowercase())
                    .filter(|l| job.disabled_label || *l != DISABLED_LABEL.to_lowercase())
                    .collect();
                // Known product gap (grouped): an incremental run brings back a job label
                // taken off a grouped document by hand only when it rewrites that document;
                // a full reconcile does.
                let gap = grouped
                    && !full
                    && by_hand.get(&s.doc).is_some_and(|l| {
                        let mut without = want.clone();
                        without.remove(l);
                        have == without
                    });
                if gap {
                    stats.saw("grouped documents whose hand-removed job label an incremental run left off");
                    continue;
                }
                if have != want {
                    return fail(format!(
                        "document {} of {} carries labels {have:?}, the label params give {want:?}",
                        s.doc,
                        describe(&[s.tc_id], &snapshot, &obs)
                    ));
                }
            }
        }

        by_hand.retain(|doc, label| {
            obs.docs.contains_key(doc)
                && !lab
                    .tanium
                    .doc_label_names(*doc)
                    .iter()
                    .any(|l| l.to_lowercase() == *label)
        });

        // Taking the source over: the very next run reads another integration's documents; one
        // that alone covers exactly one indicator the job sends is adopted in place as that
        // indicator's only document, the rest go (unless the guard holds them back).
        if take_over && writes_complete && !planted_before.is_empty() {
            if !full {
                return fail(
                    "Take Over Source is on and the source holds another integration's documents, yet the run was no full reconcile"
                        .into(),
                );
            }
            for p in &planted_before {
                // One the run could not read stays as it was: what it covers is unknown.
                if r.log
                    .contains(&format!("could not read document {} \"", p.doc))
                {
                    if before.docs.get(&p.doc).map(untouched) != obs.docs.get(&p.doc).map(untouched)
                    {
                        return fail(format!(
                            "document {} of another integration could not be read, yet it changed",
                            p.doc
                        ));
                    }
                    stats.saw("documents of another integration left for want of reading them");
                    continue;
                }
                match fate(p, &planted_before, &t, &snapshot, &racing, grouped) {
                    Fate::Unsure => {}
                    Fate::Adopted(w) => {
                        let adopted = obs.seen.iter().any(|s| s.doc == p.doc && s.tc_id == w);
                        let only = holders.get(&w).map_or(0, Vec::len) == 1;
                        // Known product gap: rendered as STIX, an adopted document keeps the
                        // other integration's id on its package only, so a server that reads
                        // a STIX document's intrinsic id from its first indicator files it
                        // anew (new Tanium id; the old one removed).
                        let refiled = !adopted
                            && only
                            && r2.stix_first_indicator
                            && !job.openioc
                            && !obs.docs.contains_key(&p.doc);
                        if refiled {
                            stats.saw("adoptions filed anew by a server reading the first STIX indicator's id");
                            continue;
                        }
                        if !adopted || !only {
                            return fail(format!(
                                "document {} of another integration covers only {}: it must be that indicator's only document (adopted {adopted}, {} documents)",
                                p.doc,
                                describe(&[w], &snapshot, &obs),
                                holders.get(&w).map_or(0, Vec::len)
                            ));
                        }
                        stats.saw("documents of another integration adopted");
                    }
                    Fate::Gone if !held_back && obs.docs.contains_key(&p.doc) => {
                        return fail(format!(
                            "document {} of another integration (covering {:?}) is still in the source taken over",
                            p.doc, p.covers
                        ));
                    }
                    Fate::Gone => {}
                }
            }
        }

        let changed = docs_before != lab.source_docs();
        let deployed = lab.tanium.deploy_count() > deploys_before;
        if !job.deploy && deployed {
            return fail("Deploy Intel is off, yet the run deployed".into());
        }
        if deployed {
            deploy_owed = false;
        } else if changed && generation == ApiGeneration::V4 && !out.killed {
            // Known limit: a kill between the writes and the deploy, or a platform that drops
            // results.tc after exit 3, leaves the deploy to the next run that writes.
            deploy_owed |= r.code == 0 || (r.code == 3 && lab.persist_on_partial);
        }
        if r.code == 0 && changed && !two_writers {
            // (the message may be cut before it says so; the log says it whole)
            let said = if job.deploy {
                deployed
                    || generation == ApiGeneration::V3
                    || r.log.contains("the next run deploys this run's intel")
            } else {
                r.log
                    .contains("Deploy Intel is off: the intel written awaits a deploy")
            };
            if !said {
                return fail(format!(
                    "the run changed the source and exited 0 without deploying or saying why (Deploy Intel {})",
                    if job.deploy { "on" } else { "off" }
                ));
            }
        }
        let count_check = if grouped {
            !tanium_write_faults && !label_set_gone
        } else {
            true
        };
        if r.code == 0 && count_check && !out.killed && !two_writers {
            let said = (
                count_in(&r.message, "created"),
                count_in(&r.message, "updated"),
                count_in(&r.message, "removed"),
            );
            let seen = if grouped {
                // Indicator by indicator: grouped messages count indicators, one that moved to
                // another label set's document as updated, and another integration's document
                // removed as one.
                let first = |o: &Observed| -> BTreeMap<i64, Seen> {
                    o.holders()
                        .into_iter()
                        .map(|(id, h)| (id, h[0].clone()))
                        .collect()
                };
                let (b, a) = (first(&before), first(&obs));
                let created = a.keys().filter(|k| !b.contains_key(k)).count() as u64;
                let foreign_gone = planted_before
                    .iter()
                    .filter(|p| !obs.docs.contains_key(&p.doc))
                    .count() as u64;
                let removed = b.keys().filter(|k| !a.contains_key(k)).count() as u64 + foreign_gone;
                let updated = a
                    .iter()
                    .filter(|(k, s)| {
                        b.get(k)
                            .is_some_and(|x| !x.same_content(s) || x.label_set != s.label_set)
                    })
                    .count() as u64;
                (created, updated, removed)
            } else {
                let before: BTreeMap<i64, &SimDoc> =
                    docs_before.iter().map(|d| (d.id, d)).collect();
                let after: BTreeMap<i64, &SimDoc> = obs.docs.iter().map(|(k, d)| (*k, d)).collect();
                // A duplicate a lost answer made is a create the app could not count.
                let made_twice = d
                    .duplicate_docs
                    .iter()
                    .filter(|id| !before.contains_key(id))
                    .count() as u64;
                let created = after.keys().filter(|k| !before.contains_key(k)).count() as u64;
                let removed = before.keys().filter(|k| !after.contains_key(k)).count() as u64;
                let updated = after
                    .iter()
                    .filter(|(k, d)| {
                        before
                            .get(k)
                            .is_some_and(|b| b.revision_id != d.revision_id)
                    })
                    .count() as u64;
                (created - made_twice.min(created), updated, removed)
            };
            // Under Maximum Indicators a run that is no full reconcile evicts nothing: an
            // indicator the job still sends keeps a document (one that moves to another label
            // set's document needs no room).
            if job.max_indicators.is_some() && !full {
                let a = obs.holders();
                let evicted: Vec<i64> = before
                    .holders()
                    .into_keys()
                    .filter(|id| !a.contains_key(id) && t.eligible.contains_key(id))
                    .collect();
                if !evicted.is_empty() {
                    return fail(format!(
                        "an incremental run at Maximum Indicators evicted {}",
                        describe(&evicted, &snapshot, &obs)
                    ));
                }
            }
            // (a message cut at 255 characters may not get as far as the counts)
            let cut = r.message.ends_with("...") && (said.1.is_none() || said.2.is_none());
            if !cut && said != (Some(seen.0), Some(seen.1), Some(seen.2)) {
                return fail(format!(
                    "message counts {said:?} but Tanium saw {} created, {} updated, {} removed",
                    seen.0, seen.1, seen.2
                ));
            }
        }

        // Last Modified never moves past an undelivered change.
        let persisted = r.code == 0 || (r.code == 3 && lab.persist_on_partial);
        if persisted {
            let Some(lm) = r.results.get("last_modified") else {
                return fail("results.tc lacks last_modified".into());
            };
            let lm = epoch(lm);
            if lm == 0 || lm > now_secs() {
                return fail(format!("last_modified {lm} is unreadable or in the future"));
            }
            // (lists a run could not read make the next run that reads them a full reconcile)
            let next_full = lists_unread
                || r.results
                    .get("last_full_reconcile")
                    .is_some_and(|v| v.is_empty())
                || lab
                    .persisted
                    .get("last_full_reconcile")
                    .and_then(Value::as_str)
                    == Some("")
                || lab.persisted.get("last_full_reconcile").is_none();
            for id in d.undelivered.iter().filter(|i| !edge.contains(*i)) {
                let w = &t.eligible[id];
                let modified = epoch(&w.last_modified);
                // Older than where this run started: only a full reconcile reaches it, and
                // the next run is one.
                let left_to_full = next_full && modified <= start_lm;
                if modified <= lm && !left_to_full {
                    return fail(format!(
                        "last_modified {} moved past undelivered {} (modified {}): {w:?}; job {job:?}",
                        format_time(OffsetDateTime::from_unix_timestamp(lm).unwrap()),
                        describe(&[*id], &snapshot, &obs),
                        w.last_modified
                    ));
                }
            }
            if !next_full {
                for id in d.extra.iter().filter(|i| !edge.contains(*i)) {
                    let cause = snapshot
                        .iter()
                        .find(|i| i.id == *id)
                        .map(|i| (epoch(&i.last_modified), false))
                        .or_else(|| world.deleted.get(id).map(|t| (*t, true)));
                    // An expiry after Last Modified: the next run's expiry check finds it.
                    let expires = snapshot
                        .iter()
                        .find(|i| i.id == *id)
                        .and_then(expiry)
                        .is_some_and(|e| job.honor_expiry && e > lm);
                    let by_change = match cause {
                        Some((t, false)) => t > lm,
                        Some((t, true)) => t >= lm,
                        None => false,
                    };
                    if expires && !by_change {
                        stats.saw("documents left for the next run's expiry check");
                    }
                    let ok = expires || by_change;
                    if !ok {
                        return fail(format!(
                            "last_modified moved past an undelivered removal ({}; cause {cause:?}, last_modified {lm}) and the next run is not a full reconcile",
                            describe(std::slice::from_ref(id), &snapshot, &obs)
                        ));
                    }
                }
            }
        }

        // The final fault-free runs.
        if run == runs {
            if r.code != 0 && !(r.code == 3 && held_back) {
                return fail("the first fault-free run did not succeed".into());
            }
            if deploy_owed && job.deploy {
                return fail("a failed intel deploy was never retried".into());
            }
            if !d.duplicated.is_empty() {
                return fail(format!(
                    "after a fault-free run two documents share an indicator: {}",
                    describe(&d.duplicated, &snapshot, &obs)
                ));
            }
            // A platform that drops results.tc after exit 3 hands the next run the deploy
            // this one owed before it deployed.
            first_fault_free_dropped = r.code == 3 && !lab.persist_on_partial;
        }
        if run == runs + 1 && det.used {
            if let Err(e) = det.at_the_end(&lab, &obs) {
                return fail(e);
            }
        }
        if run == runs + 1 {
            let wrote = writes(&lab, generation) - writes_before;
            let settled = r.code == 0 || (r.code == 3 && held_back);
            let deployed = lab.tanium.deploy_count() - deploys_before;
            let expired = !expired_since_last.is_empty();
            if expired {
                stats.saw("second fault-free runs after an expiry fell");
            }
            if !settled
                || (!expired && (wrote != 0 || deployed > u64::from(first_fault_free_dropped)))
            {
                return fail(format!(
                    "a second fault-free run must write nothing, it sent {wrote} writes"
                ));
            }
        }

        // The admin raises Maximum Removal Percent for the one run that must remove that many
        // (README), and puts it back once it did.
        if run + 1 < runs {
            if held_back && raised_from.is_none() && chance(&mut rng, 50) {
                raised_from = Some(job.removal_percent);
                job.removal_percent = Some(100);
                job.apply(&mut lab);
                stats.saw("held-back runs the admin raised the guard for");
            } else if writes_complete && !held_back {
                if let Some(was) = raised_from.take() {
                    job.removal_percent = was;
                    job.apply(&mut lab);
                }
            }
        }
    }
    Ok(stats)
}

#[test]
fn chaos() {
    chaos_seeds(false, env_u64("CHAOS_SEEDS", 12));
}

#[test]
fn chaos_grouped() {
    chaos_seeds(true, env_u64("CHAOS_GROUPED_SEEDS", 6));
}

fn chaos_seeds(grouped: bool, count: u64) {
    let runs = env_u64("CHAOS_RUNS", 10);
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => {
            let base = env_u64("CHAOS_SEED_BASE", 1);
            (base..base + count).collect()
        }
    };
    let test = if grouped { "chaos_grouped" } else { "chaos" };
    // Several seeds at once share the cores with the app and both simulators: no more seeds
    // than cores by default, so no answer comes near the timeout.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let jobs = env_u64("CHAOS_JOBS", cores).max(1) as usize;
    let started = Instant::now();
    let queue = Mutex::new(seeds.clone().into_iter());
    let total = Mutex::new(Stats::default());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(seeds.len()) {
            s.spawn(|| loop {
                let Some(seed) = queue.lock().unwrap().next() else {
                    return;
                };
                match run_seed(seed, runs, grouped) {
                    Ok(st) => total.lock().unwrap().add(&st),
                    Err(e) => {
                        eprintln!("CHAOS FAILURE: {e}");
                        failures.lock().unwrap().push(format!(
                            "{e}\n  replay: CHAOS_SEED={seed} CHAOS_RUNS={runs} cargo test --test integration chaos::{test} -- --exact --nocapture"
                        ));
                    }
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 25 == 0 {
                    let t = total.lock().unwrap();
                    eprintln!(
                        "chaos: {n}/{} seeds, {} runs, {} faults fired ({} kills), {} failed seeds, {:.0} s",
                        seeds.len(),
                        t.runs,
                        t.total_faults(),
                        t.killed,
                        failures.lock().unwrap().len(),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let t = total.into_inner().unwrap();
    eprintln!("chaos ({test}): the mix: {:?}", t.mix);
    eprintln!(
        "chaos ({test}): seeds {}..={} x {} runs (+2 fault-free), {jobs} at once, in {:.0} s: {} runs, {} faults fired ({} killed, {} session expiries, {:?}), exit codes {:?}, {} TC mutations between runs and {} during runs, {} job edits, {} duplicate indicators seen mid-way",
        seeds.first().copied().unwrap_or(0),
        seeds.last().copied().unwrap_or(0),
        runs,
        started.elapsed().as_secs_f64(),
        t.runs,
        t.total_faults(),
        t.killed,
        t.expiries,
        t.faults,
        t.codes,
        t.mutations,
        t.mid_run_mutations,
        t.job_changes,
        t.duplicates_seen
    );
    let f = failures.into_inner().unwrap();
    assert!(
        f.is_empty(),
        "{} seed(s) failed:\n{}",
        f.len(),
        f.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Regression tests for what the chaos runs found
// ---------------------------------------------------------------------------------------------

fn small_lab(generation: ApiGeneration) -> (tempfile::TempDir, Lab) {
    let (dir, lab) = empty_lab(generation);
    let now = OffsetDateTime::now_utc() - time::Duration::hours(1);
    lab.tc.load(dataset::generate_at(40, 11, now));
    (dir, lab)
}

/// Found by chaos: switching Intel Format left every unchanged indicator in the old format
/// (an incremental run only re-renders what TC modified) while the run reported success.
#[test]
fn switching_the_intel_format_rewrites_every_document() {
    let (_dir, mut lab) = small_lab(ApiGeneration::V4);
    let first = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(first.code, 0, "{}", first.message);
    let before = lab.source_docs();
    assert!(before.len() > 10 && before.iter().all(|d| d.kind == "stix"));
    lab.set("intel_format", json!("OpenIOC"));
    let second = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(second.code, 0, "{}", second.message);
    assert!(
        second.message.contains("(full reconcile)"),
        "{}",
        second.message
    );
    assert!(second
        .log
        .contains("full reconcile: the intel format changed"));
    let after = lab.source_docs();
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|d| d.kind == "openioc"), "{after:?}");
    let names = |d: &[SimDoc]| d.iter().map(|x| x.name.clone()).collect::<BTreeSet<_>>();
    assert_eq!(names(&after), names(&before));
    let third = lab.run(&Map::new(), &[]).unwrap();
    assert!(
        third.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        third.message
    );
}

/// A deploy that fails is reported (exit 3, message) and owed: the next run deploys even
/// when it has nothing to write (before, the run exited 0 and the deploy was never retried).
#[test]
fn a_failed_deploy_is_reported_and_retried_by_the_next_run() {
    let (_dir, mut lab) = small_lab(ApiGeneration::V4);
    let deploy = format!("{}/intel/deploy", ApiGeneration::V4.base_path());
    lab.tanium.server().inject(FaultRule::new(
        Some("POST"),
        &deploy,
        ATTEMPTS,
        Fault::Status {
            status: 503,
            retry_after: Some(0),
        },
    ));
    let first = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(first.code, 3, "{}", first.message);
    assert!(
        first.message.contains("intel deploy failed"),
        "{}",
        first.message
    );
    assert_eq!(
        first.results.get("deploy_pending").map(String::as_str),
        Some("true")
    );
    assert_eq!(lab.tanium.deploy_count(), 0);
    let second = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(second.code, 0, "{}", second.message);
    assert!(second.message.contains("0 created, 0 updated, 0 removed"));
    assert_eq!(lab.tanium.deploy_count(), 1, "the owed deploy");
    assert_eq!(
        second.results.get("deploy_pending").map(String::as_str),
        Some("")
    );
    let third = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(
        (third.code, lab.tanium.deploy_count()),
        (0, 1),
        "nothing owed any more"
    );
}

/// Found by chaos: a run whose only problem was the removal check exited 3 with a message
/// that read like a full success.
#[test]
fn exit_3_says_why_when_only_the_removal_check_failed() {
    let (_dir, mut lab) = small_lab(ApiGeneration::V3);
    assert_eq!(lab.run(&Map::new(), &[]).unwrap().code, 0);
    let id = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.active && expected_name(i).is_some())
        .unwrap()
        .id;
    lab.tc
        .update(id, |i| i.description = Some("changed".into()));
    lab.tc.server().inject(FaultRule::new(
        Some("GET"),
        "/api/v3/indicators/deleted",
        1,
        Fault::Garbage,
    ));
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message
            .contains("removal check incomplete: could not check for removals"),
        "{}",
        r.message
    );
    assert_eq!(
        r.results.get("last_full_reconcile").map(String::as_str),
        Some("")
    );
}

/// Found by chaos: an indicator the incremental pull did not return (not modified since the last
/// run) that TC then reports modified inside the run's window (in the second the run started,
/// TC's timestamps having whole seconds, or by a TC clock a little behind) was taken by the
/// removal check as no longer selected, and its document removed, though it still qualifies.
#[test]
fn an_indicator_modified_while_a_run_checks_for_removals_keeps_its_document() {
    let (_dir, mut lab) = small_lab(ApiGeneration::V4);
    let first = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(first.code, 0, "{}", first.message);
    let kept = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.active && expected_name(i).is_some())
        .unwrap();
    let name = expected_name(&kept).unwrap();
    // The removal check's first request is held while TC records the change.
    lab.tc.server().inject(FaultRule::new(
        Some("GET"),
        "/api/v3/indicators/deleted",
        1,
        Fault::Delay(Duration::from_millis(1500)),
    ));
    let before = lab.tc.server().hits("GET /api/v3/indicators/deleted");
    let started = OffsetDateTime::now_utc();
    let running = lab.start_run(&Map::new(), &[]).unwrap();
    let waiting = Instant::now();
    while lab.tc.server().hits("GET /api/v3/indicators/deleted") == before {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "no removal check"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    lab.tc.insert(Indicator {
        description: Some("edited while the run worked".into()),
        last_modified: format_time(started - time::Duration::seconds(1)),
        ..kept.clone()
    });
    let second = lab.finish(running).unwrap();
    assert!(lab.quiesce(Duration::from_secs(30)));
    assert_eq!(second.code, 0, "{}", second.message);
    assert!(
        lab.source_docs().iter().any(|d| d.name == name),
        "{name} lost its document: {}",
        second.message
    );
    let third = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(third.code, 0, "{}", third.message);
    let doc = lab.source_docs().into_iter().find(|d| d.name == name);
    assert!(
        doc.is_some_and(|d| d.description.contains("edited while the run worked")),
        "the next run writes the change: {}",
        third.message
    );
}
