//! ThreatConnect's Indicator Exclusion Lists as a run reads them (Honor Exclusion Lists): once,
//! before anything is compared, a few requests whatever the number of indicators (the lists,
//! then the values of each list that bears on the job), kept in memory only. Lists that cannot be read are said, never guessed: the run then sends and
//! removes as with the rail off, exits 3, and the next run that reads them reconciles fully.

use std::collections::HashSet;
use std::fmt;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::exclusions::{Exclusions, ListKind, Scope};
use crate::param_names as pn;
use crate::tc::client::TcClient;
use crate::tc::exclusion::READ_ROLE;
use crate::tc::tql;
use crate::words::counted;

use super::checkpoint::ListsEnd;

/// At most this many values a run names as ignored (then a count).
const IGNORED_LINES: usize = 10;

/// Why the lists could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// Refused for a missing role (401 or 403): what answered.
    Denied(String),
    /// Any other failure, as the error says it.
    Failed(String),
}

impl fmt::Display for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off = pn::HONOR_EXCLUSION_LISTS.label;
        match self {
            Unread::Denied(_) => write!(
                f,
                "ThreatConnect exclusion lists unreadable: the Api User needs the Organization role Standard User or above (Editor or Director in a Community or Source), or turn off {off}"
            ),
            Unread::Failed(e) => write!(
                f,
                "ThreatConnect exclusion lists could not be read ({e}); turn off {off} to run without them"
            ),
        }
    }
}

/// The run's exclusion lists.
#[derive(Debug)]
pub enum Lists {
    /// Honor Exclusion Lists is off.
    Off,
    Read(Exclusions),
    Unread(Unread),
}

impl Lists {
    /// Reads the lists that bear on the job (none when the rail is off); a failure is kept,
    /// not returned: the run goes on without them.
    pub fn read(config: &JobConfig, tc: &TcClient) -> Lists {
        if !config.rails.honor_exclusion_lists {
            return Lists::Off;
        }
        match read(config, tc) {
            Ok(e) => Lists::Read(e),
            Err(e) => {
                let unread = match e {
                    Error::Forbidden { answers, .. } => Unread::Denied(answers),
                    e => Unread::Failed(e.to_string()),
                };
                let answered = match &unread {
                    Unread::Denied(answers) => format!(" ({answers}; it takes {READ_ROLE})"),
                    Unread::Failed(_) => String::new(),
                };
                log::error!(
                    "{unread}{answered}; this run sends and removes as if they were empty, nothing is removed for them, and the first run that reads them reconciles fully"
                );
                Lists::Unread(unread)
            }
        }
    }

    pub fn exclusions(&self) -> Option<&Exclusions> {
        match self {
            Lists::Read(e) => Some(e),
            _ => None,
        }
    }

    /// What the lists exclude, when they were read.
    pub fn fingerprint(&self) -> Option<u64> {
        self.exclusions().map(Exclusions::fingerprint)
    }

    pub fn unread(&self) -> Option<&Unread> {
        match self {
            Lists::Unread(u) => Some(u),
            _ => None,
        }
    }

    /// For the checkpoint.
    pub fn end(&self) -> ListsEnd {
        match self {
            Lists::Off => ListsEnd::Off,
            Lists::Read(e) => ListsEnd::Read(e.fingerprint()),
            Lists::Unread(_) => ListsEnd::Unread,
        }
    }
}

/// Every list the Api User can see (the collection's `owner` only narrows it: the docs' answer
/// without it holds several owners' lists), then the values of each active one of a type the
/// job sends that applies to an owner the job reads.
fn read(config: &JobConfig, tc: &TcClient) -> Result<Exclusions> {
    let filters = &config.filters;
    let types = tql::effective_types(filters);
    // Without owners named (or with TQL), the job reads any owner the Api User can see.
    let named =
        (tql::user_tql(filters).is_none() && !filters.owners.is_empty()).then_some(&filters.owners);
    let mut seen = HashSet::new();
    let heads: Vec<_> = tc
        .exclusion_lists(None)?
        .into_iter()
        .filter(|l| l.id.is_some_and(|id| seen.insert(id)))
        .collect();
    let mut out = Exclusions::default();
    let (mut others, mut values) = (0u64, 0usize);
    let mut ignored: Vec<String> = Vec::new();
    for head in &heads {
        let (Some(id), Some(kind)) = (head.id, ListKind::parse(&head.name)) else {
            others += 1;
            continue;
        };
        let theirs = match Scope::of(head) {
            Scope::System => true,
            Scope::Owner(o) => named.is_none_or(|n| n.contains(&o)),
        };
        if !head.active || !theirs || !types.contains(&kind.indicator_type()) {
            others += 1;
            continue;
        }
        let mut full = tc.exclusion_values(id)?;
        if !full.active {
            others += 1;
            continue;
        }
        // The collection says where a list belongs and what it is called; one list's own
        // answer need not repeat it.
        full.owner = head.owner.clone();
        full.name = head.name.clone();
        for (which, v) in [
            ("fixed", &full.fixed_values),
            ("variable", &full.variable_values),
        ] {
            if v.as_ref().is_some_and(|v| v.short()) {
                log::warn!(
                    "exclusion list {} ({id}): ThreatConnect answered fewer {which} values than it counts; using those it sent",
                    head.name
                );
            }
        }
        let added = out.add(&full, kind);
        values += added.used;
        for v in added.ignored {
            ignored.push(format!("{v} (list {}, {kind})", head.name));
        }
    }
    log::info!(
        "exclusion lists: {} appl{} to the job ({} values and patterns); {} of other types, inactive or other owners'",
        out.len(),
        if out.len() == 1 { "ies" } else { "y" },
        values,
        counted(others, "list")
    );
    if !ignored.is_empty() {
        log::warn!(
            "exclusion list values of another type than their list, ignored: {}{}",
            ignored
                .iter()
                .take(IGNORED_LINES)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if ignored.len() > IGNORED_LINES {
                format!(" and {} more", ignored.len() - IGNORED_LINES)
            } else {
                String::new()
            }
        );
    }
    Ok(out)
}
