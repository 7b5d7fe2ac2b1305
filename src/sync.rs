//! The sync: read the app's Tanium source, pull what changed in ThreatConnect, create / update /
//! remove intel documents, deploy once, and compute a safe new Last Modified.
//!
//! Only this module knows the order of the steps. `tc`, `tanium` and `intel` know nothing of
//! each other; this module maps between them.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::compact::CompactMap;
use crate::config::{IntelFormat, JobConfig};
use crate::error::{Error, Result};
use crate::intel::{self, Package};
use crate::tanium::client::TaniumClient;
use crate::tanium::model::{IntelDoc, Upload};
use crate::tc::client::TcClient;
use crate::tc::model::{Indicator, IndicatorType};
use crate::tc::tql;

/// Overlap kept between runs, so clock skew and same-second updates are never missed.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// After this many consecutive failed writes Tanium is treated as down and dispatch stops.
const CONSECUTIVE_FAILURES_TO_ABORT: u32 = 25;

/// How many failure descriptions are kept for the log summary and message.tc.
const KEPT_ERRORS: usize = 5;

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

/// Counters of one run, reported in message.tc and the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Indicators received from TC that qualified (before rendering).
    pub matched: u64,
    /// Documents created.
    pub created: u64,
    /// Documents replaced because their content changed.
    pub updated: u64,
    /// Documents removed (no longer qualifying, deleted in TC, duplicates, unidentifiable).
    pub removed: u64,
    /// Indicators whose document was already identical.
    pub unchanged: u64,
    /// Indicators skipped because their value is invalid.
    pub skipped_invalid: u64,
    /// Indicators of types this app does not send (user TQL), dropped.
    pub dropped_other_types: u64,
    /// Creates or updates that failed.
    pub failed_writes: u64,
    /// Removals that failed.
    pub failed_removals: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} matched, {} created, {} updated, {} removed, {} unchanged, {} skipped (invalid), {} not sent (type not Address/File/Host), {} writes and {} removals failed",
            self.matched,
            self.created,
            self.updated,
            self.removed,
            self.unchanged,
            self.skipped_invalid,
            self.dropped_other_types,
            self.failed_writes,
            self.failed_removals
        )
    }
}

/// Result of a run: what `job` turns into message.tc, results.tc and the exit code.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Counters.
    pub tally: Tally,
    /// True when this run compared the whole match set with the source.
    pub full_reconcile: bool,
    /// Whether every removal candidate was examined (false when TC failed mid-way).
    pub removals_complete: bool,
    /// Whether the TC pull finished (false when a page failed after retries).
    pub pull_complete: bool,
    /// Why the run stopped before the end (TC pull failed, Tanium kept failing), as a phrase.
    pub stopped: Option<String>,
    /// New Last Modified to persist (None in a dry run).
    pub new_last_modified: Option<OffsetDateTime>,
    /// The first few failures, for the log and message.
    pub errors: Vec<String>,
    /// Whether deploy was called.
    pub deployed: bool,
    /// Deploy was needed but failed: written intel may not reach endpoints until a deploy works.
    pub deploy_failed: bool,
    /// Tanium source name and id.
    pub source: (String, Option<i64>),
}

impl SyncReport {
    /// True when something could not be delivered or removed.
    pub fn has_failures(&self) -> bool {
        self.tally.failed_writes > 0
            || self.tally.failed_removals > 0
            || !self.pull_complete
            || !self.removals_complete
            || self.deploy_failed
    }

    /// True when at least one document change went through (or nothing needed doing).
    pub fn delivered_anything(&self) -> bool {
        let t = &self.tally;
        t.created + t.updated + t.removed + t.unchanged > 0
    }
}

const SEEN: u8 = 1;
const GONE: u8 = 2;
/// The document is in the other intel format than the job now renders.
const OTHER_FORMAT: u8 = 4;

/// What the source holds for one identity, kept compact (48 bytes with its key in the index)
/// for million-doc sources.
#[derive(Debug, Clone, Copy)]
struct Entry {
    doc_id: i64,
    rev: u64,
    /// The first 64 bits of the document's MD5 (0: unknown).
    md5: u64,
    flags: u8,
}

