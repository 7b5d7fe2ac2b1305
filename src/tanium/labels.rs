//! Tanium labels: listing and making them (never deleting: other intel and configurations may
//! use them), and putting them on and taking them off the app's own documents, one label per
//! call as the API has it.

use serde_json::json;

use crate::error::{Error, Result, Service};
use crate::http;
use crate::labels::key;
use crate::tanium::model::Label;

use super::answers::{describe, json_body, rows_of, status_error, total_count, unwrap_data};
use super::client::{Payload, TaniumClient, PAGE_LIMIT};

const LABEL_DESCRIPTION: &str =
    "Made by the tanium-tr-indicators ThreatConnect job app for the intel it sends.";

/// The label named `name` among `labels`, compared without case; the same spelling first,
/// then the oldest (a case-sensitive server may hold both `APT` and `apt`).
pub fn find<'a>(labels: &'a [Label], name: &str) -> Option<&'a Label> {
    let k = key(name);
    labels
        .iter()
        .filter(|l| key(&l.name) == k)
        .min_by_key(|l| (l.name.trim() != name.trim(), l.id))
}

impl TaniumClient {
    /// Every label. The listing is paged by the server (recorded: 100 without parameters, at
    /// most 500 a request), so one answer is never taken for all of them: `noLimit=true` first
    /// (what the OpenCTI connector moved to), then `limit`/`offset` pages from where that
    /// answer ended, until a short page or a page of labels already met; `meta.totalCount`,
    /// where the answer carries it, ends the reading early and proves it complete. A listing
    /// that ends short of its total is an error: acting on it would make a second label of a
    /// name that exists.
    pub fn list_labels(&self) -> Result<Vec<Label>> {
        let base = format!("{}/labels", self.generation.base_path());
        let mut labels: Vec<Label> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // How many of `rows` were not met before.
        let mut take = |labels: &mut Vec<Label>, rows: Vec<Label>| {
            let before = labels.len();
            labels.extend(rows.into_iter().filter(|l| seen.insert(l.id)));
            labels.len() - before
        };
        let (mut offset, mut total) = (0u64, None);
        match self.label_page(&format!("{base}?noLimit=true")) {
            Ok((rows, t)) => {
                offset = rows.len() as u64;
                total = t;
                take(&mut labels, rows);
            }
            // (a server that refuses the parameter is read page by page)
            Err(Error::Status { status: 400, .. }) => {}
            Err(e) => return Err(e),
        }
        while total.is_none_or(|t| (labels.len() as u64) < t) {
            let (rows, t) =
                self.label_page(&format!("{base}?limit={PAGE_LIMIT}&offset={offset}"))?;
            total = t.or(total);
            let n = rows.len() as u64;
            offset += n;
            if take(&mut labels, rows) == 0 || n < u64::from(PAGE_LIMIT) {
                break;
            }
        }
        match total {
            Some(t) if (labels.len() as u64) < t => Err(Error::Protocol {
                service: Service::Tanium,
                request: describe("GET", &base),
                detail: format!(
                    "the label listing ended after {} labels but Tanium counts {t}; refusing to \
                     act on a partial list of labels",
                    labels.len()
                ),
            }),
            _ => Ok(labels),
        }
    }

    /// One answer of a label listing: its labels and the total it claims, if any.
    fn label_page(&self, path: &str) -> Result<(Vec<Label>, Option<u64>)> {
        let resp = self.expect_ok("GET", path, None)?;
        let body = json_body(&resp, &describe("GET", path))?;
        let total = total_count(&body);
        Ok((labels_of(body, path)?, total))
    }

    fn labels_at(&self, path: &str) -> Result<Vec<Label>> {
        let resp = self.expect_ok("GET", path, None)?;
        labels_of(json_body(&resp, &describe("GET", path))?, path)
    }

    /// Makes a label: `POST {base}/labels` `{"name", "description"}`. What a server answers for
    /// a name it holds already is UNCONFIRMED (sources answer 409): a 409, or an answer that
    /// names no label, is settled by listing the labels again.
    pub fn create_label(&self, name: &str) -> Result<Label> {
        let path = format!("{}/labels", self.generation.base_path());
        let body = json!({"name": name, "description": LABEL_DESCRIPTION});
        let resp = self.send("POST", &path, Some(&Payload::json(&body)))?;
        let ok = http::classify(resp.status) == http::Verdict::Ok;
        if !ok && resp.status != 409 {
            return Err(status_error(&resp, "POST", &path));
        }
        let made = ok
            .then(|| json_body(&resp, &describe("POST", &path)).ok())
            .flatten()
            .map(unwrap_data)
            .and_then(|v| serde_json::from_value::<Label>(v).ok())
            .filter(|l| l.id > 0)
            // (an answer that names only the id is the label asked for)
            .map(|l| Label {
                name: if l.name.trim().is_empty() {
                    name.to_string()
                } else {
                    l.name
                },
                ..l
            });
        if let Some(l) = made {
            log::info!("created Tanium label {:?} (id {})", l.name, l.id);
            if let Some(ids) = self
                .labels_reread
                .lock()
                .ok()
                .as_mut()
                .and_then(|k| k.as_mut())
            {
                ids.insert(l.id);
            }
            return Ok(l);
        }
        let labels = self.list_labels()?;
        find(&labels, name).cloned().ok_or_else(|| Error::Protocol {
            service: Service::Tanium,
            request: describe("POST", &path),
            detail: format!(
                "label {name:?} was {} but cannot be found afterwards",
                if ok {
                    "accepted"
                } else {
                    "refused as existing"
                }
            ),
        })
    }

