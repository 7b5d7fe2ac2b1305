//! Tanium labels: listing and making them (never deleting: other intel and configurations may
//! use them), and putting them on and taking them off the app's own documents, one label per
//! call as the API has it.

use serde_json::json;

use crate::error::{Error, Result, Service};
use crate::http;
use crate::labels::key;
use crate::tanium::model::Label;

use super::answers::{describe, json_body, rows_of, status_error, unwrap_data};
use super::client::{Payload, TaniumClient};

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
    /// Every label: `GET {base}/labels`. Whether the route pages is UNCONFIRMED (the clients on
    /// record read one answer); a label missing from it is looked up again when making it
    /// answers that it exists.
    pub fn list_labels(&self) -> Result<Vec<Label>> {
        self.labels_at(&format!("{}/labels", self.generation.base_path()))
    }

    fn labels_at(&self, path: &str) -> Result<Vec<Label>> {
        let resp = self.expect_ok("GET", path, None)?;
        let rows =
            rows_of(json_body(&resp, &describe("GET", path))?).ok_or_else(|| Error::Protocol {
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
    /// `{"id": <labelId>}`.
    pub fn add_doc_label(&self, doc_id: i64, label_id: i64) -> Result<()> {
        self.ensure_owned("label", doc_id)?;
        let path = format!("{}/intels/{doc_id}/labels", self.generation.base_path());
        self.expect_ok(
            "PUT",
            &path,
            Some(&Payload::json(&json!({ "id": label_id }))),
        )?;
        Ok(())
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
