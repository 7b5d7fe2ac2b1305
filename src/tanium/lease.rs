//! The run lease: how a run tells the other runs of the same job that it is writing to the
//! job's intel source, so that two runs at once (a long first run under a short schedule, a run
//! started by hand) never both write.
//!
//! A lease is an empty intel source named after the job's source,
//! `<source> [tanium-tr-indicators run lease] since <start> until <expiry> run <tag>`, and once
//! renewed `… renews #<id of the run's first lease>`. All a run needs is in the name, since a
//! source listing is only known to carry `id` and `name`; the random tag makes every name
//! unique, so the lease works whether or not Tanium lets two sources share a name.
//!
//! Taking it: delete the expired leases of the source (runs killed before they could), create
//! one's own, list the sources again. Among the live leases the one of the lowest rank holds it;
//! a lease's rank is the id of its run's first lease. Ids grow with creation order, so of two
//! runs the one that created its lease later sees the other's and ranks after it; it deletes its
//! own lease and stands down. The holder renews its lease every third of the lease's duration
//! (a new lease carrying the first one's rank, then the old one deleted) and deletes it when the
//! run ends, whatever the end.
//!
//! Where Tanium cannot delete sources every lease would stay, one more per run. The run that
//! finds out says so (the caller keeps it for the next runs), and a run takes no lease while a
//! lease it cannot delete is there; each such run tries to delete the leftover again, and once
//! that works leases are back.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::http;

use super::answers::{describe, status_error};
use super::client::TaniumClient;

/// What marks a source as a run lease, after the name of the job's source and a space.
pub const LEASE_MARK: &str = "[tanium-tr-indicators run lease]";

const LEASE_DESCRIPTION: &str = "Run lease of the tanium-tr-indicators job app: while it exists \
and the time after 'until' in its name is ahead, a run of the job is writing to the intel source \
named before the brackets, and other runs of that job stand down. It holds no intel. The run \
deletes it when it ends; a run that finds it expired deletes it.";

/// What a lease's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseName {
    /// When the holding run took its first lease.
    pub since: OffsetDateTime,
    /// When the lease expires unless renewed.
    pub until: OffsetDateTime,
    /// The holding run's random tag.
    pub run: String,
    /// The id of the run's first lease, on a renewed lease: its rank.
    pub renews: Option<i64>,
}

impl LeaseName {
    /// The source name of this lease of the job source `source`.
    pub fn render(&self, source: &str) -> String {
        let mut name = format!(
            "{source} {LEASE_MARK} since {} until {} run {}",
            stamp(self.since),
            stamp(self.until),
            self.run
        );
        if let Some(first) = self.renews {
            name.push_str(&format!(" renews #{first}"));
        }
        name
    }

    /// Reads a source name as a lease of the job source `source`; None for any other source,
    /// and for a lease name without a readable start and expiry (never deleted, never obeyed).
    pub fn parse(source: &str, name: &str) -> Option<LeaseName> {
        let rest = name
            .strip_prefix(source)?
            .strip_prefix(' ')?
            .strip_prefix(LEASE_MARK)?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (mut since, mut until, mut run, mut renews) = (None, None, String::new(), None);
        for pair in words.chunks(2) {
            match pair {
                ["since", t] => since = OffsetDateTime::parse(t, &Rfc3339).ok(),
                ["until", t] => until = OffsetDateTime::parse(t, &Rfc3339).ok(),
                ["run", r] => run = (*r).to_string(),
                ["renews", n] => renews = n.strip_prefix('#').and_then(|n| n.parse().ok()),
                _ => {}
            }
        }
        Some(LeaseName {
            since: since?,
            until: until?,
            run,
            renews,
        })
    }
}

/// A lease as a source listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    id: i64,
    name: LeaseName,
}

impl Found {
    fn rank(&self) -> (i64, i64) {
        (self.name.renews.unwrap_or(self.id), self.id)
    }

    fn live(&self, now: OffsetDateTime) -> bool {
        self.name.until > now
    }
}

/// The run whose lease made this one stand down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherRun {
    /// When it took its first lease.
    pub since: OffsetDateTime,
    /// When its lease expires unless renewed.
    pub until: OffsetDateTime,
}

/// How a run's lease is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How long a lease lasts unless renewed; renewed every third of it.
    pub duration: Duration,
    /// An earlier run found that Tanium cannot delete sources.
    pub deletes_failed_before: bool,
}

