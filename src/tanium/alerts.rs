//! Threat Response alerts, read newest first back to a point in the server's time (reference:
//! recorded-responses.md, Round 2). The job only reads them; it never changes their state.
//!
//! `GET {base}/alerts?sort=-createdAt,-id&limit=500&offset=N`. `createdAt` is when Threat
//! Response stored the alert, so an alert an endpoint raised long before (`alertedAt`, the
//! endpoint's clock) and sent late still sorts by when it arrived. A server that refuses a sort
//! of two columns (400 on the first page) is asked for `-createdAt` alone.
//!
//! Offsets shift while the listing is read: an alert stored meanwhile pushes every row down (a
//! row is met twice; ids tell them apart), a deleted one pulls them up (a row would be skipped).
//! So each page starts [`OVERLAP_ROWS`] rows before the end of the last one, and must meet one
//! of them again; when it meets none, rows were skipped and the listing is read again from the
//! top (twice at most, then an error: the caller keeps its checkpoint).
//!
//! A server that ignores `sort` (rows that are not newest first) is read to its end: stopping
//! at the first older row would miss newer ones further on.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result, Service};
use crate::http;

use super::answers::{describe, json_body, rows_of, status_error, total_count};
use super::client::TaniumClient;
use super::model::int_of;

/// Rows per page (the recorded maximum: more answers 400).
pub const ALERT_PAGE: u64 = 500;
/// Rows each page reads again of the page before it.
pub const OVERLAP_ROWS: usize = 10;
/// Reads of the listing from the top that may find it changed under them before it is an error.
const MAX_RESTARTS: u32 = 2;

/// One alert as the job needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub guid: Option<String>,
    /// The document that matched (`intelDocId`).
    pub intel_doc_id: Option<i64>,
    pub computer_name: Option<String>,
    /// `createdAt`: when Threat Response stored it.
    pub created_at: OffsetDateTime,
    /// `details` as served: a JSON text (recorded), or an object written back as one.
    pub details: Option<String>,
}

impl Alert {
    /// An alert row; None without an id or a readable `createdAt` (such a row can be neither
    /// placed in time nor told apart, so it is counted and never reported).
    pub fn from_row(row: &Value) -> Option<Alert> {
        let id = row.get("id").and_then(int_of).filter(|id| *id > 0)?;
        let created_at = row
            .get("createdAt")
            .and_then(Value::as_str)
            .and_then(|t| OffsetDateTime::parse(t.trim(), &Rfc3339).ok())?;
        let text = |k: &str| {
            row.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let details = match row.get("details") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ Value::Object(_)) => Some(v.to_string()),
            _ => None,
        };
        Some(Alert {
            id,
            guid: text("guid"),
            intel_doc_id: row.get("intelDocId").and_then(int_of),
            computer_name: text("computerName"),
            created_at,
            details,
        })
    }
}

/// What a read of the alerts met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertsRead {
    /// Distinct alerts passed on (stored at or after the point asked for).
    pub passed: u64,
    /// Rows without an id or a readable `createdAt`.
    pub unreadable: u64,
    /// Requests the read took.
    pub pages: u64,
    /// The server did not list newest first, so the whole listing was read.
    pub sort_ignored: bool,
}

impl TaniumClient {
    /// The Tanium console's address, for links to alerts (`{console}/ui/threatresponse/…`).
    pub fn console_url(&self) -> &str {
        &self.base_url
    }

