//! Removals, each on positive evidence only: a TC deletion record, an indicator TC returned
//! that no longer qualifies, or (full reconcile) a pull that is provably complete.

use time::OffsetDateTime;

use crate::error::Result;
use crate::intel;
use crate::tc::client::TcClient;
use crate::tc::model::IndicatorType;
use crate::tc::tql;
use crate::words::counted;

use super::index::SourceIndex;
use super::planner::{describe, Planner};

impl Planner<'_> {
    /// A full reconcile after a complete pull: every document the pull did not meet goes, and
    /// so does every document in the source that this job did not make, when it takes the
    /// source over (and did not adopt it). False when some of those could not be read: what
    /// they cover is unknown, so they stay and the next run looks again.
    pub fn sweep(&mut self, index: &mut SourceIndex, horizon: Option<OffsetDateTime>) -> bool {
        let why = match horizon {
            Some(h) => format!(
                "not selected any more (deleted, inactive, filtered out, or last modified before {}: the horizon or Maximum Indicator Age)",
                tql::format_time(h)
            ),
            None => "not selected any more (deleted, inactive or filtered out)".to_string(),
        };
        for (key, doc_id) in index.take_unseen() {
            self.remove(
                doc_id,
                format!("document {doc_id} ({key:032x})"),
                &why,
                "not selected any more",
            );
        }
        if !self.config.take_over_source {
            return true;
        }
        let foreign: Vec<(i64, String, String)> = std::mem::take(&mut index.unidentified)
            .into_iter()
            .filter(|(id, _, _)| !index.adopted.contains(id) && !index.unread.contains(id))
            .collect();
        if !index.unread.is_empty() && self.removal_error.is_none() {
            self.removal_error = Some(format!(
                "could not read {} this job did not make: they stay until a run can read them",
                counted(index.unread.len() as u64, "document")
            ));
        }
        log::info!(
            "taking the source over: {} adopted, {} to remove (each at debug level)",
            counted(index.adopted.len() as u64, "document"),
            foreign.len()
        );
        for (doc_id, name, _) in foreign {
            let what = format!("document {doc_id} \"{name}\" (not made by this job)");
            self.remove(
                doc_id,
                what,
                "Take Over Source is on and it covers no single indicator the job sends",
                "not made by this job",
            );
        }
        index.unread.is_empty()
    }

    /// Extra documents holding an identity another document holds.
    pub fn remove_duplicates(&mut self, index: &mut SourceIndex) {
        for (doc_id, name) in std::mem::take(&mut index.duplicates) {
            self.remove(
                doc_id,
                format!("duplicate document {doc_id} \"{name}\""),
                "another document holds the same indicator",
                "duplicate",
            );
        }
    }

    /// Incremental evidence of indicators that no longer qualify: deleted in TC (asked per
    /// owner: the endpoint covers only the API user's Organization unless told), or modified
    /// within `window` (deactivated included) so that the matching query no longer returns
    /// them. Every owner is asked even after one fails; the first failure is returned.
    pub fn incremental_removals(
        &mut self,
        tc: &TcClient,
        index: &mut SourceIndex,
        since: OffsetDateTime,
        window: &tql::Window,
    ) -> Result<()> {
        self.removal_evidence(tc, since, window, &mut |p, key, what, why, reason| {
            if let Some(doc_id) = index.take_for_removal(key) {
                p.remove(doc_id, what, why, reason);
            }
        })
    }

    /// The evidence of [`Planner::incremental_removals`]: `found` is told each identity that
    /// no longer qualifies, what it is, why and the reason's name.
    pub fn removal_evidence(
        &mut self,
        tc: &TcClient,
        since: OffsetDateTime,
        window: &tql::Window,
        found: &mut dyn FnMut(&mut Self, u128, String, &str, &'static str),
    ) -> Result<()> {
        let filters = &self.config.filters;
        let owners: Vec<String> = if tql::user_tql(filters).is_none() && !filters.owners.is_empty()
        {
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
            let mut gone = Vec::new();
            let asked = tc.deleted_since(since, Some(owner), &mut |d| {
                let Some(kind) = IndicatorType::parse(&d.type_name) else {
                    return;
                };
                if let Ok(key) = intel::identity_of(&d.owner_name, kind, &d.summary) {
                    gone.push((
                        key.as_u128(),
                        format!("{} {} ({})", d.type_name, d.summary, d.owner_name),
                    ));
                }
            });
            for (key, what) in gone {
                found(
                    self,
                    key,
                    what,
                    "deleted in ThreatConnect",
                    "deleted in ThreatConnect",
                );
            }
            if let Err(e) = asked {
                log::error!("could not read the indicators deleted in {owner}: {e}");
                first_error.get_or_insert(e);
            }
        }
        let tql = tql::removal_check(&self.config.filters, window);
        log::info!("removal check (modified since the last run, active or not): {tql}");
        for page in tc.indicators(&tql) {
            for ind in page? {
                let Some(kind) = ind.kind() else { continue };
                let Ok(key) = intel::identity_of(&ind.owner_name, kind, &ind.summary) else {
                    continue;
                };
                let (why, reason) = match self.config.filters.rejection(&ind) {
                    Some(r) => (r.detail, r.filter),
                    // Without user TQL those filters are the whole selection: one it passes is
                    // still selected, modified after the pull met its page (in the second the
                    // run started, or by a TC clock behind ours); the next run, which starts
                    // before this one's start, pulls it.
                    None if tql::user_tql(&self.config.filters).is_none() => continue,
                    None => (
                        "no longer selected by the job's query".to_string(),
                        "no longer selected",
                    ),
                };
                found(self, key.as_u128(), describe(&ind), &why, reason);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