/// The outcome of taking the lease. `deletes` says what the attempt learned of Tanium: Some(true)
/// when it deleted a lease source, Some(false) when it could not, None when nothing was deleted.
#[derive(Debug)]
pub enum Taken<'a> {
    /// This run holds the lease: run the work through [`Lease::hold`].
    Held(Lease<'a>),
    /// Another run of the job holds it: this run must write nothing.
    StoodDown {
        /// The holder.
        holder: OtherRun,
        /// What was learned of deleting sources.
        deletes: Option<bool>,
    },
    /// No lease can be had; the run goes on without one (the log says why).
    Without {
        /// What was learned of deleting sources.
        deletes: Option<bool>,
    },
}

/// How a held lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseEnd {
    /// What was learned of deleting sources (see [`Taken`]).
    pub deletes: Option<bool>,
}

/// What a lease source's delete came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Removal {
    Deleted,
    /// Gone already (another run, or an admin, deleted it).
    Gone,
    /// Still there: Tanium cannot (or this account may not) delete sources; the answers.
    Kept(String),
}

impl Removal {
    fn learned(&self) -> Option<bool> {
        match self {
            Removal::Deleted => Some(true),
            Removal::Gone => None,
            Removal::Kept(_) => Some(false),
        }
    }
}

/// A held lease.
#[derive(Debug)]
pub struct Lease<'a> {
    client: &'a TaniumClient,
    source: String,
    duration: Duration,
    first: i64,
    current: (i64, LeaseName),
    /// Other leases of this run (a create sent twice, a renewed one whose delete failed):
    /// deleted at the end.
    stale: Vec<i64>,
    deletes: Option<bool>,
    /// False once the lease was lost or Tanium proved unable to delete the renewed one.
    renewing: bool,
}

/// A lease time as names and messages show it: `2026-11-28T12:00:00Z`.
pub fn stamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn later(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t + time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2).max(1))
}

impl TaniumClient {
    /// Takes the run lease of the job's source (see the module's notes).
    pub fn take_lease(&self, settings: &LeaseSettings) -> Result<Taken<'_>> {
        let source = self.source_name.clone();
        let found = self.leases(&source)?;
        let start = now();
        let mut deletes = self.clear_expired(&source, &found, start);
        let cannot_delete = deletes == Some(false)
            || (settings.deletes_failed_before && deletes.is_none() && !found.is_empty());
        if cannot_delete {
            log::warn!(
                "this run takes no run lease: Tanium could not delete an earlier one, so each lease \
                 would stay in its source list; overlapping runs of this job are not detected \
                 (each run tries to delete the leftover lease again)"
            );
            return Ok(Taken::Without { deletes });
        }

