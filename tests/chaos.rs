//! Chaos: many consecutive runs of the real binary against both simulators. Between runs
//! ThreatConnect changes (create, modify, retag incl. excluded tags, rescore below minimums,
//! deactivate, reactivate, delete, new owners; now and then the job's own filters or format);
//! during runs faults fire at random points (5xx / 429 bursts, dropped connections mid-page and
//! mid-upload, truncated bodies, answers slower than the timeout, non-JSON 200s, Tanium session
//! expiry, writes whose response is lost, a Tanium outage, the process killed mid-run).
//!
//! Where recorded real servers leave a choice open, each seed draws one (round 2 included: the
//! label listing capped at 100 with the job's label past it, `noLimit` honoured or not,
//! `meta.totalCount` or not, deploys running 0 to 1500 ms and refusing a second one with 400
//! or not, a progress field in the intel status or not, health fields in listing rows or not);
//! between runs Threat Response disables documents (everywhere or on some endpoints), enables
//! them again, and an admin starts a deploy in the console.
//!
//! After every run: exit code and message.tc agree with what happened, no secret was written
//! anywhere, Last Modified never moved past an undelivered change, documents outside the app's
//! source are untouched byte for byte, no label is made twice, message.tc of a clean run counts
//! exactly the documents TR disabled, and a run that changed the source deployed or says the
//! deploy is owed (one running). After a final fault-free run the app's source holds
//! exactly the expected set (computed here from the TC snapshot with plain closures) with one
//! document per identity; a second fault-free run writes nothing.
//!
//! `chaos_grouped` runs the same with indicators grouped (Indicators per Intel Document 3 to
//! 500, so buckets split and merge): each grouped document counts as one document per member,
//! and the same checks hold indicator by indicator (`CHAOS_GROUPED_SEEDS`, default 6).
//!
//! CI runs a few fixed seeds. Locally:
//!   CHAOS_SEEDS=1000 CHAOS_RUNS=12 CHAOS_JOBS=6 cargo test --test integration chaos::chaos -- --nocapture
//! Replay one seed: CHAOS_SEED=<seed> [CHAOS_RUNS=<runs>] cargo test --test integration chaos::chaos -- --nocapture
//! CHAOS_BIN=<copy of the app binary> keeps a long run immune to rebuilds; CHAOS_KEEP=1 keeps
//! the run folders (logs, message.tc, results.tc); CHAOS_VERBOSE=1 prints job edits.
//! (Faults fire on request counts, so a replay meets the same faults; which worker thread meets
//! a write fault can differ between replays.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{empty_lab, expected_name, expire_leases, BIN};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::intel::{self, group};
use tanium_tr_indicators::sim::dataset::{self, Rng, OWNERS, TAGS};
use tanium_tr_indicators::sim::lab::{Lab, RunResult, LAB_PARAM_KEY};
use tanium_tr_indicators::sim::server::{Fault, FaultRule, Server};
use tanium_tr_indicators::sim::tanium::{DocHealth, IntrinsicFrom, SimDoc};
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
/// The app's `http_timeout_secs` for chaos runs; `Fault::Delay` waits longer than this.
const TIMEOUT_SECS: u64 = 2;
/// Attempts per call in the app's default retry policy: up to this many - 1 faults are absorbed.
const ATTEMPTS: u32 = 5;
const APP_SOURCE: &str = "ThreatConnect";
const FOREIGN_SOURCE: &str = "Analyst Intel";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The job, and what it must select, written independently of the app's filter code
// ---------------------------------------------------------------------------------------------

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
    openioc: bool,
    /// The first Last Modified (epoch seconds): the job horizon no pull reaches behind.
    horizon: i64,
    /// Indicators per Intel Document (1: one document each).
    per_document: u32,
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
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

