//! The write driver, one for both layouts: a few workers run a layout's writes on Tanium in
//! parallel (WAN latency would serialise a sync otherwise), one rule says when the writes give
//! up, and one results type carries what they did, label failures and work never attempted
//! included. Only results cross the mutex.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};

use time::OffsetDateTime;

use crate::error::Error;

/// After this many writes failed in a row Tanium is taken to be down: the writes stop.
const FAILURES_IN_A_ROW: u32 = 25;

/// How many failure descriptions are kept for the log summary and message.tc.
const KEPT_ERRORS: usize = 5;

/// Why a write failed, as the driver's rules need it.
#[derive(Debug)]
pub(super) enum Failure {
    /// Tanium answered with an error, or not at all.
    Tanium(Box<Error>),
    /// A grouped document that cannot be read: it is left as it is. Tanium answered, so this
    /// is no step toward giving up.
    Unreadable,
    /// The run's own scratch file could not be read back.
    Local,
}

/// What the writes did, in either layout (a layout leaves what is not its own at 0).
#[derive(Debug, Default)]
pub(super) struct Results {
    /// Indicators given a document (per indicator), or added to one (grouped).
    pub created: u64,
    pub updated: u64,
    pub removed: u64,
    /// Documents whose labels alone changed.
    pub relabelled: u64,
    /// Writes that reading the stored document showed to be unneeded; grouped, members found
    /// current in a document read.
    pub unchanged: u64,
    pub failed_writes: u64,
    /// Of `failed_writes`, documents whose labels could not be brought to the rules.
    pub failed_labels: u64,
    pub failed_removals: u64,
    /// Writes never attempted because the writes had stopped (counted among the failed).
    pub not_attempted: u64,
    /// The first few failures, for the log summary and message.tc.
    pub errors: Vec<String>,
    /// The oldest lastModified among indicators whose document could not be written.
    pub oldest_undelivered: Option<OffsetDateTime>,
    pub wrote_anything: bool,
    /// Writes stopped early: too many failures in a row, or a missing permission.
    pub gave_up: bool,
    /// Tanium refused a write for a missing permission (the error, which names it): writes
    /// stopped there, since every other write needs the same permission.
    pub forbidden: Option<String>,
    /// Documents of the other layout retired because their indicators have documents of this
    /// one now: not indicators removed.
    pub replaced: u64,
    /// Grouped: members that left a document for one of another label set (counted there as
    /// created).
    pub moved: u64,
    /// Grouped: members the removal guard kept in their documents.
    pub held: u64,
    /// Grouped: members not added for Maximum Indicators.
    pub over_cap: u64,
    pub docs_created: u64,
    pub docs_removed: u64,
    /// Grouped: documents that could not be read (left as they are).
    pub unreadable: u64,
    /// Grouped: indicators the writes found to remove (held back or not), by reason.
    pub removals: BTreeMap<Cow<'static, str>, u64>,
    /// Jobs failed in a row at the end of the last drive (the next one goes on counting).
    in_a_row: u32,
}

impl Results {
    pub fn note_error(&mut self, msg: String) {
        log::error!("{msg}");
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(msg);
        }
    }

    pub fn note_undelivered(&mut self, lm: Option<OffsetDateTime>) {
        if let Some(lm) = lm {
            self.oldest_undelivered = Some(self.oldest_undelivered.map_or(lm, |o| o.min(lm)));
        }
    }

    /// Adds what one job did (its errors are logged as they are kept).
    fn add(&mut self, o: Results) {
        self.created += o.created;
        self.updated += o.updated;
        self.removed += o.removed;
        self.relabelled += o.relabelled;
        self.unchanged += o.unchanged;
        self.failed_writes += o.failed_writes;
        self.failed_labels += o.failed_labels;
        self.failed_removals += o.failed_removals;
        self.not_attempted += o.not_attempted;
        self.wrote_anything |= o.wrote_anything;
        self.gave_up |= o.gave_up;
        self.replaced += o.replaced;
        self.moved += o.moved;
        self.held += o.held;
        self.over_cap += o.over_cap;
        self.docs_created += o.docs_created;
        self.docs_removed += o.docs_removed;
        self.unreadable += o.unreadable;
        self.note_undelivered(o.oldest_undelivered);
        if self.forbidden.is_none() {
            self.forbidden = o.forbidden;
        }
        for (k, n) in o.removals {
            *self.removals.entry(k).or_default() += n;
        }
        for e in o.errors {
            self.note_error(e);
        }
    }
}

/// What one job did: its counts, its first failure, and what its layout keeps of it.
pub(super) struct Outcome<K> {
    pub r: Results,
    failure: Option<Failure>,
    pub kept: K,
}

impl<K> Outcome<K> {
    /// A failure of the job: `msg` for the log and the message; a missing permission is kept
    /// (it stops the writes).
    pub fn fail(&mut self, failure: Failure, msg: String) {
        if let Failure::Tanium(e) = &failure {
            if let Error::Forbidden { .. } = **e {
                self.r.forbidden.get_or_insert_with(|| e.to_string());
            }
        }
        self.r.errors.push(msg);
        self.failure.get_or_insert(failure);
    }
}

