//! Intel Threat Response has turned off: 4.x disables noisy intel on its own (everywhere, or
//! on the endpoints where it alerts too often), and endpoints stop looking for it. The job
//! reports such documents, by value and TC link, and leaves them be: it never re-enables or
//! re-uploads one because it is disabled (a real content change still updates it).

use crate::tanium::client::TaniumClient;

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