impl Job {
    fn random(rng: &mut Rng) -> Job {
        let mut j = Job {
            types: vec!["Address", "File", "Host"],
            owners: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            min_score: None,
            min_confidence: None,
            min_rating: None,
            max_fp: None,
            openioc: chance(rng, 50),
            // 30 days cuts the generated data (60 days) in half; 600 days takes it all and
            // the hostile fixtures (mid 2025) too.
            horizon: now_secs() - if chance(rng, 50) { 30 } else { 600 } * 86_400,
            per_document: 1,
        };
        for aspect in 0..6 {
            if chance(rng, 35) {
                j.change(rng, aspect);
            }
        }
        j
    }

    /// Re-draws one aspect of the filters (what an analyst editing the job does).
    fn change(&mut self, rng: &mut Rng, aspect: u64) {
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
            _ => self.openioc = !self.openioc,
        }
    }

    fn format(&self) -> intel::Format {
        if self.openioc {
            intel::Format::OpenIoc
        } else {
            intel::Format::Stix
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
            "intel_format",
            json!(if self.openioc { "OpenIOC" } else { "STIX" }),
        );
        let horizon = OffsetDateTime::from_unix_timestamp(self.horizon).unwrap();
        lab.set("last_modified", json!(format_time(horizon)));
        lab.set(
            "indicators_per_document",
            json!(self.per_document.to_string()),
        );
    }

    /// Whether the job must send `i`: a plain reading of the job's documented filters.
    fn wants(&self, i: &Indicator) -> bool {
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
        i.active
            && self.types.contains(&i.type_name.as_str())
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
            && epoch(&i.last_modified) >= self.horizon
            && !unsafe_value(i)
            && expected_name(i).is_some()
    }
}

/// What the app's source must hold for one indicator.
#[derive(Debug, Clone)]
struct Want {
    name: String,
    /// The rendered content's rev, as the description marker carries it (the md5 Tanium
    /// reports is of what it stored, which may not be the bytes sent).
    rev: String,
    last_modified: i64,
}

fn epoch(s: &str) -> i64 {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// The record as the TC API serves it (the simulator fills a web link and zero counts in).
fn as_served(i: &Indicator, tc_url: &str) -> Indicator {
    let mut i = i.clone();
    i.web_link
        .get_or_insert_with(|| format!("{tc_url}/#/details/indicators/{}/overview", i.id));
    i.threat_assess_score.get_or_insert(0);
    i.false_positives.get_or_insert(0);
    i
}

/// identity -> what its document must be, for the current TC snapshot.
fn expected(
    job: &Job,
    snapshot: &[Indicator],
    tc_url: &str,
) -> Result<BTreeMap<String, Want>, String> {
    let mut out = BTreeMap::new();
    for i in snapshot.iter().filter(|i| job.wants(i)) {
        let name = expected_name(i).unwrap_or_default();
        let p = intel::render(&as_served(i, tc_url), job.format())
            .map_err(|e| format!("the test wants {name} but the renderer refuses it: {e}"))?;
        if p.name != name {
            return Err(format!("renderer names {name:?} as {:?}", p.name));
        }
        let rev = if job.per_document > 1 {
            group::member(&as_served(i, tc_url))
                .map_err(|e| format!("{name} cannot be a member: {e}"))?
                .rev
        } else {
            p.rev
        };
        out.insert(
            p.identity.to_string(),
            Want {
                name,
                rev: rev.to_string(),
                last_modified: epoch(&i.last_modified),
            },
        );
    }
    Ok(out)
}

fn identity(i: &Indicator) -> Option<String> {
    intel::identity_of(&i.owner_name, i.kind()?, &i.summary)
        .ok()
        .map(|id| id.to_string())
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
                    Fault::Delay(Duration::from_millis(TIMEOUT_SECS * 1000 + 500))
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
                Fault::Delay(Duration::from_millis(TIMEOUT_SECS * 1000 + 500)),
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

// ---------------------------------------------------------------------------------------------
// Mutations of ThreatConnect between runs
// ---------------------------------------------------------------------------------------------

struct World {
    next_id: i64,
    new_owners: u32,
    /// identity -> when TC recorded its deletion (epoch seconds)
    deleted: HashMap<String, i64>,
    /// TC id -> identity, for deleted indicators
    identities: HashMap<i64, String>,
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
                    let id = identity(&i);
                    if lab.tc.delete(i.id) {
                        if let Some(id) = id {
                            w.deleted.insert(id.clone(), now_secs());
                            w.identities.insert(i.id, id);
                        }
                        done.push(("delete", i.id));
                    }
                }
            }
        }
    }
    done
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// The app's documents; a grouped document stands for one document per member (named, ided
/// and marked as that indicator's own document would be), so every check reads per indicator.
fn app_docs(lab: &Lab) -> Vec<SimDoc> {
    let docs = lab
        .tanium
        .source_id(APP_SOURCE)
        .map(|id| lab.tanium.docs_in(id))
        .unwrap_or_default();
    let mut out = Vec::new();
    for d in docs {
        let Some(g) = group::read(&d.body).ok().filter(|g| g.key.is_some()) else {
            out.push(d);
            continue;
        };
        for m in g.members {
            out.push(SimDoc {
                id: (m.identity.as_u128() >> 65) as i64,
                name: m.title(),
                intrinsic_id: m.identity.to_string(),
                description: format!("tc-sync: {} rev {}", m.identity, m.rev),
                revision_id: m.rev.0 as i64,
                ..d.clone()
            });
        }
    }
    out
}

