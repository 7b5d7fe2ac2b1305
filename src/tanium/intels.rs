//! The app's intel documents: listing (guarded against listings that never end), reading one,
//! uploads, replacements and deletes (verified when the answer is ambiguous).

use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::compact::IdSet;
use crate::error::{Error, Result, Service};
use crate::http::{self, Response};
use crate::tanium::model::{IntelDoc, Upload};
use crate::words::counted;

use super::answers::{describe, json_body, rows_of, status_error, total_count, unwrap_data};
use super::client::{Payload, TaniumClient, PAGE_LIMIT};

/// What one listing met: ids (to notice repeats), and the rows kept, of other sources, and
/// unreadable.
#[derive(Default)]
struct Listing {
    seen: IdSet,
    kept: u64,
    foreign: u64,
    unreadable: u64,
}

impl Listing {
    /// Passes on the page's rows of `source_id` not met before; how many rows were new.
    fn take(&mut self, rows: Vec<Value>, source_id: i64, each: &mut dyn FnMut(IntelDoc)) -> usize {
        let mut fresh = 0;
        for row in rows {
            let doc = match serde_json::from_value::<IntelDoc>(row) {
                Ok(d) if d.id > 0 => d,
                _ => {
                    self.unreadable += 1;
                    continue;
                }
            };
            if !self.seen.insert(doc.id) {
                continue;
            }
            fresh += 1;
            if doc.source_id != Some(source_id) {
                self.foreign += 1;
                continue;
            }
            self.kept += 1;
            each(doc);
        }
        fresh
    }

    fn log(&self, source_id: i64) {
        if self.foreign > 0 {
            log::debug!(
                "the Tanium intel listing held {} of other sources (sourceId not applied by \
                 the server); only source {source_id} is ours",
                counted(self.foreign, "document")
            );
        }
        if self.unreadable > 0 {
            log::warn!(
                "ignored {} unreadable rows (no id) in the Tanium intel listing",
                self.unreadable
            );
        }
    }
}

impl TaniumClient {
    /// Calls `each` for every document of `source_id` and returns how many there were.
    ///
    /// Paged with `limit` = 500 and `offset` (plus a `sourceId` hint the server may ignore;
    /// dropped if the server answers 400 to it). Only rows whose `sourceId` equals `source_id`
    /// are passed on; others are counted in one debug line (no public client sends `sourceId`,
    /// so a server that ignores it is normal, not worth a warning). The listing ends at an empty
    /// page or at a page shorter than an earlier one (so a server that caps pages below 500
    /// is still read to the end). Guards against a listing that never ends: a page of only
    /// already-seen ids ends it (fine when the server sent everything in one go, an error
    /// after full pages: the server ignores `offset`), and so does the row cap (an error).
    /// Where answers carry `meta.totalCount` (recorded on 4.x lists), a listing that ends with
    /// fewer rows than it is an error too. Errors because acting on a partial listing would
    /// create duplicates (and a full reconcile would remove what it did not see).
    pub fn list_docs(&self, source_id: i64, each: &mut dyn FnMut(IntelDoc)) -> Result<u64> {
        self.list_docs_parallel(source_id, 1, each)
    }

