//! Maximum Removal Percent, one rule for both layouts: the indicators a run would remove (those
//! that leave the source, never those that only change documents) against the indicators the
//! source holds with those the same run adds. Documents are what the per-indicator layout removes, one indicator each, so
//! the two layouts agree there.

use crate::safety::Rails;
use crate::words::counted;

pub(super) struct RemovalGuard<'a> {
    pub rails: &'a Rails,
    pub dry_run: bool,
}

impl RemovalGuard<'_> {
    /// Whether `bound`, the most a run could remove, is within the limit already (then the
    /// removals need no exact count).
    pub fn clearly_allows(&self, bound: u64, held: u64) -> bool {
        !self.rails.too_many_removals(bound, held)
    }

    /// Whether the run may remove `leaving` of the `held` indicators the source holds with
    /// those this run adds; when not, says so (the log, and the plan of a dry run).
    /// `duplicates` go all the same: they take no indicator with them.
    // The share is of the source with the run's newcomers: a run held back still adds them,
    // and measured without them the next run would find the same removals a smaller share of
    // a larger source and make them with nobody raising the guard.
    pub fn allows(&self, leaving: u64, held: u64, duplicates: u64) -> bool {
        if self.clearly_allows(leaving, held) {
            return true;
        }
        let line = format!(
            "held back all {}: more than {}% of the {} in the source with this run's new ones (Maximum Removal Percent); none of them was made{}",
            counted(leaving, "removal"),
            self.rails.max_removal_percent,
            counted(held, "indicator"),
            if duplicates > 0 {
                format!(" ({duplicates} duplicates still go)")
            } else {
                String::new()
            }
        );
        log::warn!("{line}");
        if self.dry_run {
            println!("guard: {line}");
        }
        false
    }
}