/// The app's source content: identity -> document, plus documents to clean up.
#[derive(Default)]
struct SourceIndex {
    map: CompactMap<u128, Entry>,
    /// Identities this run creates documents for (16 bytes each rather than a whole entry, so
    /// a first sync of a million stays small); a second sighting in the run is skipped.
    created: CompactMap<u128, ()>,
    /// Extra documents claiming an identity already present (same indicator twice).
    duplicates: Vec<(i64, String)>,
    /// Documents in the app's source that carry no identity of ours.
    unidentified: Vec<(i64, String)>,
    docs: u64,
    /// Documents in the other intel format than the job renders now.
    other_format: u64,
}

fn parse_uuid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

fn parse_hex_u64(s: &str) -> Option<u64> {
    u64::from_str_radix(s.get(..16.min(s.len()))?, 16).ok()
}

/// The first 64 bits of a hex MD5 (0 when it is not one): enough to tell content apart.
fn parse_md5(s: &str) -> u64 {
    if s.len() == 32 {
        u128::from_str_radix(s, 16).map_or(0, |v| (v >> 64) as u64)
    } else {
        0
    }
}

impl SourceIndex {
    fn add(&mut self, doc: IntelDoc, format: IntelFormat) {
        self.docs += 1;
        let identity = intel::identity_from_doc(
            doc.intrinsic_id.as_deref(),
            &doc.name,
            doc.description.as_deref(),
        )
        .and_then(|s| parse_uuid(&s));
        let Some(key) = identity else {
            self.unidentified.push((doc.id, doc.name));
            return;
        };
        let other = doc_format(&doc).is_some_and(|f| f != format);
        self.other_format += u64::from(other);
        let entry = Entry {
            doc_id: doc.id,
            rev: intel::rev_from_doc(doc.description.as_deref())
                .and_then(|r| parse_hex_u64(&r))
                .unwrap_or(0),
            md5: doc.md5.as_deref().map(parse_md5).unwrap_or(0),
            flags: if other { OTHER_FORMAT } else { 0 },
        };
        match self.map.get_mut(&key) {
            None => {
                self.map.insert(key, entry);
            }
            Some(existing) => {
                // Keep the one in the current format (a format switch interrupted between its
                // create and its delete leaves both), then the oldest (lowest id), so Tanium ids
                // stay stable.
                let rank = |e: &Entry| (e.flags & OTHER_FORMAT != 0, e.doc_id);
                let (keep, drop) = if rank(&entry) < rank(existing) {
                    (entry, *existing)
                } else {
                    (*existing, entry)
                };
                *existing = keep;
                self.duplicates.push((drop.doc_id, doc.name));
            }
        }
    }
}

/// The format of a listed document, from Tanium's `type` (or the name of the file it came from).
fn doc_format(doc: &IntelDoc) -> Option<IntelFormat> {
    let kind = doc.kind.as_deref()?.to_ascii_lowercase();
    if kind.contains("stix") {
        Some(IntelFormat::Stix)
    } else if kind.contains("ioc") {
        Some(IntelFormat::OpenIoc)
    } else {
        None
    }
}

/// One write for the worker pool.
enum Op {
    Create {
        pkg: Package,
        last_modified: Option<OffsetDateTime>,
    },
    Update {
        doc_id: i64,
        pkg: Package,
        last_modified: Option<OffsetDateTime>,
        /// The listing could not tell whether the content changed (no rev, md5 differs):
        /// read the document's marker first unless Tanium's md5 proved trustworthy this run.
        verify: bool,
    },
    Delete {
        doc_id: i64,
        what: String,
    },
    /// A format switch: create the new document first, delete the old one only once the new
    /// one exists, so a failure never leaves the indicator without a document.
    Replace {
        old_doc_id: i64,
        pkg: Package,
        last_modified: Option<OffsetDateTime>,
    },
}

impl Op {
    /// Counts an op that could not be attempted (Tanium is down, or the pool is gone).
    fn not_attempted(self, s: &mut Shared) {
        match self {
            Op::Create { last_modified, .. }
            | Op::Update { last_modified, .. }
            | Op::Replace { last_modified, .. } => {
                s.tally.failed_writes += 1;
                s.note_undelivered(last_modified);
            }
            Op::Delete { .. } => s.tally.failed_removals += 1,
        }
    }
}

/// Shared result state of the worker pool.
#[derive(Default)]
struct Shared {
    tally: Tally,
    errors: Vec<String>,
    /// Oldest lastModified among indicators whose write failed.
    oldest_failed: Option<OffsetDateTime>,
    wrote_anything: bool,
}