    /// [`TaniumClient::list_docs`] with up to `parallel` pages asked for at once once the
    /// first page came back full (offsets do not depend on each other). Pages are read in
    /// order, so the end of the listing is found as without; at most `parallel - 1` pages past
    /// the end are asked for.
    // One loop over batches of pages; its end conditions (short page, repeated page, total
    // reached, filter ignored) share the counters it keeps.
    pub fn list_docs_parallel(
        &self,
        source_id: i64,
        parallel: usize,
        each: &mut dyn FnMut(IntelDoc),
    ) -> Result<u64> {
        let base = format!("{}/intels", self.generation.base_path());
        let max_rows = self.max_listed_rows.load(Ordering::SeqCst);
        let mut listing = Listing::default();
        let (mut offset, mut rows_total, mut largest_page) = (0u64, 0u64, 0usize);
        let mut with_filter = true;
        // The total the server says the listing holds (`meta.totalCount`), when it says.
        let mut claimed: Option<u64> = None;
        'pages: loop {
            let batch = if largest_page == PAGE_LIMIT as usize {
                parallel.max(1)
            } else {
                1
            };
            let pages = if batch == 1 {
                vec![self.listing_page(&base, source_id, offset, &mut with_filter)]
            } else {
                let filter = with_filter;
                std::thread::scope(|s| {
                    let asked: Vec<_> = (0..batch as u64)
                        .map(|i| {
                            let (base, at) = (&base, offset + i * u64::from(PAGE_LIMIT));
                            s.spawn(move || {
                                let mut f = filter;
                                self.listing_page(base, source_id, at, &mut f)
                            })
                        })
                        .collect();
                    asked
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect::<Vec<_>>()
                })
            };
            for page in pages {
                let Some((rows, total)) = page? else {
                    continue 'pages;
                };
                claimed = total.or(claimed);
                let n = rows.len();
                let fresh = listing.take(rows, source_id, &mut |doc| {
                    self.own(doc.id);
                    each(doc)
                });
                rows_total += n as u64;
                offset += n as u64;
                if n == 0 {
                    break 'pages;
                }
                let partial = |detail: String| Error::Protocol {
                    service: Service::Tanium,
                    request: describe("GET", &base),
                    detail,
                };
                if fresh == 0 {
                    if largest_page != PAGE_LIMIT as usize {
                        // The server sent everything at once (ignoring limit or offset): done.
                        break 'pages;
                    }
                    return Err(partial(format!(
                        "the intel listing repeats rows already seen at offset {} (the server \
                         ignores offset?); refusing to act on a partial listing",
                        offset - n as u64
                    )));
                }
                let short = n < largest_page;
                largest_page = largest_page.max(n);
                if short {
                    break 'pages;
                }
                if rows_total >= max_rows {
                    return Err(partial(format!(
                        "the intel listing did not end after {rows_total} rows; refusing to act on a partial listing"
                    )));
                }
            }
        }
        listing.log(source_id);
        let met = listing.seen.len() as u64 + listing.unreadable;
        match claimed {
            Some(total) if met < total => Err(Error::Protocol {
                service: Service::Tanium,
                request: describe("GET", &base),
                detail: format!(
                    "the intel listing ended after {met} documents but Tanium counts {total}; \
                     refusing to act on a partial listing"
                ),
            }),
            _ => Ok(listing.kept),
        }
    }

    /// One page of the listing and the total it claims; None when the server refused the
    /// `sourceId` hint (then `with_filter` is off and the caller asks again).
    fn listing_page(
        &self,
        base: &str,
        source_id: i64,
        offset: u64,
        with_filter: &mut bool,
    ) -> Result<Option<(Vec<Value>, Option<u64>)>> {
        let path = if *with_filter {
            format!("{base}?sourceId={source_id}&limit={PAGE_LIMIT}&offset={offset}")
        } else {
            format!("{base}?limit={PAGE_LIMIT}&offset={offset}")
        };
        let resp = self.send("GET", &path, None)?;
        if resp.status == 400 && *with_filter && offset == 0 {
            log::info!(
                "Tanium rejected the sourceId filter on the intel listing; filtering here instead"
            );
            *with_filter = false;
            return Ok(None);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "GET", &path));
        }
        let what = describe("GET", &path);
        let body = json_body(&resp, &what)?;
        let total = total_count(&body);
        rows_of(body)
            .map(|rows| Some((rows, total)))
            .ok_or_else(|| Error::Protocol {
                service: Service::Tanium,
                request: what,
                detail: "the intel listing is not a JSON list".into(),
            })
    }

    /// Reads one document of the app's source with its `description` (listings leave it out):
    /// `GET {base}/intels/{id}`; None when it is gone (404). Only for ids the client owns.
    pub fn get_doc(&self, doc_id: i64) -> Result<Option<IntelDoc>> {
        self.ensure_owned("read", doc_id)?;
        let path = format!("{}/intels/{doc_id}", self.generation.base_path());
        let resp = self.send("GET", &path, None)?;
        if resp.status == 404 {
            return Ok(None);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "GET", &path));
        }
        let doc = doc_of(&resp, "GET", &path)?;
        if doc.id != doc_id {
            return Err(Error::Protocol {
                service: Service::Tanium,
                request: describe("GET", &path),
                detail: format!("asked for intel {doc_id}, got intel {}", doc.id),
            });
        }
        Ok(Some(doc))
    }

    /// Uploads a new document into the source: `POST {base}/sources/{id}/intels`.
    pub fn create_doc(&self, source_id: i64, up: &Upload) -> Result<IntelDoc> {
        let path = format!("{}/sources/{source_id}/intels", self.generation.base_path());
        let resp = self.expect_ok("POST", &path, Some(&upload_payload(up)))?;
        let doc = doc_of(&resp, "POST", &path)?;
        if doc.source_id.is_some_and(|s| s != source_id) {
            log::warn!(
                "Tanium filed new intel {} under source {:?}, not {source_id}",
                doc.id,
                doc.source_id
            );
        } else {
            self.own(doc.id);
        }
        Ok(doc)
    }

    /// Replaces a document's content: `PUT {base}/intels/{id}`.
    ///
    /// Tanium updates in place only when the new content keeps the stored intrinsic id;
    /// otherwise it creates a new document and the returned id differs from `doc_id` (the old
    /// document still exists: the caller decides whether to delete it).
    pub fn update_doc(&self, doc_id: i64, up: &Upload) -> Result<IntelDoc> {
        self.ensure_owned("update", doc_id)?;
        let path = format!("{}/intels/{doc_id}", self.generation.base_path());
        let resp = self.expect_ok("PUT", &path, Some(&upload_payload(up)))?;
        let doc = doc_of(&resp, "PUT", &path)?;
        if doc.id != doc_id {
            log::warn!(
                "Tanium stored the new content of intel {doc_id} as a new document {} (intrinsic id changed)",
                doc.id
            );
        }
        self.own(doc.id);
        Ok(doc)
    }

    /// Deletes a document: `DELETE {base}/intels/?id={id}`, falling back to
    /// `DELETE {base}/intels/{id}` when the first form is unknown (404/405). Gone already = Ok.
    ///
    /// Only `{}` answers are on record; a 2xx whose body is not JSON may be a proxy's page
    /// (nothing deleted) or a server that answers text, so the document is read back: gone
    /// (404) is Ok, still there is an error, anything else is an error saying it is unknown.
    pub fn delete_doc(&self, doc_id: i64) -> Result<()> {
        self.ensure_owned("delete", doc_id)?;
        let base = self.generation.base_path();
        let by_path = format!("{base}/intels/{doc_id}");
        if !self.delete_by_path.load(Ordering::SeqCst) {
            let by_query = format!("{base}/intels/?id={doc_id}");
            let resp = self.send("DELETE", &by_query, None)?;
            match resp.status {
                s if (200..300).contains(&s) => {
                    self.confirm_deleted(doc_id, &resp, &by_query)?;
                    self.disown(doc_id);
                    return Ok(());
                }
                404 | 405 => {}
                _ => return Err(status_error(&resp, "DELETE", &by_query)),
            }
            let resp = self.send("DELETE", &by_path, None)?;
            if (200..300).contains(&resp.status) {
                self.confirm_deleted(doc_id, &resp, &by_path)?;
                log::info!("Tanium deletes intel by path, not by ?id=; using that from now on");
                self.delete_by_path.store(true, Ordering::SeqCst);
            } else if resp.status != 404 {
                return Err(status_error(&resp, "DELETE", &by_path));
            }
            self.disown(doc_id);
            return Ok(());
        }
        let resp = self.send("DELETE", &by_path, None)?;
        if (200..300).contains(&resp.status) || resp.status == 404 {
            if resp.status != 404 {
                self.confirm_deleted(doc_id, &resp, &by_path)?;
            }
            self.disown(doc_id);
            return Ok(());
        }
        Err(status_error(&resp, "DELETE", &by_path))
    }

    /// Ok when a 2xx delete answer is JSON, or when reading the document back says it is gone.
    pub(super) fn confirm_deleted(&self, doc_id: i64, resp: &Response, path: &str) -> Result<()> {
        let request = describe("DELETE", path);
        if json_body(resp, &request).is_ok() {
            return Ok(());
        }
        let get = format!("{}/intels/{doc_id}", self.generation.base_path());
        let answered = format!("{request} answered {} without JSON", resp.status);
        let message = match self.send("GET", &get, None) {
            Ok(r) if r.status == 404 => {
                log::debug!("{answered}; intel {doc_id} is gone");
                return Ok(());
            }
            Ok(r)
                if http::classify(r.status) == http::Verdict::Ok
                    && doc_of(&r, "GET", &get).is_ok_and(|d| d.id == doc_id) =>
            {
                format!("delete did not take: intel {doc_id} is still there ({answered})")
            }
            Ok(r) => format!(
                "delete of intel {doc_id} is ambiguous: {answered} and reading it back \
                 answered {}",
                r.status
            ),
            Err(e) => format!(
                "delete of intel {doc_id} is ambiguous: {answered} and reading it back \
                 failed ({e})"
            ),
        };
        Err(Error::DeleteUnconfirmed {
            service: Service::Tanium,
            detail: message,
        })
    }
}