/// A layout's unit of write work; `C` is what every job of the layout reads.
pub(super) trait Work<C: Sync>: Send + Sized {
    /// What the layout keeps of each job besides its counts.
    type Kept: Send + Default;
    fn run(self, ctx: &C, out: &mut Outcome<Self::Kept>);
    /// Counts it as not attempted: the writes stopped before it. It failed, without an error
    /// of its own (the one that stopped the writes was logged).
    fn not_attempted(self, ctx: &C, out: &mut Outcome<Self::Kept>);
}

/// Why the writes stop.
enum GiveUp {
    Forbidden,
    InARow,
}

/// A finished job as its layout reads it afterwards.
pub(super) struct Done<K> {
    pub failed: bool,
    pub kept: K,
}

// `K` is `W::Kept`, named apart so the driver stays covariant in `C` (a projection would
// make it invariant, and a planner could not hold one borrowed for less than the clients).
struct Shared<'a, C: Sync, W: Work<C, Kept = K>, K> {
    ctx: &'a C,
    rx: Mutex<mpsc::Receiver<W>>,
    results: Mutex<Results>,
    done: Mutex<Vec<Done<K>>>,
    stopped: AtomicBool,
    in_a_row: AtomicU32,
}

/// Where the planning sends writes.
pub(super) struct Driver<'a, C: Sync, W: Work<C, Kept = K>, K> {
    tx: mpsc::SyncSender<W>,
    shared: &'a Shared<'a, C, W, K>,
}

impl<C: Sync, W: Work<C, Kept = K>, K: Send + Default> Driver<'_, C, W, K> {
    pub fn send(&self, w: W) {
        if let Err(mpsc::SendError(w)) = self.tx.send(w) {
            // Every worker is gone: counted as not attempted rather than lost.
            self.shared.finish(w, false);
        }
    }

    /// The writes stopped: nothing more is worth sending.
    pub fn stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    pub fn note(&self, f: impl FnOnce(&mut Results)) {
        f(&mut self.shared.results());
    }
}

/// Runs `plan` with `workers` workers running what it sends, waits for every job, and
/// returns what `plan` returned, what the writes did, and each job as its layout keeps it (in
/// the order they finished). The writes go on from `before`, an earlier drive's results of the
/// same run (or none): writes it stopped stay stopped, and its failures in a row count.
pub(super) fn drive<C: Sync, W: Work<C, Kept = K>, K: Send + Default, R>(
    ctx: &C,
    workers: usize,
    before: Results,
    plan: impl FnOnce(&Driver<C, W, K>) -> R,
) -> (R, Results, Vec<Done<K>>) {
    let workers = workers.max(1);
    let (tx, rx) = mpsc::sync_channel::<W>(workers * 4);
    let shared = Shared {
        ctx,
        rx: Mutex::new(rx),
        stopped: AtomicBool::new(before.gave_up),
        in_a_row: AtomicU32::new(before.in_a_row),
        results: Mutex::new(before),
        done: Mutex::new(Vec::new()),
    };
    let planned = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| shared.work());
        }
        let driver = Driver {
            tx,
            shared: &shared,
        };
        plan(&driver)
        // `driver` (the sender) drops here; the workers drain the queue and the scope joins.
    });
    let mut results = shared
        .results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    results.in_a_row = shared.in_a_row.load(Ordering::SeqCst);
    let done = shared.done.into_inner().unwrap_or_else(|p| p.into_inner());
    (planned, results, done)
}