/// Whether Tanium's listing `md5` is the MD5 of the bytes we upload (it is when the server
/// stores documents byte for byte, which is unconfirmed): learned from write answers.
const MD5_UNKNOWN: u8 = 0;
const MD5_TRUSTED: u8 = 1;
const MD5_UNTRUSTED: u8 = 2;

impl Shared {
    fn note_error(&mut self, msg: String) {
        log::error!("{msg}");
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(msg);
        }
    }

    fn note_undelivered(&mut self, lm: Option<OffsetDateTime>) {
        if let Some(lm) = lm {
            self.oldest_failed = Some(self.oldest_failed.map_or(lm, |o| o.min(lm)));
        }
    }
}

fn upload_of(pkg: &Package) -> Upload<'_> {
    Upload {
        body: &pkg.body,
        kind: match pkg.format {
            IntelFormat::Stix => "stix",
            IntelFormat::OpenIoc => "openioc",
        },
        file_name: &pkg.file_name,
    }
}

/// Executes writes on a small bounded pool so WAN latency does not serialise a first sync.
/// Without a sender (dry run) every op is only counted.
struct Pool {
    tx: Option<mpsc::SyncSender<Op>>,
    shared: Arc<Mutex<Shared>>,
    broken: Arc<AtomicBool>,
}

/// The rev in a stored document's description marker (None: not there or not ours).
fn current_rev(tanium: &TaniumClient, doc_id: i64) -> Result<Option<u64>> {
    Ok(tanium
        .get_doc(doc_id)?
        .and_then(|d| intel::rev_from_doc(d.description.as_deref()))
        .and_then(|r: String| parse_hex_u64(&r)))
}

struct WorkerState<'a> {
    rx: &'a Mutex<mpsc::Receiver<Op>>,
    shared: &'a Mutex<Shared>,
    broken: &'a AtomicBool,
    consecutive: &'a AtomicU32,
    md5_trust: &'a AtomicU8,
}

