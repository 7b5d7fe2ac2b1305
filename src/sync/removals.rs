//! Removals, each on positive evidence only: a TC deletion record, an indicator TC returned
//! that no longer qualifies, or (full reconcile) a pull that is provably complete.

use time::OffsetDateTime;

use crate::error::Result;
use crate::intel;
use crate::tc::client::TcClient;
use crate::tc::model::IndicatorType;
use crate::tc::tql;
use crate::words::counted;

use super::cause::Cause;
use super::index::SourceIndex;
use super::planner::{describe, Planner};

impl Planner<'_, '_> {
    /// A full reconcile after a complete pull: every document the pull did not meet goes, and
    /// so does every document in the source that this job did not make, when it takes the
    /// source over (and did not adopt it).
    pub fn sweep(&mut self, index: &mut SourceIndex, horizon: Option<OffsetDateTime>) {
        for (key, doc_id) in index.take_unseen() {
            let what = format!("document {doc_id} ({key:032x})");
            self.remove(doc_id, what, Cause::NotSelected { floor: horizon });
        }
        if !self.config.take_over_source {
            return;
        }
        let foreign: Vec<(i64, String, String)> = std::mem::take(&mut index.unidentified)
            .into_iter()
            .filter(|(id, _, _)| !index.adopted.contains(id))
            .collect();
        log::info!(
            "taking the source over: {} adopted, {} to remove (each at debug level)",
            counted(index.adopted.len() as u64, "document"),
            foreign.len()
        );
        for (doc_id, name, _) in foreign {
            let what = format!("document {doc_id} \"{name}\" (not made by this job)");
            self.remove(doc_id, what, Cause::Foreign);
        }
    }

    /// Extra documents holding an identity another document holds.
    pub fn remove_duplicates(&mut self, index: &mut SourceIndex) {
        for (doc_id, name) in std::mem::take(&mut index.duplicates) {
            let what = format!("duplicate document {doc_id} \"{name}\"");
            self.remove(doc_id, what, Cause::Duplicate);
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
        self.removal_evidence(tc, since, window, &mut |p, key, what, cause| {
            if let Some(doc_id) = index.take_for_removal(key) {
                p.remove(doc_id, what, cause);
            }
        })
    }

    /// The evidence of [`Planner::incremental_removals`]: `found` is told each identity that
    /// no longer qualifies, what it is and why.
    pub fn removal_evidence(
        &mut self,
        tc: &TcClient,
        since: OffsetDateTime,
        window: &tql::Window,
        found: &mut dyn FnMut(&mut Self, u128, String, Cause),
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
                found(self, key, what, Cause::DeletedInTc);
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
                let cause = match self.config.filters.rejection(&ind) {
                    Some(r) => Cause::Rejected(r),
                    None => Cause::NoLongerSelected,
                };
                found(self, key.as_u128(), describe(&ind), cause);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