impl<C: Sync, W: Work<C, Kept = K>, K: Send + Default> Shared<'_, C, W, K> {
    fn results(&self) -> MutexGuard<'_, Results> {
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next(&self) -> Option<W> {
        self.rx.lock().ok()?.recv().ok()
    }

    fn work(&self) {
        while let Some(w) = self.next() {
            let attempt = !self.stopped.load(Ordering::SeqCst);
            self.finish(w, attempt);
        }
    }

    /// Runs the job (or counts it as not attempted), then applies the one rule: a missing
    /// permission stops the writes at once (every other write needs it too);
    /// [`FAILURES_IN_A_ROW`] failed jobs in a row stop them; a job that went through resets
    /// the count; a document that cannot be read is neither.
    fn finish(&self, w: W, attempt: bool) {
        let mut out = Outcome {
            r: Results::default(),
            failure: None,
            kept: K::default(),
        };
        if !attempt {
            w.not_attempted(self.ctx, &mut out);
            out.r.not_attempted += 1;
            out.failure = Some(Failure::Local);
            self.record(out);
            return;
        }
        w.run(self.ctx, &mut out);
        let stop = match &out.failure {
            None => {
                self.in_a_row.store(0, Ordering::SeqCst);
                None
            }
            Some(_) if out.r.forbidden.is_some() => Some(GiveUp::Forbidden),
            Some(Failure::Unreadable) => None,
            Some(_) => (self.in_a_row.fetch_add(1, Ordering::SeqCst) + 1 >= FAILURES_IN_A_ROW)
                .then_some(GiveUp::InARow),
        };
        if let Some(why) = stop {
            if !self.stopped.swap(true, Ordering::SeqCst) {
                let mut r = self.results();
                r.gave_up = true;
                match why {
                    GiveUp::Forbidden => log::error!(
                        "Tanium refuses writes to this account: stopping writes for this run"
                    ),
                    GiveUp::InARow => r.note_error(format!(
                        "{FAILURES_IN_A_ROW} Tanium writes failed in a row; stopping writes for this run"
                    )),
                }
            }
        }
        self.record(out);
    }

    fn record(&self, mut out: Outcome<K>) {
        self.results().add(std::mem::take(&mut out.r));
        self.keep(out);
    }

    fn keep(&self, out: Outcome<K>) {
        let done = Done {
            failed: out.failure.is_some(),
            kept: out.kept,
        };
        if let Ok(mut d) = self.done.lock() {
            d.push(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Service;

    /// A job whose fate is given: the driver's rules, without Tanium.
    enum Fate {
        Done,
        Fails,
        Forbidden,
        Unreadable,
    }

    impl Work<()> for Fate {
        type Kept = u8;

        fn run(self, _: &(), out: &mut Outcome<u8>) {
            out.kept = 1;
            match self {
                Fate::Done => out.r.created += 1,
                Fate::Fails => {
                    out.r.failed_writes += 1;
                    out.fail(Failure::Local, "failed".into());
                }
                Fate::Forbidden => {
                    out.r.failed_writes += 1;
                    let e = Error::Forbidden {
                        service: Service::Tanium,
                        needed: "Threat Response Intel write".into(),
                        answers: "PUT /intels/1".into(),
                    };
                    out.fail(Failure::Tanium(Box::new(e)), "refused".into());
                }
                Fate::Unreadable => {
                    out.r.unreadable += 1;
                    out.fail(Failure::Unreadable, "cannot be read".into());
                }
            }
        }

        fn not_attempted(self, _: &(), out: &mut Outcome<u8>) {
            out.kept = 2;
            out.r.failed_writes += 1;
        }
    }

    fn run(before: Results, fates: Vec<Fate>) -> (Results, Vec<Done<u8>>) {
        // One worker: the jobs finish in the order they were sent.
        let (_, r, done) = drive(&(), 1, before, |d| {
            fates.into_iter().for_each(|f| d.send(f))
        });
        (r, done)
    }

    #[test]
    fn failures_in_a_row_stop_the_writes_and_what_follows_is_not_attempted() {
        let mut fates: Vec<Fate> = (0..24).map(|_| Fate::Fails).collect();
        fates.push(Fate::Done);
        fates.extend((0..25).map(|_| Fate::Fails));
        fates.extend((0..3).map(|_| Fate::Done));
        let (r, done) = run(Results::default(), fates);
        assert!(r.gave_up);
        assert_eq!((r.created, r.failed_writes, r.not_attempted), (1, 52, 3));
        assert_eq!(r.errors.len(), KEPT_ERRORS, "the first few are kept");
        assert!(done[50..].iter().all(|d| d.failed && d.kept == 2));
        // A later drive of the same run attempts nothing more.
        let (r, done) = run(r, vec![Fate::Done]);
        assert_eq!((r.created, r.not_attempted), (1, 4));
        assert!(done[0].failed);
    }

    #[test]
    fn a_missing_permission_stops_the_writes_at_once_and_is_kept() {
        let (r, done) = run(
            Results::default(),
            vec![Fate::Done, Fate::Forbidden, Fate::Done],
        );
        assert!(r.gave_up);
        assert_eq!((r.created, r.not_attempted), (1, 1));
        assert!(r
            .forbidden
            .as_deref()
            .unwrap()
            .contains("permission missing"));
        assert_eq!(
            done.iter().map(|d| d.failed).collect::<Vec<_>>(),
            [false, true, true]
        );
    }

    #[test]
    fn an_unreadable_document_is_neither_a_step_toward_giving_up_nor_a_success() {
        let mut fates: Vec<Fate> = (0..24).map(|_| Fate::Fails).collect();
        fates.push(Fate::Unreadable);
        fates.push(Fate::Fails);
        let (r, _) = run(Results::default(), fates);
        assert!(r.gave_up, "the unreadable one did not reset the count");
        let mut fates: Vec<Fate> = (0..30).map(|_| Fate::Unreadable).collect();
        fates.push(Fate::Done);
        let (r, _) = run(Results::default(), fates);
        assert!(!r.gave_up);
        assert_eq!((r.unreadable, r.created), (30, 1));
    }

    #[test]
    fn failures_in_a_row_go_on_counting_in_the_next_drive_of_the_run() {
        let (r, _) = run(Results::default(), (0..20).map(|_| Fate::Fails).collect());
        assert!(!r.gave_up);
        let (r, _) = run(r, (0..5).map(|_| Fate::Fails).collect());
        assert!(r.gave_up);
    }

    #[test]
    fn undelivered_keeps_the_oldest() {
        let mut r = Results::default();
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).ok();
        r.note_undelivered(t(200));
        r.note_undelivered(None);
        r.note_undelivered(t(100));
        r.note_undelivered(t(300));
        assert_eq!(r.oldest_undelivered, t(100));
    }
}