fn foreign_docs(lab: &Lab) -> Vec<SimDoc> {
    let app = lab.tanium.source_id(APP_SOURCE);
    lab.tanium
        .docs()
        .into_iter()
        .filter(|d| Some(d.source_id) != app)
        .collect()
}

/// Differences between the app's source and what it must hold.
#[derive(Debug, Default)]
struct Diff {
    /// Expected identities without a current document (missing or stale content).
    undelivered: Vec<String>,
    /// Identities in the source that must not be there.
    extra: Vec<String>,
    /// Identities held by more than one document.
    duplicated: Vec<String>,
}

impl Diff {}

/// The app identity a stored document carries (STIX root ids are namespaced).
fn doc_identity(d: &SimDoc) -> String {
    intel::identity_from_doc(Some(&d.intrinsic_id), &d.name, Some(&d.description))
        .map_or_else(|| d.intrinsic_id.clone(), |id| id.to_string())
}

fn doc_rev(d: &SimDoc) -> String {
    intel::rev_from_doc(Some(&d.description))
        .map(|r| r.to_string())
        .unwrap_or_default()
}

fn diff(want: &BTreeMap<String, Want>, docs: &[SimDoc]) -> Diff {
    let ids: Vec<String> = docs.iter().map(doc_identity).collect();
    let mut by_id: BTreeMap<&str, Vec<&SimDoc>> = BTreeMap::new();
    for (d, id) in docs.iter().zip(&ids) {
        by_id.entry(id.as_str()).or_default().push(d);
    }
    let mut out = Diff::default();
    for (id, w) in want {
        let current = by_id
            .get(id.as_str())
            .is_some_and(|ds| ds.iter().any(|d| doc_rev(d) == w.rev && d.name == w.name));
        if !current {
            out.undelivered.push(id.clone());
        }
    }
    for (id, ds) in &by_id {
        if !want.contains_key(*id) {
            out.extra.push(id.to_string());
        }
        if ds.len() > 1 {
            out.duplicated.push(id.to_string());
        }
    }
    out
}

/// The multiset of names must match too (names, not only identities, are what users see).
fn names_match(want: &BTreeMap<String, Want>, docs: &[SimDoc]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut have: BTreeMap<&str, u32> = BTreeMap::new();
    for d in docs {
        if seen.insert(doc_identity(d)) {
            *have.entry(d.name.as_str()).or_default() += 1;
        }
    }
    let mut need: BTreeMap<&str, u32> = BTreeMap::new();
    for w in want.values() {
        *need.entry(w.name.as_str()).or_default() += 1;
    }
    if have != need {
        let missing: Vec<_> = need
            .iter()
            .filter(|(n, c)| have.get(*n) != Some(c))
            .take(5)
            .collect();
        let extra: Vec<_> = have
            .iter()
            .filter(|(n, c)| need.get(*n) != Some(c))
            .take(5)
            .collect();
        return Err(format!(
            "names differ: expected but not held {missing:?}; held but not expected {extra:?}"
        ));
    }
    Ok(())
}