    /// Calls `each` once for every alert Threat Response stored at or after `from` (its
    /// `createdAt`), newest first as far as the server sorts; see the module docs.
    pub fn alerts_since(
        &self,
        from: OffsetDateTime,
        each: &mut dyn FnMut(Alert),
    ) -> Result<AlertsRead> {
        let base = format!("{}/alerts", self.generation.base_path());
        let max_rows = self.max_listed_rows.load(Ordering::SeqCst);
        let mut read = AlertsRead::default();
        let mut compound = true;
        let mut passed: HashSet<i64> = HashSet::new();
        let mut restarts = 0;
        let (mut offset, mut largest, mut rows_total) = (0u64, 0usize, 0u64);
        let mut tail: Vec<i64> = Vec::new();
        let mut reread = 0usize;
        loop {
            let sort = if compound {
                "-createdAt,-id"
            } else {
                "-createdAt"
            };
            let path = format!("{base}?sort={sort}&limit={ALERT_PAGE}&offset={offset}");
            read.pages += 1;
            let resp = self.send("GET", &path, None)?;
            if resp.status == 400 && compound && offset == 0 {
                log::info!(
                    "Threat Response refused a sort of two columns on the alerts; sorting by createdAt alone"
                );
                compound = false;
                continue;
            }
            if http::classify(resp.status) != http::Verdict::Ok {
                return Err(status_error(&resp, "GET", &path));
            }
            let what = describe("GET", &path);
            let body = json_body(&resp, &what)?;
            let total = total_count(&body);
            let partial = |detail: String| Error::Protocol {
                service: Service::Tanium,
                request: what.clone(),
                detail,
            };
            let rows = rows_of(body)
                .ok_or_else(|| partial("the alerts listing is not a JSON list".into()))?;
            let n = rows.len();
            let alerts: Vec<Option<Alert>> = rows.iter().map(Alert::from_row).collect();
            let met_again = alerts.iter().flatten().any(|a| tail.contains(&a.id));
            if n > 0 && !tail.is_empty() && !met_again {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(partial(format!(
                        "the alerts listing changed under {} reads from the top (alerts deleted \
                         while it was read); nothing is reported from a partial read",
                        MAX_RESTARTS + 1
                    )));
                }
                log::info!(
                    "the Threat Response alerts moved while they were read (alerts deleted?); \
                     reading them again from the newest"
                );
                (offset, largest, rows_total, reread) = (0, 0, 0, 0);
                tail.clear();
                continue;
            }
            let times: Vec<OffsetDateTime> =
                alerts.iter().flatten().map(|a| a.created_at).collect();
            if !read.sort_ignored && times.windows(2).any(|w| w[1] > w[0]) {
                read.sort_ignored = true;
                log::warn!(
                    "Threat Response does not list alerts newest first (sort ignored): this run \
                     reads every alert it holds"
                );
            }
            let fresh = n.saturating_sub(reread);
            let mut older = false;
            for (i, a) in alerts.into_iter().enumerate() {
                match a {
                    None if i >= n - fresh => read.unreadable += 1,
                    None => {}
                    Some(a) if a.created_at < from => older = true,
                    Some(a) if passed.insert(a.id) => {
                        read.passed += 1;
                        each(a);
                    }
                    Some(_) => {}
                }
            }
            rows_total += n as u64;
            let short = n < largest;
            largest = largest.max(n);
            let at_total = total.is_some_and(|t| offset + n as u64 >= t);
            if n == 0 || short || at_total || (older && !read.sort_ignored) {
                break;
            }
            if rows_total >= max_rows {
                return Err(partial(format!(
                    "the alerts listing did not end after {rows_total} rows"
                )));
            }
            let keep = OVERLAP_ROWS.min(n - 1);
            tail = rows[n - keep..]
                .iter()
                .filter_map(|r| r.get("id").and_then(int_of))
                .collect();
            offset += (n - keep) as u64;
            reread = keep;
        }
        if read.unreadable > 0 {
            log::warn!(
                "{} Threat Response alert rows without an id or a createdAt time were left out",
                read.unreadable
            );
        }
        Ok(read)
    }

    /// For `check`: one alert read (`limit=1`), which proves 'threat response alerts read'.
    pub fn check_alerts(&self) -> Result<Option<u64>> {
        let path = format!("{}/alerts?limit=1", self.generation.base_path());
        let resp = self.send("GET", &path, None)?;
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "GET", &path));
        }
        let body = json_body(&resp, &describe("GET", &path))?;
        Ok(total_count(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_alert_row_needs_an_id_and_a_stored_time_and_keeps_details_as_text() {
        let row = json!({
            "id": "17", "guid": "g-1", "intelDocId": 44, "computerName": "pc-1",
            "createdAt": "2026-11-28T12:00:00.120Z", "alertedAt": "2026-11-28T11:00:00Z",
            "details": "{\"match\": {}}"
        });
        let a = Alert::from_row(&row).unwrap();
        assert_eq!((a.id, a.intel_doc_id), (17, Some(44)));
        assert_eq!(a.details.as_deref(), Some("{\"match\": {}}"));
        assert_eq!(a.guid.as_deref(), Some("g-1"));
        let object = json!({"id": 3, "createdAt": "2026-11-28T12:00:00Z", "details": {"a": 1}});
        assert_eq!(
            Alert::from_row(&object).unwrap().details.as_deref(),
            Some("{\"a\":1}")
        );
        for bad in [
            json!({"createdAt": "2026-11-28T12:00:00Z"}),
            json!({"id": 0, "createdAt": "2026-11-28T12:00:00Z"}),
            json!({"id": 4}),
            json!({"id": 4, "createdAt": "yesterday"}),
        ] {
            assert_eq!(Alert::from_row(&bad), None, "{bad}");
        }
    }
}