fn worker(tanium: &TaniumClient, source_id: i64, w: &WorkerState) {
    let WorkerState {
        rx,
        shared,
        broken,
        consecutive,
        md5_trust,
    } = *w;
    loop {
        let op = {
            let guard = match rx.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            match guard.recv() {
                Ok(op) => op,
                Err(_) => return,
            }
        };
        if broken.load(Ordering::SeqCst) {
            op.not_attempted(&mut shared.lock().unwrap_or_else(|p| p.into_inner()));
            continue;
        }
        if let Op::Update {
            doc_id,
            pkg,
            verify: true,
            ..
        } = &op
        {
            if md5_trust.load(Ordering::SeqCst) != MD5_TRUSTED {
                match current_rev(tanium, *doc_id) {
                    Ok(Some(rev)) if Some(rev) == parse_hex_u64(&pkg.rev) => {
                        // Same content under a different md5: Tanium does not store our bytes
                        // as sent, so its md5 cannot tell changes apart this run.
                        if md5_trust.swap(MD5_UNTRUSTED, Ordering::SeqCst) != MD5_UNTRUSTED {
                            log::info!("Tanium's md5 differs from the uploaded bytes; documents are compared by the rev in their description instead");
                        }
                        shared
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .tally
                            .unchanged += 1;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => log::debug!("could not read intel {doc_id} before updating it: {e}"),
                }
            }
        }
        let learn = |doc: &crate::tanium::model::IntelDoc, pkg: &Package| {
            if let Some(md5) = doc.md5.as_deref() {
                let trusted = md5.eq_ignore_ascii_case(&pkg.md5_hex());
                let _ = md5_trust.compare_exchange(
                    MD5_UNKNOWN,
                    if trusted { MD5_TRUSTED } else { MD5_UNTRUSTED },
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        };
        let result = match &op {
            Op::Create { pkg, .. } | Op::Replace { pkg, .. } => tanium
                .create_doc(source_id, &upload_of(pkg))
                .map(|d| learn(&d, pkg)),
            Op::Update { doc_id, pkg, .. } => tanium
                .update_doc(*doc_id, &upload_of(pkg))
                .map(|d| learn(&d, pkg)),
            Op::Delete { doc_id, .. } => tanium.delete_doc(*doc_id),
        };
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        match (op, result) {
            (
                Op::Replace {
                    old_doc_id, pkg, ..
                },
                Ok(()),
            ) => {
                // Counted as Tanium sees it: one document created, one removed.
                s.tally.created += 1;
                s.wrote_anything = true;
                consecutive.store(0, Ordering::SeqCst);
                drop(s);
                // The new document exists; only now may the old-format one go.
                let removed = tanium.delete_doc(old_doc_id);
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = removed {
                    s.tally.failed_removals += 1;
                    s.note_error(format!(
                        "could not remove the old-format document of {}: {e}",
                        pkg.name
                    ));
                } else {
                    s.tally.removed += 1;
                }
            }
            (Op::Create { .. }, Ok(())) => {
                s.tally.created += 1;
                s.wrote_anything = true;
                consecutive.store(0, Ordering::SeqCst);
            }
            (Op::Update { .. }, Ok(())) => {
                s.tally.updated += 1;
                s.wrote_anything = true;
                consecutive.store(0, Ordering::SeqCst);
            }
            (Op::Delete { .. }, Ok(())) => {
                s.tally.removed += 1;
                s.wrote_anything = true;
                consecutive.store(0, Ordering::SeqCst);
            }
            (Op::Create { pkg, last_modified }, Err(e))
            | (
                Op::Update {
                    pkg, last_modified, ..
                },
                Err(e),
            )
            | (
                Op::Replace {
                    pkg, last_modified, ..
                },
                Err(e),
            ) => {
                s.tally.failed_writes += 1;
                s.note_undelivered(last_modified);
                s.note_error(format!("could not write {}: {e}", pkg.name));
                if consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= CONSECUTIVE_FAILURES_TO_ABORT
                    && !broken.swap(true, Ordering::SeqCst)
                {
                    s.note_error(format!(
                        "{CONSECUTIVE_FAILURES_TO_ABORT} Tanium writes failed in a row; stopping writes for this run"
                    ));
                }
            }
            (Op::Delete { what, .. }, Err(e)) => {
                s.tally.failed_removals += 1;
                s.note_error(format!("could not remove {what}: {e}"));
                if consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= CONSECUTIVE_FAILURES_TO_ABORT {
                    broken.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

impl Pool {
    fn send(&self, op: Op) {
        let Some(tx) = &self.tx else {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            match op {
                Op::Create { .. } => s.tally.created += 1,
                Op::Update { .. } => s.tally.updated += 1,
                Op::Delete { .. } => s.tally.removed += 1,
                Op::Replace { .. } => {
                    s.tally.created += 1;
                    s.tally.removed += 1;
                }
            }
            return;
        };
        if let Err(mpsc::SendError(op)) = tx.send(op) {
            // All workers are gone: count the op as failed rather than lose it.
            op.not_attempted(&mut self.shared.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }
}

/// Runs one sync with already-connected clients.
pub fn run(
    config: &JobConfig,
    opts: &SyncOptions,
    tc: &TcClient,
    tanium: &TaniumClient,
) -> Result<SyncReport> {
    let started = Instant::now();
    let source_name = config.tanium.source_name.clone();

    // 1. The app's source and what it holds.
    let (source_id, created_source) = if opts.dry_run {
        (tanium.find_source(&source_name)?.map(|s| s.id), false)
    } else {
        let existed = tanium.find_source(&source_name)?;
        match existed {
            Some(s) => (Some(s.id), false),
            None => {
                // (the client logs the creation once, and only when it did create it)
                let s = tanium.find_or_create_source(&source_name)?;
                (Some(s.id), true)
            }
        }
    };
    let mut index = SourceIndex::default();
    if let Some(id) = source_id {
        tanium.list_docs(id, &mut |doc| index.add(doc, config.intel_format))?;
    }
    log::info!(
        "Tanium source \"{source_name}\" holds {} documents ({} identified, {} duplicates, {} unidentified)",
        index.docs,
        index.map.len(),
        index.duplicates.len(),
        index.unidentified.len()
    );

    // 2. Full reconcile or incremental?
    let fingerprint = config.filters.fingerprint();
    let due = match config.last_reconcile {
        None => true,
        Some(t) => {
            let age = opts.now - t;
            age.is_negative() || age.unsigned_abs() >= config.reconcile_interval
        }
    };
    let filters_changed = config
        .last_filter_hash
        .as_deref()
        .is_some_and(|h| h != fingerprint);
    // A changed Intel Format must reach every document, not only the ones TC modified since.
    let format_changed = index.other_format > 0;
    let full = index.map.is_empty() || created_source || due || filters_changed || format_changed;
    let reason = if index.map.is_empty() {
        "the source is empty"
    } else if filters_changed {
        "the job's filters changed"
    } else if format_changed {
        "the intel format changed"
    } else if due {
        "the reconcile interval has passed"
    } else {
        ""
    };
    match config.horizon {
        Some(h) => log::info!(
            "job horizon: indicators last modified before {} are never sent",
            tql::format_time(h)
        ),
        None => log::info!("job horizon: none (the job ran before it kept one)"),
    }
    if full {
        log::info!("full reconcile: {reason}");
    } else {
        log::info!(
            "incremental run: indicators modified after {}",
            tql::format_time(config.last_modified)
        );
    }

    let query_started = opts.now;
    let window = tql::Window {
        after: (!full).then_some(config.last_modified),
        horizon: config.horizon,
        until: None,
    };
    let matching_tql = tql::build(&config.filters, &window);

    let shared = Arc::new(Mutex::new(Shared::default()));
    let broken = Arc::new(AtomicBool::new(false));
    let consecutive = Arc::new(AtomicU32::new(0));
    let md5_trust = AtomicU8::new(MD5_UNKNOWN);
    let workers = if opts.dry_run {
        0
    } else {
        config.workers.max(1)
    };

    let mut pull_complete = true;
    let mut stopped = None;
    let mut removals_complete = true;
    let mut dropped_other_types = 0;
    let dry_dir = opts.out_dir.clone();
    if opts.dry_run {
        if let Some(d) = &dry_dir {
            fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }

    let (tx, rx) = mpsc::sync_channel::<Op>(workers.max(1) * 4);
    let rx = Mutex::new(rx);
    let state = WorkerState {
        rx: &rx,
        shared: &shared,
        broken: &broken,
        consecutive: &consecutive,
        md5_trust: &md5_trust,
    };
    let state = &state;
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let sid = source_id.unwrap_or(0);
            scope.spawn(move || worker(tanium, sid, state));
        }
        let pool = Pool {
            tx: if opts.dry_run { None } else { Some(tx) },
            shared: shared.clone(),
            broken: broken.clone(),
        };
        let ctx = Planner {
            config,
            opts,
            tanium,
            pool: &pool,
            shared: &shared,
            dry_dir: dry_dir.as_ref(),
        };

        // 3. Matching indicators: create / update / leave.
        let mut seen_total = 0u64;
        let pull_started = Instant::now();
        let mut stopped_early = false;
        let mut pages = tc.indicators(&matching_tql);
        while let Some(page) = pages.next() {
            let page = match page {
                Ok(p) => p,
                // Nothing received yet: the run cannot do its job (bad TQL, credentials, TC
                // down); report TC's own error as the run's error.
                Err(e) if pages.pages() == 0 => return Err(e),
                Err(e) => {
                    pull_complete = false;
                    log::error!("ThreatConnect pull stopped: {e}");
                    // message.tc is short: an unreadable answer is said by what was wrong.
                    let why = match &e {
                        Error::Protocol { detail, .. } => detail.clone(),
                        e => e.to_string(),
                    };
                    stopped = Some(format!(
                        "ThreatConnect pull incomplete (nothing removed): {why}"
                    ));
                    break;
                }
            };
            seen_total += page.len() as u64;
            for ind in page {
                if pool.broken.load(Ordering::SeqCst) {
                    // Tanium is down: everything from here on is undelivered.
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.note_undelivered(ind.last_modified_at().or(Some(query_started)));
                    stopped_early = true;
                    break;
                }
                ctx.handle_indicator(&ind, &mut index)?;
            }
            if stopped_early {
                break;
            }
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let secs = pull_started.elapsed().as_secs_f64().max(0.001);
            log::info!(
                "page {}: {seen_total} indicators so far ({:.0}/s); {} created, {} updated, {} unchanged, {} skipped",
                pages.pages(),
                seen_total as f64 / secs,
                s.tally.created,
                s.tally.updated,
                s.tally.unchanged,
                s.tally.skipped_invalid
            );
        }
        dropped_other_types = pages.dropped();
        if let Some(q) = tql::other_types(&config.filters, &window) {
            // The job's query leaves other types out, so TC says how many there were.
            match tc.count(&q) {
                Ok(n) => dropped_other_types += n,
                Err(e) => log::warn!("could not count the indicators of other types: {e}"),
            }
        }
        if dropped_other_types > 0 {
            log::info!(
                "{dropped_other_types} indicators of other types than Address, File and Host were not sent"
            );
        }
        if stopped_early {
            pull_complete = false;
            stopped.get_or_insert_with(|| "stopped early: Tanium writes kept failing".to_string());
        }

        // 4. Removals, only on complete evidence.
        if pull_complete && !pool.broken.load(Ordering::SeqCst) {
            if full {
                let why = match config.horizon {
                    Some(h) => format!(
                        "not selected any more (deleted, inactive, filtered out, or last modified before the horizon {})",
                        tql::format_time(h)
                    ),
                    None => "not selected any more (deleted, inactive or filtered out)".to_string(),
                };
                for (key, e) in index.map.iter_mut() {
                    if e.flags & (SEEN | GONE) == 0 && e.doc_id >= 0 {
                        e.flags |= GONE;
                        let what = format!("document {} ({:032x})", e.doc_id, key);
                        ctx.plan(format!("remove {what}: {why}"));
                        pool.send(Op::Delete {
                            doc_id: e.doc_id,
                            what,
                        });
                    }
                }
                for (doc_id, name) in index.unidentified.drain(..) {
                    let what = format!("document {doc_id} \"{name}\" (not made by this app)");
                    log::warn!("removing {what} from the app's own source");
                    ctx.plan(format!("remove {what}: not made by this job"));
                    pool.send(Op::Delete { doc_id, what });
                }
            } else {
                let removal_window = tql::Window {
                    after: Some(config.last_modified),
                    horizon: config.horizon,
                    until: Some(query_started),
                };
                if let Err(e) = ctx.incremental_removals(tc, &mut index, &removal_window) {
                    removals_complete = false;
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.note_error(format!("could not check for removals: {e}"));
                }
            }
            for (doc_id, name) in index.duplicates.drain(..) {
                let what = format!("duplicate document {doc_id} \"{name}\"");
                ctx.plan(format!(
                    "remove {what}: another document holds the same indicator"
                ));
                pool.send(Op::Delete { doc_id, what });
            }
        } else {
            removals_complete = false;
        }
        drop(pool);
        Ok(())
    })?;

    // Every worker has finished (the scope joined them): take the final state.
    let mut s = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    s.tally.dropped_other_types = dropped_other_types;
    if opts.dry_run {
        let t = &s.tally;
        println!(
            "plan: {} to create, {} to update, {} to remove; {} unchanged, {} skipped (invalid), {} not sent (other types)",
            t.created, t.updated, t.removed, t.unchanged, t.skipped_invalid, t.dropped_other_types
        );
    }

    // 5. Deploy once if anything changed.
    // (Also when an earlier run's deploy failed: its writes are not on the endpoints yet.)
    let mut deployed = false;
    let mut deploy_failed = false;
    if !opts.dry_run && (s.wrote_anything || config.deploy_pending) {
        match tanium.deploy() {
            Ok(d) => deployed = d,
            Err(e) => {
                deploy_failed = true;
                s.note_error(format!("intel deploy failed: {e}"));
            }
        }
    }

    // 6. The new checkpoint: never past an undelivered indicator.
    let new_last_modified = if opts.dry_run {
        None
    } else {
        let mut lm = query_started - SAFETY_MARGIN;
        if let Some(f) = s.oldest_failed {
            lm = lm.min(f - Duration::from_secs(1));
        }
        if !pull_complete {
            // Pages come in id order (stable while TC changes, see TcClient::indicators), so
            // what was not reached may have any lastModified: keep the old checkpoint.
            lm = lm.min(config.last_modified);
        }
        if !full {
            // An incremental run never moves the checkpoint backwards past where it started,
            // unless a failure requires it.
            if s.oldest_failed.is_none() && pull_complete {
                lm = lm.max(config.last_modified);
            }
        }
        Some(lm)
    };

    let report = SyncReport {
        tally: s.tally,
        full_reconcile: full,
        removals_complete,
        pull_complete,
        stopped,
        new_last_modified,
        errors: s.errors,
        deployed,
        deploy_failed,
        source: (source_name, source_id),
    };
    log::info!(
        "run finished in {:.1} s: {}{}",
        started.elapsed().as_secs_f64(),
        report.tally,
        if deployed { "; intel deployed" } else { "" }
    );
    Ok(report)
}

/// What planning one indicator needs besides the indicator and the index.
struct Planner<'a> {
    config: &'a JobConfig,
    opts: &'a SyncOptions,
    tanium: &'a TaniumClient,
    pool: &'a Pool,
    shared: &'a Mutex<Shared>,
    dry_dir: Option<&'a PathBuf>,
}

impl Planner<'_> {
    /// One plan line: printed (and logged) in a dry run, logged at debug otherwise.
    fn plan(&self, line: String) {
        if self.opts.dry_run {
            log::info!("plan: {line}");
            println!("{line}");
        } else {
            log::debug!("{line}");
        }
    }

    fn count(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.shared.lock().unwrap_or_else(|p| p.into_inner()).tally);
    }

    fn handle_indicator(&self, ind: &Indicator, index: &mut SourceIndex) -> Result<()> {
        let Some(kind) = ind.kind() else {
            self.count(|t| t.dropped_other_types += 1);
            return Ok(());
        };
        if let Some(why) = self.config.filters.rejection(ind) {
            // TC sent it but the job's filters say no (e.g. an exclude tag): it must not be in Tanium.
            if let Ok(id) = intel::identity_of(&ind.owner_name, kind, &ind.summary) {
                if let Some(key) = parse_uuid(&id) {
                    self.remove_if_present(index, key, &describe(ind), &why);
                }
            }
            return Ok(());
        }
        let lm = ind.last_modified_at();
        let pkg = match intel::render(ind, self.config.intel_format) {
            Ok(p) => p,
            Err(invalid) => {
                log::warn!("{invalid}");
                self.count(|t| t.skipped_invalid += 1);
                return Ok(());
            }
        };
        let Some(key) = parse_uuid(&pkg.identity) else {
            return Err(Error::Other(format!(
                "renderer produced a malformed identity for {}",
                pkg.name
            )));
        };
        self.count(|t| t.matched += 1);
        let rev = parse_hex_u64(&pkg.rev).unwrap_or(u64::MAX);
        let md5 = parse_md5(&pkg.md5_hex());
        match index.map.get_mut(&key) {
            Some(e) if e.flags & SEEN != 0 => {
                // The same indicator twice in one run (TC paging overlap): already handled.
            }
            Some(e)
                if e.doc_id >= 0
                    && e.flags & OTHER_FORMAT == 0
                    && (e.rev == rev || (e.md5 != 0 && e.md5 == md5)) =>
            {
                e.flags |= SEEN;
                self.count(|t| t.unchanged += 1);
            }
            Some(e) => {
                e.flags |= SEEN;
                let doc_id = e.doc_id;
                if e.flags & OTHER_FORMAT != 0 {
                    // Tanium replaces in place only when the root id stays; a format switch
                    // changes it, so a new document comes and then the old one goes.
                    e.flags |= GONE;
                    self.plan(format!(
                        "replace {}: the intel format changed to {}",
                        pkg.name,
                        format_name(self.config.intel_format)
                    ));
                    self.write_dry(&pkg)?;
                    self.pool.send(Op::Replace {
                        old_doc_id: doc_id,
                        pkg,
                        last_modified: lm,
                    });
                    return Ok(());
                }
                // Without a rev in the listing, a different md5 may only mean that Tanium
                // stores the document differently from how it was sent.
                let verify = e.rev == 0;
                if self.opts.dry_run {
                    match self.dry_update_reason(doc_id, &pkg, verify)? {
                        Some(why) => self.plan(format!("update {}: {why}", pkg.name)),
                        None => {
                            self.count(|t| t.unchanged += 1);
                            return Ok(());
                        }
                    }
                    self.write_dry(&pkg)?;
                }
                self.pool.send(Op::Update {
                    doc_id,
                    pkg,
                    last_modified: lm,
                    verify,
                });
            }
            None => {
                if index.created.insert(key, ()).is_some() {
                    // A second TC indicator with this identity in the run: already handled.
                    return Ok(());
                }
                self.plan(format!("create {}: new match", pkg.name));
                self.write_dry(&pkg)?;
                self.pool.send(Op::Create {
                    pkg,
                    last_modified: lm,
                });
            }
        }
        Ok(())
    }

    /// Why a dry run would update this document, from the stored copy's description (None:
    /// the stored copy is current after all).
    fn dry_update_reason(
        &self,
        doc_id: i64,
        pkg: &Package,
        verify: bool,
    ) -> Result<Option<String>> {
        let stored = match self.tanium.get_doc(doc_id) {
            Ok(d) => d,
            Err(e) => {
                log::debug!("could not read intel {doc_id} for the plan: {e}");
                return Ok(Some("changed in ThreatConnect".into()));
            }
        };
        let Some(description) = stored.and_then(|d| d.description) else {
            return Ok(Some("changed in ThreatConnect".into()));
        };
        if verify && intel::rev_from_doc(Some(&description)).as_deref() == Some(pkg.rev.as_str()) {
            return Ok(None);
        }
        let fields = intel::changed_fields(&description, &pkg.description);
        Ok(Some(if fields.is_empty() {
            "the document's content changed".into()
        } else {
            format!("{} changed", fields.join(", "))
        }))
    }

    fn write_dry(&self, pkg: &Package) -> Result<()> {
        if let (true, Some(d)) = (self.opts.dry_run, self.dry_dir) {
            let path = d.join(&pkg.file_name);
            fs::write(&path, pkg.body.as_bytes()).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    fn remove_if_present(&self, index: &mut SourceIndex, key: u128, what: &str, why: &str) {
        if let Some(e) = index.map.get_mut(&key) {
            if e.flags & (SEEN | GONE) == 0 && e.doc_id >= 0 {
                e.flags |= GONE;
                self.plan(format!("remove {what}: {why}"));
                self.pool.send(Op::Delete {
                    doc_id: e.doc_id,
                    what: what.to_string(),
                });
            }
        }
    }

    /// Incremental evidence of indicators that no longer qualify: deleted in TC (asked per
    /// owner: the endpoint covers only the API user's Organization unless told), or modified
    /// (including deactivated) so that the matching query no longer returns them. Every owner
    /// is asked even after one fails; the first failure is returned.
    fn incremental_removals(
        &self,
        tc: &TcClient,
        index: &mut SourceIndex,
        window: &tql::Window,
    ) -> Result<()> {
        let since = self.config.last_modified;
        let filters = &self.config.filters;
        let owners: Vec<String> = if tql::user_tql(filters).is_none() && !filters.owners.is_empty()
        {
            filters.owners.clone()
        } else {
            tc.owners()?.into_iter().map(|o| o.name).collect()
        };
        let mut first_error = None;
        for owner in &owners {
            let asked = tc.deleted_since(since, Some(owner), &mut |d| {
                let Some(kind) = IndicatorType::parse(&d.type_name) else {
                    return;
                };
                if let Ok(id) = intel::identity_of(&d.owner_name, kind, &d.summary) {
                    if let Some(key) = parse_uuid(&id) {
                        let what = format!("{} {} ({})", d.type_name, d.summary, d.owner_name);
                        self.remove_if_present(index, key, &what, "deleted in ThreatConnect");
                    }
                }
            });
            if let Err(e) = asked {
                log::error!("could not read the indicators deleted in {owner}: {e}");
                first_error.get_or_insert(e);
            }
        }
        let tql = tql::removal_check(filters, window);
        log::debug!("removal check TQL: {tql}");
        for page in tc.indicators(&tql) {
            for ind in page? {
                let Some(kind) = ind.kind() else { continue };
                if let Ok(id) = intel::identity_of(&ind.owner_name, kind, &ind.summary) {
                    if let Some(key) = parse_uuid(&id) {
                        let why = filters
                            .rejection(&ind)
                            .unwrap_or_else(|| "no longer selected by the job's query".into());
                        self.remove_if_present(index, key, &describe(&ind), &why);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn format_name(f: IntelFormat) -> &'static str {
    match f {
        IntelFormat::Stix => "STIX",
        IntelFormat::OpenIoc => "OpenIOC",
    }
}

fn describe(ind: &Indicator) -> String {
    format!("{} {} ({})", ind.type_name, ind.summary, ind.owner_name)
}