pub(super) fn doc_of(resp: &Response, method: &str, path: &str) -> Result<IntelDoc> {
    let request = describe(method, path);
    let v = unwrap_data(json_body(resp, &request)?);
    let doc: IntelDoc = serde_json::from_value(v).map_err(|e| Error::Protocol {
        service: Service::Tanium,
        request: request.clone(),
        detail: format!("not an intel document: {e}"),
    })?;
    if doc.id <= 0 {
        return Err(Error::Protocol {
            service: Service::Tanium,
            request,
            detail: "the answer names no intel id".into(),
        });
    }
    Ok(doc)
}

/// Header-safe text: printable ASCII only (others become `?`), no longer than `max`.
pub(super) fn header_text(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_ascii() { c } else { '?' })
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A file name safe inside `filename="..."`.
pub(super) fn safe_file_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if n.is_empty() {
        "intel.xml".into()
    } else {
        n
    }
}

/// No `name` / `description` headers: the XML carries both, and the server reads them there
/// (only YARA uploads, which have no such fields, are known to send them).
pub(super) fn upload_payload(up: &Upload) -> Payload {
    let headers = vec![
        ("type".to_string(), header_text(up.kind, 32)),
        (
            "Content-Disposition".to_string(),
            format!("attachment; filename={}", safe_file_name(up.file_name)),
        ),
    ];
    Payload {
        content_type: "application/xml",
        headers,
        bytes: up.body.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn headers_are_safe() {
        assert_eq!(header_text("a\r\nb é", 10), "ab ?");
        assert_eq!(safe_file_name("tc/../x y.xml"), "tc_.._x_y.xml");
        assert_eq!(safe_file_name(""), "intel.xml");
    }
}
