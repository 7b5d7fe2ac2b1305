//! Intel Threat Response has turned off: 4.x disables noisy intel on its own (everywhere, or
//! on the endpoints where it alerts too often), and endpoints stop looking for it. The job
//! reports such documents, by value and TC link, and leaves them be: it never re-enables or
//! re-uploads one because it is disabled (a real content change still updates it).

use std::collections::HashSet;

use crate::error::Error;
use crate::tanium::client::TaniumClient;
use crate::tanium::label_api::{find, DISABLED_LABEL_DESCRIPTION};
use crate::tanium::Label;

use super::drive::Results;
use super::index::{Disabled, SourceIndex};

/// Disabled documents whose TC link is read for the log (each costs a read of the document).
const LINKS_READ: usize = 20;
/// Disabled documents named in the log one by one; the rest are counted.
const NAMED: usize = 50;

/// How much of the source Threat Response has disabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DisabledCount {
    pub docs: u64,
    /// Indicators in the disabled grouped documents (their names say how many).
    pub grouped_indicators: u64,
}

/// Logs each disabled document of the job's (value, TC link, endpoints) and counts them.
pub(super) fn report(tanium: &TaniumClient, index: &SourceIndex) -> DisabledCount {
    let disabled = &index.disabled;
    let count = DisabledCount {
        docs: disabled.len() as u64,
        grouped_indicators: disabled.iter().filter_map(|d| d.bucket).map(|b| b.1).sum(),
    };
    if disabled.is_empty() {
        return count;
    }
    log::warn!(
        "Threat Response has disabled {} of this job's documents{}: endpoints no longer look for \
         them (noisy intel). The job leaves them as they are; what to do: README, \
         Troubleshooting, 'disabled by Threat Response'",
        count.docs,
        grouped(count)
    );
    for (i, d) in disabled.iter().take(NAMED).enumerate() {
        let link = if d.bucket.is_none() && i < LINKS_READ {
            tc_link(tanium, d.doc_id)
        } else {
            None
        };
        log::warn!(
            "disabled by Threat Response: {}",
            describe(d, link.as_deref())
        );
    }
    if disabled.len() > NAMED {
        log::warn!(
            "disabled by Threat Response: {} more documents not named here",
            disabled.len() - NAMED
        );
    }
    count
}

/// What Disabled Intel Label asks of this run, planned from the listing: the documents TR
/// disabled that lack the label get it, the others that carry it lose it.
pub(super) struct LabelWork {
    name: String,
    /// None: not in Tanium yet (made when a document needs it).
    label: Option<Label>,
    add: Vec<(i64, String)>,
    remove: Vec<(i64, String)>,
    error: Option<String>,
}

/// Plans Disabled Intel Label's changes (None: the param is off). Its own reading of the
/// labels: the label is not one the label rules give, so their book does not look for it.
pub(super) fn plan_label(
    tanium: &TaniumClient,
    name: Option<&str>,
    index: &mut SourceIndex,
) -> Option<LabelWork> {
    let name = name?.to_string();
    let mut work = LabelWork {
        name,
        label: None,
        add: Vec::new(),
        remove: Vec::new(),
        error: None,
    };
    match tanium.list_labels() {
        Ok(labels) => work.label = find(&labels, &work.name).cloned(),
        Err(e) => {
            work.error = Some(format!(
                "could not read the Tanium labels for Disabled Intel Label \"{}\": {e}",
                work.name
            ));
            return Some(work);
        }
    }
    let id = work.label.as_ref().map(|l| l.id);
    let carries =
        |labels: Option<&[i64]>| id.is_some_and(|id| labels.is_some_and(|ls| ls.contains(&id)));
    let disabled: HashSet<i64> = index.disabled.iter().map(|d| d.doc_id).collect();
    work.add = index
        .disabled
        .iter()
        .filter(|d| !carries(d.labels.as_deref()))
        .map(|d| (d.doc_id, format!("\"{}\"", d.name)))
        .collect();
    if id.is_some() {
        let sets = &index.label_sets;
        for (_, e) in index.map.iter() {
            if e.doc_id > 0 && !disabled.contains(&e.doc_id) && carries(sets.get(e.labels)) {
                work.remove
                    .push((e.doc_id, format!("document {}", e.doc_id)));
            }
        }
        for g in &index.groups {
            if !disabled.contains(&g.doc_id) && carries(sets.get(g.labels)) {
                work.remove.push((g.doc_id, format!("\"{}\"", g.name)));
            }
        }
    }
    Some(work)
}