fn count_in(message: &str, word: &str) -> Option<u64> {
    let at = message.find(&format!(" {word}"))?;
    let digits: String = message[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

const SECRETS: [&str; 3] = ["sim-secret-key", "s3cret!", LAB_PARAM_KEY];

fn describe(lab: &Lab, ids: &[String], snapshot: &[Indicator]) -> String {
    let names: BTreeMap<String, String> = snapshot
        .iter()
        .filter_map(|i| Some((identity(i)?, format!("{} {}", i.type_name, i.summary))))
        .collect();
    let docs = app_docs(lab);
    ids.iter()
        .take(4)
        .map(|id| {
            names.get(id).cloned().unwrap_or_else(|| {
                docs.iter()
                    .find(|d| &doc_identity(d) == id)
                    .map(|d| d.name.clone())
                    .unwrap_or_else(|| id.clone())
            })
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
    /// What the round-2 switches made happen: seeds with the label listing capped before the
    /// job's label, runs that waited for a deploy still running, documents TR disabled, ...
    round2: BTreeMap<&'static str, u64>,
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
        for (k, v) in &o.round2 {
            *self.round2.entry(k).or_default() += v;
        }
    }

    fn saw(&mut self, what: &'static str) {
        *self.round2.entry(what).or_default() += 1;
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
    killed: bool,
    requests: u64,
}

fn run_with(
    lab: &mut Lab,
    plan: &Plan,
    stats: &mut Stats,
    during: &mut dyn FnMut(&Lab),
) -> Result<Outcome, String> {
    for p in &plan.faults {
        server(lab, p.side).inject(p.rule.clone());
    }
    let base_tc = lab.tc.server().total_requests();
    let base_ta = lab.tanium.server().total_requests();
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
    let mut job = Job::random(&mut rng);
    if grouped {
        job.per_document = *pick(&mut rng, &[3, 10, 40, 500]);
    }
    job.apply(&mut lab);
    lab.set("http_timeout_secs", json!(TIMEOUT_SECS.to_string()));
    lab.set("tanium_workers", json!((1 + rng.below(8)).to_string()));
    lab.set("tc_page_size", json!((5 + rng.below(60)).to_string()));
    if chance(&mut rng, 25) {
        lab.set("reconcile_interval_hours", json!("0"));
    }
    lab.persist_on_partial = chance(&mut rng, 70);
    lab.tanium.set_honour_source_filter(chance(&mut rng, 50));
    lab.tanium.set_ids_as_strings(chance(&mut rng, 20));
    // What real servers may do where the recorded evidence is silent: each way, at random.
    lab.tanium.set_intrinsic_from(if chance(&mut rng, 50) {
        IntrinsicFrom::PackageRoot
    } else {
        IntrinsicFrom::FirstIndicator
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
    };
    Ok((lab, job, generation, rng, round2))
}

/// TR between runs: turns noisy documents of the job's off (everywhere or on some endpoints)
/// and now and then on again, and an admin starts a deploy in the console (finished by the
/// next run's start). What it did, for the stats.
fn threat_response_acts(rng: &mut Rng, lab: &Lab, console: &mut bool, stats: &mut Stats) {
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
}

/// The job's documents TR has disabled, as the listing shows them.
fn disabled_docs(lab: &Lab, generation: ApiGeneration, r2: Round2) -> u64 {
    if generation != ApiGeneration::V4 || !r2.health_listed {
        return 0;
    }
    lab.source_docs()
        .iter()
        .filter(|d| d.health.disabled || d.health.disabled_endpoints > 0)
        .count() as u64
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
    let mut console = false;
    let mut first_fault_free_dropped = false;
    let mut world = World {
        next_id: 500_000,
        new_owners: 0,
        deleted: HashMap::new(),
        identities: HashMap::new(),
    };
    let foreign_before = foreign_docs(&lab);
    let mut last_requests = 60;
    // A run the app saw through changed the source but no deploy followed yet (4.x only).
    let mut deploy_owed = false;
    let total_runs = runs + 2;
    for run in 0..total_runs {
        let fault_free = run >= runs;
        let ctx = |msg: String| format!("seed {seed} run {run}: {msg}");
        if fault_free && run == runs {
            // Nothing keeps the owed deploy from the fault-free runs.
            lab.tanium.finish_deploys();
            lab.tanium.set_deploy_duration(Some(Duration::ZERO));
            console = false;
        }
        if !fault_free && run > 0 {
            threat_response_acts(&mut rng, &lab, &mut console, &mut stats);
            let n = rng.below(7);
            stats.mutations += mutate(&mut rng, &lab, &mut world, n, false).len() as u64;
            if chance(&mut rng, 8) {
                let aspect = rng.below(6);
                job.change(&mut rng, aspect);
                job.apply(&mut lab);
                if std::env::var_os("CHAOS_VERBOSE").is_some() {
                    eprintln!("seed {seed} run {run}: job edited (aspect {aspect}): {job:?}");
                }
                stats.job_changes += 1;
            }
        }
        // Runs here follow one another: a lease left by an earlier one (killed, or its delete
        // failed) is of a run that ended, as if its expiry had passed.
        expire_leases(&lab);
        let plan = if fault_free {
            Plan::default()
        } else {
            plan_faults(&mut rng, generation, last_requests)
        };
        if std::env::var_os("CHAOS_VERBOSE").is_some() && !plan.faults.is_empty() {
            eprintln!("seed {seed} run {run}: plan {:?}", plan.faults);
        }
        let docs_before = app_docs(&lab);
        // The checkpoint this run starts from (the lab's first runs use "90 days ago").
        let start_lm = lab
            .persisted
            .get("last_modified")
            .and_then(Value::as_str)
            .map(epoch)
            .unwrap_or(job.horizon);
        let deploys_before = lab.tanium.deploy_count();
        let writes_before = writes(&lab, generation);
        let disabled_before = disabled_docs(&lab, generation, r2);
        let mut touched: Vec<i64> = Vec::new();
        let mid_run = plan.mutate_at.map(|_| 1 + rng.below(4)).unwrap_or(0);
        let mut mid_rng = Rng::new(rng.next_u64());
        let out = run_with(&mut lab, &plan, &mut stats, &mut |lab| {
            touched = mutate(&mut mid_rng, lab, &mut world, mid_run, true)
                .into_iter()
                .map(|(_, id)| id)
                .collect();
        })
        .map_err(ctx)?;
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
        // Refused three runs in a row (deploys running that long) is a failure by design.
        fatal_possible |= out
            .result
            .message
            .contains("intel deploy failed: refused with 400");
        let tanium_write_faults = plan.faults.iter().zip(&fired).any(|(p, f)| {
            f.2 > 0 && p.side == Side::Tanium && p.rule.method.as_deref() != Some("GET")
        });
        let r = &out.result;
        stats.runs += 1;
        *stats.codes.entry(r.code).or_default() += 1;
        if !out.killed {
            last_requests = out.requests.max(2);
        }
        let snapshot = lab.tc.snapshot();
        let want = expected(&job, &snapshot, &lab.tc.server().url()).map_err(ctx)?;
        let docs = app_docs(&lab);
        let d = diff(&want, &docs);
        // Indicators changed while the run was in flight may or may not have been seen by it;
        // the next run must catch up (the Last Modified check below still covers them).
        let racing: BTreeSet<String> = snapshot
            .iter()
            .filter(|i| touched.contains(&i.id))
            .filter_map(identity)
            .chain(
                touched
                    .iter()
                    .filter_map(|id| world.identities.get(id).cloned()),
            )
            .collect();
        stats.duplicates_seen += d.duplicated.len() as u64;
        let detail = || {
            format!(
                "exit {} message {:?}; faults fired {:?}; expire_at {:?}; kill_at {:?}; run folder {}",
                r.code,
                r.message,
                fired
                    .iter()
                    .filter(|f| f.2 > 0)
                    .map(|f| (f.1, f.2))
                    .collect::<Vec<_>>(),
                plan.expire_at,
                plan.kill_at,
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
        // No secret anywhere the app writes.
        let results_text =
            std::fs::read_to_string(r.dir.join("out").join("results.tc")).unwrap_or_default();
        for s in SECRETS {
            for (what, text) in [
                ("message.tc", &r.message),
                ("app.log", &r.log),
                ("stdout", &r.stdout),
                ("stderr", &r.stderr),
                ("results.tc", &results_text),
            ] {
                if text.contains(s) {
                    return fail(format!("a secret appears in {what}"));
                }
            }
        }
        if !r.param_file_deleted && !out.killed {
            return fail("the param file was left behind".into());
        }
        if out.killed && r.code == -1 {
            continue;
        }
        let job_labels = lab
            .tanium
            .labels()
            .iter()
            .filter(|l| l.name.eq_ignore_ascii_case("ThreatConnect"))
            .count();
        if job_labels > 1 {
            return fail(format!(
                "{job_labels} labels named ThreatConnect: one was made twice"
            ));
        }
        if r.code == 0 {
            let said = r.message.contains("disabled by Threat Response");
            let count = format!(
                " {disabled_before} document{} ",
                if disabled_before == 1 { "" } else { "s" }
            );
            if said != (disabled_before > 0) || (said && !r.message.contains(&count)) {
                return fail(format!(
                    "{disabled_before} documents TR disabled, and the message says otherwise"
                ));
            }
            if said {
                stats.saw("runs that reported documents TR disabled");
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
        let says_failed =
            r.message.contains(" failed") || r.message.contains("incomplete") || held_back;
        match r.code {
            0 => {
                if !r.message.starts_with("Synced: ") || says_failed {
                    return fail("exit 0 with a message that reports trouble".into());
                }
                let undelivered: Vec<String> = d
                    .undelivered
                    .iter()
                    .filter(|i| !racing.contains(*i))
                    .cloned()
                    .collect();
                let extra: Vec<String> = d
                    .extra
                    .iter()
                    .filter(|i| !racing.contains(*i))
                    .cloned()
                    .collect();
                if !undelivered.is_empty() || !extra.is_empty() {
                    for id in undelivered.iter().take(2) {
                        let w = &want[id];
                        for doc in docs.iter().filter(|x| &doc_identity(x) == id) {
                            eprintln!(
                                "seed {seed} run {run}: held {:?} rev {} (want {:?} rev {})",
                                doc.name,
                                doc_rev(doc),
                                w.name,
                                w.rev
                            );
                        }
                    }
                    return fail(format!(
                        "exit 0 but the source is not what TC says: undelivered [{}], extra [{}]",
                        describe(&lab, &undelivered, &snapshot),
                        describe(&lab, &extra, &snapshot)
                    ));
                }
                if racing.is_empty() {
                    names_match(&want, &docs).map_err(|e| ctx(format!("{e}\n    {}", detail())))?;
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
        let changed = docs_before != docs;
        if lab.tanium.deploy_count() > deploys_before {
            deploy_owed = false;
        } else if changed && generation == ApiGeneration::V4 && !out.killed {
            // Known limit: a kill between the writes and the deploy, or a platform that drops
            // results.tc after exit 3, leaves the deploy to the next run that writes.
            deploy_owed |= r.code == 0 || (r.code == 3 && lab.persist_on_partial);
        }
        // (the message may be cut before it says so; the log says it whole)
        let owed_said = r.log.contains("the next run deploys this run's intel");
        if r.code == 0
            && changed
            && generation == ApiGeneration::V4
            && lab.tanium.deploy_count() == deploys_before
            && !owed_said
        {
            return fail("the run changed the source and exited 0 without deploying".into());
        }
        if r.code == 0 && !tanium_write_faults && !out.killed {
            let before: BTreeMap<i64, &SimDoc> = docs_before.iter().map(|d| (d.id, d)).collect();
            let after: BTreeMap<i64, &SimDoc> = docs.iter().map(|d| (d.id, d)).collect();
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
            let said = (
                count_in(&r.message, "created"),
                count_in(&r.message, "updated"),
                count_in(&r.message, "removed"),
            );
            if said != (Some(created), Some(updated), Some(removed)) {
                let gone: Vec<&str> = before
                    .iter()
                    .filter(|(k, _)| !after.contains_key(k))
                    .map(|(_, d)| d.name.as_str())
                    .collect();
                return fail(format!(
                    "message counts {said:?} but Tanium saw {created} created, {updated} updated, {removed} removed ({})",
                    gone.join("; ")
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
            let next_full = r
                .results
                .get("last_full_reconcile")
                .is_some_and(|v| v.is_empty())
                || lab
                    .persisted
                    .get("last_full_reconcile")
                    .and_then(Value::as_str)
                    == Some("")
                || lab.persisted.get("last_full_reconcile").is_none();
            for id in &d.undelivered {
                let w = &want[id];
                // Older than where this run started: only a full reconcile reaches it, and
                // the next run is one.
                let left_to_full = next_full && w.last_modified <= start_lm;
                if w.last_modified <= lm && !left_to_full {
                    let ind = snapshot
                        .iter()
                        .find(|i| identity(i).as_deref() == Some(id.as_str()));
                    return fail(format!(
                        "last_modified {} moved past undelivered {} (modified {}): {ind:?}; job {job:?}",
                        format_time(OffsetDateTime::from_unix_timestamp(lm).unwrap()),
                        w.name,
                        format_time(OffsetDateTime::from_unix_timestamp(w.last_modified).unwrap())
                    ));
                }
            }
            if !next_full {
                for id in &d.extra {
                    let cause = snapshot
                        .iter()
                        .find(|i| identity(i).as_deref() == Some(id.as_str()))
                        .map(|i| (epoch(&i.last_modified), false))
                        .or_else(|| world.deleted.get(id).map(|t| (*t, true)));
                    let ok = match cause {
                        Some((t, false)) => t > lm,
                        Some((t, true)) => t >= lm,
                        None => false,
                    };
                    if !ok {
                        return fail(format!(
                            "last_modified moved past an undelivered removal ({}; cause {cause:?}, last_modified {lm}) and the next run is not a full reconcile",
                            describe(&lab, std::slice::from_ref(id), &snapshot)
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
            if deploy_owed {
                return fail("a failed intel deploy was never retried".into());
            }
            if !d.duplicated.is_empty() {
                return fail(format!(
                    "after a fault-free run two documents share an identity: {}",
                    describe(&lab, &d.duplicated, &snapshot)
                ));
            }
            // The job's default Tanium Labels: every document carries it once the run settled,
            // but for those whose removal the guard holds back (no run looks at them any more).
            let held = |doc: &SimDoc| held_back && d.extra.contains(&doc_identity(doc));
            let labelled = |doc: &SimDoc| {
                lab.tanium
                    .doc_label_names(doc.id)
                    .iter()
                    .any(|l| l == "ThreatConnect")
            };
            if let Some(doc) = lab
                .source_docs()
                .into_iter()
                .find(|doc| !held(doc) && !labelled(doc))
            {
                return fail(format!(
                    "after a fault-free run document {} \"{}\" lacks the ThreatConnect label",
                    doc.id, doc.name
                ));
            }
        }
        if run == runs {
            // A platform that drops results.tc after exit 3 hands the next run the deploy
            // this one owed before it deployed.
            first_fault_free_dropped = r.code == 3 && !lab.persist_on_partial;
        }
        if run == runs + 1 {
            let wrote = writes(&lab, generation) - writes_before;
            let settled = r.code == 0 || (r.code == 3 && held_back);
            let deployed = lab.tanium.deploy_count() - deploys_before;
            if !settled || wrote != 0 || deployed > u64::from(first_fault_free_dropped) {
                return fail(format!(
                    "a second fault-free run must write nothing, it sent {wrote} writes"
                ));
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
    let jobs = env_u64("CHAOS_JOBS", 4).max(1) as usize;
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
    eprintln!("chaos: round-2 switches: {:?}", t.round2);
    eprintln!(
        "chaos: {} seeds x {} runs (+2 fault-free) in {:.0} s: {} runs, {} faults fired ({} killed, {} session expiries, {:?}), exit codes {:?}, {} TC mutations between runs and {} during runs, {} job edits, {} duplicate identities seen mid-way",
        seeds.len(),
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
    let before = app_docs(&lab);
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
    let after = app_docs(&lab);
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

/// Found by chaos (mid-run TC changes): sorted by lastModified, an indicator modified while a
/// pull was in flight jumped to the end, offset paging skipped the one that slid into the page
/// already read, and the full reconcile removed that one's document (exit 0). Pulls are now in
/// id order.
#[test]
fn an_indicator_modified_during_a_full_pull_does_not_cost_another_its_document() {
    pull_with_a_change_mid_way(|lab| {
        lab.tc
            .update(1, |i| i.description = Some("edited mid-pull".into()));
    });
}

/// Was a known gap with offset paging: a deletion while a full pull was in flight shifted every
/// later record by one, so one record was skipped and its document removed until the next full
/// reconcile. Fixed by keyset paging (`(<tql>) AND id > <last id>`) in TcClient::indicators.
#[test]
fn an_indicator_deleted_during_a_full_pull_does_not_cost_another_its_document() {
    pull_with_a_change_mid_way(|lab| {
        lab.tc.delete(1);
    });
}

fn pull_with_a_change_mid_way(change: impl FnOnce(&Lab)) {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    let t0 = OffsetDateTime::now_utc() - time::Duration::hours(2);
    for n in 0..30i64 {
        let ip = format!("203.0.113.{}", n + 1);
        lab.tc.insert(Indicator {
            id: n + 1,
            owner_name: "Demo Org".into(),
            type_name: "Address".into(),
            summary: ip.clone(),
            ip: Some(ip),
            threat_assess_score: Some(500),
            last_modified: format_time(t0 + time::Duration::minutes(n)),
            ..Indicator::default()
        });
    }
    lab.set("tc_page_size", json!("10"));
    lab.set("reconcile_interval_hours", json!("0"));
    lab.set("http_timeout_secs", json!("30"));
    let first = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(first.code, 0, "{}", first.message);
    assert_eq!(app_docs(&lab).len(), 30);

    // Hold page 2 at the server; meanwhile an analyst edits an indicator from page 1.
    lab.tc.server().inject(
        FaultRule::new(
            Some("GET"),
            "/api/v3/indicators",
            1,
            Fault::Delay(Duration::from_millis(1500)),
        )
        .after(1),
    );
    let before = lab.tc.server().hits("GET /api/v3/indicators");
    let running = lab.start_run(&Map::new(), &[]).unwrap();
    let started = Instant::now();
    while lab.tc.server().hits("GET /api/v3/indicators") < before + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "page 2 never asked for"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    change(&lab);
    let second = lab.finish(running).unwrap();
    assert!(lab.quiesce(Duration::from_secs(30)));
    assert_eq!(second.code, 0, "{}", second.message);
    let names: BTreeSet<String> = app_docs(&lab).into_iter().map(|d| d.name).collect();
    for n in 2..=30 {
        let name = format!("ThreatConnect Address 203.0.113.{n}");
        assert!(
            names.contains(&name),
            "{name} lost its document: {}",
            second.message
        );
    }
}