    /// Puts a label on a document of the app's source: `PUT {base}/intels/{id}/labels`
    /// `{"id": <labelId>}`. An unknown label id answers 500 (recorded; XSOAR maps that 500 to
    /// a bad label id): after one, the labels are read again, once for the client, and an id
    /// they no longer hold is [`Error::LabelGone`], for this and every later attach of it.
    pub fn add_doc_label(&self, doc_id: i64, label_id: i64) -> Result<()> {
        self.ensure_owned("label", doc_id)?;
        if self.label_exists(label_id, false) == Some(false) {
            return Err(Error::LabelGone { label_id });
        }
        let path = format!("{}/intels/{doc_id}/labels", self.generation.base_path());
        let body = Payload::json(&json!({ "id": label_id }));
        let resp = self.send("PUT", &path, Some(&body))?;
        if http::classify(resp.status) == http::Verdict::Ok {
            if serde_json::from_slice::<serde_json::Value>(&resp.body).is_ok() {
                return Ok(());
            }
            // Tanium answers the labels now on the document; a 2xx that is not JSON may be a
            // proxy's page with nothing done, so the document says whether the label is on.
            if self.doc_label_ids(doc_id)?.contains(&label_id) {
                return Ok(());
            }
            return Err(Error::Protocol {
                service: Service::Tanium,
                request: describe("PUT", &path),
                detail: format!(
                    "answered {} with a body that is not JSON, and label {label_id} is not on the document",
                    resp.status
                ),
            });
        }
        if resp.status == 500 && self.label_exists(label_id, true) == Some(false) {
            log::warn!(
                "PUT {} answered 500 and Tanium's labels no longer hold label {label_id}",
                crate::http::path_of(&path)
            );
            return Err(Error::LabelGone { label_id });
        }
        Err(status_error(&resp, "PUT", &path))
    }

    /// Whether Tanium holds label `id`, as the labels read again after an attach answered 500
    /// say; `reread` reads them when they were not read yet (once per client). None: not
    /// read, or unreadable.
    fn label_exists(&self, id: i64, reread: bool) -> Option<bool> {
        let mut known = self.labels_reread.lock().ok()?;
        if known.is_none() && reread {
            match self.list_labels() {
                Ok(labels) => *known = Some(labels.iter().map(|l| l.id).collect()),
                Err(e) => log::info!("could not read the Tanium labels again: {e}"),
            }
        }
        known.as_ref().map(|ids| ids.contains(&id))
    }

    /// Takes a label off a document of the app's source:
    /// `DELETE {base}/intels/{id}/labels/{labelId}`; not there (404) is done already.
    pub fn remove_doc_label(&self, doc_id: i64, label_id: i64) -> Result<()> {
        self.ensure_owned("label", doc_id)?;
        let path = format!(
            "{}/intels/{doc_id}/labels/{label_id}",
            self.generation.base_path()
        );
        let resp = self.send("DELETE", &path, None)?;
        if resp.status == 404 || http::classify(resp.status) == http::Verdict::Ok {
            Ok(())
        } else {
            Err(status_error(&resp, "DELETE", &path))
        }
    }

    /// The labels on a document of the app's source, for servers whose listing does not say:
    /// `GET {base}/intels/{id}/labels`.
    pub fn doc_label_ids(&self, doc_id: i64) -> Result<Vec<i64>> {
        self.ensure_owned("read", doc_id)?;
        let path = format!("{}/intels/{doc_id}/labels", self.generation.base_path());
        let mut ids: Vec<i64> = self.labels_at(&path)?.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

fn labels_of(body: serde_json::Value, path: &str) -> Result<Vec<Label>> {
    let rows = rows_of(body).ok_or_else(|| Error::Protocol {
        service: Service::Tanium,
        request: describe("GET", path),
        detail: "the labels are not a JSON list".into(),
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|r| serde_json::from_value::<Label>(r).ok())
        .filter(|l| l.id > 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(id: i64, name: &str) -> Label {
        Label {
            id,
            name: name.into(),
        }
    }

    #[test]
    fn a_label_is_found_without_case_the_same_spelling_first() {
        let labels = [l(9, "apt"), l(4, "APT"), l(2, "Apt"), l(1, "Pilot")];
        assert_eq!(find(&labels, "APT").map(|l| l.id), Some(4));
        assert_eq!(find(&labels, "aPt").map(|l| l.id), Some(2), "the oldest");
        assert_eq!(find(&labels, " pilot ").map(|l| l.id), Some(1));
        assert_eq!(find(&labels, "Crime"), None);
    }
}