impl LabelWork {
    /// Puts the label on and takes it off as planned, counting each document changed as
    /// relabelled and each failure as a failed write (the next run plans them again).
    /// Documents this run removed are passed over.
    pub(super) fn apply(self, tanium: &TaniumClient, dry_run: bool, results: &mut Results) {
        if let Some(e) = self.error {
            results.failed_writes += 1;
            results.failed_labels += 1;
            results.note_error(e);
            return;
        }
        let name = &self.name;
        if dry_run {
            for (_, what) in &self.add {
                println!("labels {what}: add {name} (disabled by Threat Response)");
            }
            for (_, what) in &self.remove {
                println!("labels {what}: remove {name} (enabled again)");
            }
            results.relabelled += (self.add.len() + self.remove.len()) as u64;
            return;
        }
        let label = match (self.label, self.add.is_empty()) {
            (Some(l), _) => l,
            (None, true) => return,
            (None, false) => {
                match tanium.create_label_described(name, DISABLED_LABEL_DESCRIPTION) {
                    Ok(l) => l,
                    Err(e) => {
                        results.failed_writes += 1;
                        results.failed_labels += 1;
                        results.note_error(format!(
                        "could not create the Tanium label {name:?} (Disabled Intel Label): {e}"
                    ));
                        return;
                    }
                }
            }
        };
        let changes = self
            .add
            .iter()
            .map(|c| (c, true))
            .chain(self.remove.iter().map(|c| (c, false)));
        for ((doc_id, what), add) in changes {
            let done = if add {
                tanium.add_doc_label(*doc_id, label.id)
            } else {
                tanium.remove_doc_label(*doc_id, label.id)
            };
            match done {
                Ok(()) => {
                    log::info!(
                        "labels {what}: {} {name} ({})",
                        if add { "add" } else { "remove" },
                        if add {
                            "disabled by Threat Response"
                        } else {
                            "enabled again"
                        }
                    );
                    results.relabelled += 1;
                    results.wrote_anything = true;
                }
                Err(Error::NotOwned { .. }) => {}
                Err(e) => {
                    results.failed_writes += 1;
                    results.failed_labels += 1;
                    results.note_error(format!("could not label {what} {name}: {e}"));
                }
            }
        }
    }
}

fn grouped(count: DisabledCount) -> String {
    if count.grouped_indicators > 0 {
        format!(" ({} indicators)", count.grouped_indicators)
    } else {
        String::new()
    }
}

/// `"<name>" (document 12; turned off everywhere, on 40 endpoints, 7 findings throttled,
/// status DISABLED): <TC link>`, or for a grouped document its bucket and members.
pub(super) fn describe(d: &Disabled, link: Option<&str>) -> String {
    let mut facts = vec![format!("document {}", d.doc_id)];
    if d.everywhere {
        facts.push("turned off everywhere".into());
    }
    if let Some(n) = d.endpoints.filter(|n| *n > 0) {
        facts.push(format!("turned off on {n} endpoints"));
    }
    if let Some(n) = d.throttled.filter(|n| *n > 0) {
        facts.push(format!("{n} findings throttled"));
    }
    if let Some(s) = d.status.as_deref().filter(|s| !s.trim().is_empty()) {
        facts.push(format!("status {}", s.trim()));
    }
    if let Some((key, members)) = d.bucket {
        facts.push(format!(
            "grouped document of bucket {key}, {members} indicators"
        ));
    }
    let mut out = format!("\"{}\" ({})", d.name, facts.join(", "));
    if let Some(l) = link {
        out.push_str(&format!(": {l}"));
    }
    out
}

/// The TC link the document's description carries (`Link: …`), read by id (listings leave
/// descriptions out); None when it cannot be read or has none.
fn tc_link(tanium: &TaniumClient, doc_id: i64) -> Option<String> {
    let doc = match tanium.get_doc(doc_id) {
        Ok(d) => d?,
        Err(e) => {
            log::debug!("could not read document {doc_id} for its TC link: {e}");
            return None;
        }
    };
    doc.description?
        .lines()
        .find_map(|l| l.trim().strip_prefix("Link:").map(|l| l.trim().to_string()))
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::group::BucketKey;

    #[test]
    fn a_disabled_document_is_named_with_what_threat_response_says() {
        let d = Disabled {
            doc_id: 12,
            name: "ThreatConnect Address 203.0.113.7".into(),
            everywhere: true,
            endpoints: Some(40),
            throttled: Some(7),
            status: Some("DISABLED".into()),
            bucket: None,
            labels: None,
        };
        assert_eq!(
            describe(&d, Some("https://tc.example/auth/indicators/details?id=1")),
            "\"ThreatConnect Address 203.0.113.7\" (document 12, turned off everywhere, turned \
             off on 40 endpoints, 7 findings throttled, status DISABLED): \
             https://tc.example/auth/indicators/details?id=1"
        );
        let g = Disabled {
            everywhere: false,
            endpoints: Some(3),
            throttled: None,
            status: None,
            bucket: Some((
                BucketKey {
                    labels: 0xabcdef01,
                    depth: 2,
                    bits: 1,
                },
                480,
            )),
            ..d
        };
        assert_eq!(
            describe(&g, None),
            "\"ThreatConnect Address 203.0.113.7\" (document 12, turned off on 3 endpoints, \
             grouped document of bucket abcdef01/01*, 480 indicators)"
        );
    }
}