        let mine = LeaseName {
            since: start,
            until: later(start, settings.duration),
            run: format!("{:08x}", fastrand::u32(..)),
            renews: None,
        };
        let Some(id) = self.create_lease(&source, &mine)? else {
            // No lease of its own: another run's live one still means that run is writing.
            let holder = self.leases(&source)?.into_iter().find(|f| f.live(now()));
            return Ok(match holder {
                Some(h) => stood_down(&source, &h, deletes),
                None => Taken::Without { deletes },
            });
        };
        let listed = match self.leases(&source) {
            Ok(l) => l,
            Err(e) => {
                self.remove_own(&source, &[id], &mine);
                return Err(e);
            }
        };
        // A create whose answer was lost and that was sent again leaves a second lease of this
        // run: the run's tag says which are its own.
        let own = |f: &Found| f.id == id || f.name.run == mine.run;
        let mut ids: Vec<i64> = listed.iter().filter(|f| own(f)).map(|f| f.id).collect();
        if !ids.contains(&id) {
            ids.push(id);
        }
        ids.sort_unstable();
        let at = now();
        let holder = listed
            .iter()
            .filter(|f| own(f) || f.live(at))
            .min_by_key(|f| f.rank());
        if let Some(h) = holder.filter(|h| !own(h)) {
            deletes = deletes.max(self.remove_own(&source, &ids, &mine));
            return Ok(stood_down(&source, h, deletes));
        }
        log::info!(
            "run lease taken: \"{}\" (source id {id}), renewed every {} s while the run lasts",
            mine.render(&source),
            (settings.duration / 3).as_secs().max(1)
        );
        Ok(Taken::Held(Lease {
            client: self,
            source,
            duration: settings.duration,
            first: ids[0],
            current: (id, mine),
            stale: ids.into_iter().filter(|i| *i != id).collect(),
            deletes,
            renewing: true,
        }))
    }

    /// Deletes the expired leases among `found` (runs that ended without deleting theirs);
    /// what was learned of deleting sources.
    fn clear_expired(&self, source: &str, found: &[Found], now: OffsetDateTime) -> Option<bool> {
        let mut deletes = None;
        for f in found.iter().filter(|f| !f.live(now)) {
            let name = f.name.render(source);
            match self.remove_lease(f.id) {
                Ok(r) => {
                    deletes = deletes.max(r.learned());
                    match r {
                        Removal::Deleted => log::info!(
                            "removed the expired run lease \"{name}\" (id {}): that run ended without removing it",
                            f.id
                        ),
                        Removal::Gone => {}
                        Removal::Kept(why) => log::info!(
                            "the expired run lease \"{name}\" (id {}) stays: Tanium cannot delete sources ({why})",
                            f.id
                        ),
                    }
                }
                Err(e) => log::warn!("could not remove the expired run lease {}: {e}", f.id),
            }
        }
        deletes
    }

    /// Creates this run's lease `mine`: its id; None when no lease can be had this way (the
    /// name is taken, or Tanium refuses the create: then the run goes on without one).
    fn create_lease(&self, source: &str, mine: &LeaseName) -> Result<Option<i64>> {
        let name = mine.render(source);
        let refused = match self.create_source(&name, LEASE_DESCRIPTION) {
            Ok(Some(s)) => return Ok(Some(s.id)),
            Ok(None) => {
                log::warn!(
                    "could not take a run lease: Tanium refused the name \"{name}\" as taken"
                );
                return Ok(None);
            }
            Err(e) => e,
        };
        // The create may have been done and its answer lost: no lease of this run stays.
        if let Ok(listed) = self.leases(source) {
            let ids: Vec<i64> = listed
                .iter()
                .filter(|f| f.name.run == mine.run)
                .map(|f| f.id)
                .collect();
            self.remove_own(source, &ids, mine);
        }
        match refused {
            Error::Forbidden { .. }
            | Error::Status {
                status: 400..=499, ..
            } => {
                log::warn!(
                    "could not take a run lease ({refused}); this run goes on without one: \
                     overlapping runs of this job are not detected"
                );
                Ok(None)
            }
            e => Err(e),
        }
    }

    /// Deletes this run's leases `ids` (named `held`, for the log); what was learned of
    /// deleting sources.
    fn remove_own(&self, source: &str, ids: &[i64], held: &LeaseName) -> Option<bool> {
        let mut deletes = None;
        for &id in ids {
            match self.remove_lease(id) {
                Ok(r) => {
                    deletes = deletes.max(r.learned());
                    if let Removal::Kept(why) = r {
                        log::warn!(
                            "Tanium cannot delete sources ({why}): the run lease \"{}\" (source id {id}) stays in its source list, expired from {}; later runs take no lease while it is there and try to delete it again",
                            held.render(source),
                            stamp(held.until)
                        );
                    }
                }
                Err(e) => log::warn!(
                    "could not delete the run lease (source id {id}): {e}; it expires at {}",
                    stamp(held.until)
                ),
            }
        }
        deletes
    }

    /// The leases of the job source `source` the server lists.
    fn leases(&self, source: &str) -> Result<Vec<Found>> {
        Ok(self
            .list_sources()?
            .into_iter()
            .filter_map(|s| LeaseName::parse(source, &s.name).map(|name| Found { id: s.id, name }))
            .collect())
    }

    /// Deletes a lease source (only ever one whose name says it is a lease). A 404, 405 or
    /// 501 is read again: the route may be missing (the source is still there) or the source
    /// gone already.
    fn remove_lease(&self, id: i64) -> Result<Removal> {
        let path = format!("{}/sources/{id}", self.generation.base_path());
        let resp = match self.send("DELETE", &path, None) {
            Ok(r) => r,
            Err(e @ Error::Forbidden { .. }) => return Ok(Removal::Kept(e.to_string())),
            Err(e) => return Err(e),
        };
        if http::classify(resp.status) == http::Verdict::Ok {
            return Ok(Removal::Deleted);
        }
        if !matches!(resp.status, 404 | 405 | 501) {
            return Err(status_error(&resp, "DELETE", &path));
        }
        let check = self.send("GET", &path, None)?;
        match check.status {
            404 => Ok(Removal::Gone),
            s if http::classify(s) == http::Verdict::Ok => Ok(Removal::Kept(format!(
                "{} answered {}",
                describe("DELETE", &path),
                resp.status
            ))),
            _ => Err(status_error(&check, "GET", &path)),
        }
    }
}

fn stood_down<'a>(source: &str, holder: &Found, deletes: Option<bool>) -> Taken<'a> {
    log::info!(
        "another run of this job holds the run lease \"{}\" (source id {}): this run stands down and writes nothing",
        holder.name.render(source),
        holder.id
    );
    Taken::StoodDown {
        holder: OtherRun {
            since: holder.name.since,
            until: holder.name.until,
        },
        deletes,
    }
}

impl Lease<'_> {
    /// Runs `work` while a thread renews the lease, then deletes the lease, whatever `work`
    /// returned. The thread pays for itself: a first run of a large job outlasts any lease
    /// short enough to free the job soon after a run is killed.
    pub fn hold<T>(self, work: impl FnOnce() -> T) -> (T, LeaseEnd) {
        let every = (self.duration / 3).max(Duration::from_millis(200));
        let (stop, stopped) = mpsc::channel::<()>();
        let (value, lease) = std::thread::scope(|s| {
            let renewer = s.spawn(move || {
                let mut lease = self;
                // The sender is dropped when `work` ends, or unwinds.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    lease.renew();
                }
                lease
            });
            let value = work();
            drop(stop);
            (value, renewer.join())
        });
        match lease {
            Ok(lease) => (value, lease.release()),
            Err(_) => {
                log::error!("the run lease's renewal thread failed; the lease expires on its own");
                (value, LeaseEnd::default())
            }
        }
    }

    fn renew(&mut self) {
        if !self.renewing {
            return;
        }
        let (id, held) = &self.current;
        let listed = match self.client.leases(&self.source) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("could not renew the run lease (tried again later): {e}");
                return;
            }
        };
        let at = now();
        if held.until <= at || !listed.iter().any(|f| f.id == *id) {
            log::error!(
                "the run lease \"{}\" was lost (expired or removed before it could be renewed): another run of this job may be writing to the source too",
                held.render(&self.source)
            );
            self.renewing = false;
            return;
        }
        let next = LeaseName {
            until: later(at, self.duration),
            renews: Some(self.first),
            ..held.clone()
        };
        let created = self
            .client
            .create_source(&next.render(&self.source), LEASE_DESCRIPTION);
        let new_id = match created {
            Ok(Some(s)) => s.id,
            Ok(None) => {
                log::warn!("could not renew the run lease: Tanium refused its name as taken");
                return;
            }
            Err(e) => {
                log::warn!("could not renew the run lease (tried again later): {e}");
                return;
            }
        };
        log::debug!(
            "run lease renewed: \"{}\" (source id {new_id})",
            next.render(&self.source)
        );
        let (old, _) = std::mem::replace(&mut self.current, (new_id, next));
        match self.client.remove_lease(old) {
            Ok(r) => {
                self.deletes = self.deletes.max(r.learned());
                if let Removal::Kept(why) = r {
                    // Each renewal would leave one more source: the current lease is the last.
                    log::warn!(
                        "Tanium cannot delete sources ({why}): the run lease is no longer renewed"
                    );
                    self.stale.push(old);
                    self.renewing = false;
                }
            }
            Err(e) => {
                log::warn!(
                    "could not delete the renewed run lease {old} (tried again at the end): {e}"
                );
                self.stale.push(old);
            }
        }
    }

    fn release(self) -> LeaseEnd {
        let (id, held) = &self.current;
        let mut ids: Vec<i64> = std::iter::once(*id)
            .chain(self.stale.iter().copied())
            .collect();
        // Leases of this run whose create answer was lost during a renewal.
        match self.client.leases(&self.source) {
            Ok(listed) => ids.extend(
                listed
                    .iter()
                    .filter(|f| f.name.run == held.run && !ids.contains(&f.id))
                    .map(|f| f.id)
                    .collect::<Vec<_>>(),
            ),
            Err(e) => log::warn!("could not list this run's leases before deleting them: {e}"),
        }
        let learned = self.client.remove_own(&self.source, &ids, held);
        log::info!("run lease released");
        LeaseEnd {
            deletes: self.deletes.max(learned),
        }
    }
}

#[cfg(test)]
mod tests;
