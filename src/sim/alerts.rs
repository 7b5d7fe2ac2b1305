//! Threat Response alerts in the Tanium simulator: a store the tests raise alerts into, and
//! `GET {base}/alerts` in the recorded shape (reference: recorded-responses.md, Round 2).
//!
//! - paged with `limit` (default 100, more than 500 answers 400) and `offset`;
//! - `sort`: a comma-separated list of columns (`createdAt`, `alertedAt`, `receivedAt`,
//!   `updatedAt`, `id`), each ascending unless written `-column` (`+column` is ascending too),
//!   ties broken by id ascending; an unknown column answers 400;
//! - filters `alertedAtFrom` (inclusive), `alertedAtUntil` (exclusive), `intelDocId` and
//!   `state` (each repeatable, any of them);
//! - every alert carries the recorded fields, `details` a JSON **string** with
//!   `match.properties` and `finding.whats[].intel_intra_ids`;
//! - 4.x wraps the rows as `{"data": [...], "meta": {"totalCount", "filteredCount"}}`, 3.x
//!   answers the bare array.
//!
//! `createdAt` is the server's time (when it stored the alert), `alertedAt` the endpoint's: a
//! test gives either to make an alert that reached the server late, or two with one timestamp.
//! Where a real server could go another way there is a switch: one that ignores `sort`
//! ([`Alerts::sort_ignored`]), one that refuses a sort of more than one column
//! ([`Alerts::compound_sort_refused`]).

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::sim::server::{SimRequest, SimResponse};

/// Largest `limit` the alerts route accepts (recorded: 400 above 500).
pub const MAX_ALERT_LIMIT: usize = 500;
const DEFAULT_ALERT_LIMIT: usize = 100;

/// One stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAlert {
    pub id: i64,
    pub guid: String,
    pub state: String,
    pub intel_doc_id: i64,
    pub intel_doc_revision_id: i64,
    pub computer_name: String,
    /// The endpoint's time of the match.
    pub alerted_at: OffsetDateTime,
    /// When the server stored it.
    pub created_at: OffsetDateTime,
    /// `details` as served (a JSON text, or whatever a test put there).
    pub details: String,
}

/// What a test says of an alert it raises; everything but the document has a default.
#[derive(Debug, Clone, Default)]
pub struct AlertSpec {
    /// The intel document that matched (`intelDocId`).
    pub doc_id: i64,
    /// `computerName` (default `endpoint-<id>`).
    pub computer: Option<String>,
    /// `match.properties` of the details: the matched value(s).
    pub properties: Value,
    /// `finding.whats[0].intel_intra_ids`.
    pub intra_ids: Vec<Value>,
    /// The endpoint's time (default: the server's).
    pub alerted_at: Option<OffsetDateTime>,
    /// The server's time (default: now).
    pub created_at: Option<OffsetDateTime>,
    /// Serve this text as `details` instead of the JSON the spec describes.
    pub raw_details: Option<String>,
}

impl AlertSpec {
    /// An alert on `doc_id` whose match names `properties`.
    pub fn on(doc_id: i64, properties: Value) -> AlertSpec {
        AlertSpec {
            doc_id,
            properties,
            ..AlertSpec::default()
        }
    }
}

/// The alerts of one simulated server.
#[derive(Debug, Default)]
pub struct Alerts {
    list: Vec<SimAlert>,
    next_id: i64,
    /// `sort` is ignored: rows come in id order, as from a server without the parameter.
    pub sort_ignored: bool,
    /// A `sort` of more than one column answers 400.
    pub compound_sort_refused: bool,
}

/// `2023-10-16T12:29:34.903Z`, as recorded.
pub fn stamp_ms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn ms(t: OffsetDateTime) -> OffsetDateTime {
    let ms = t.millisecond();
    t.replace_nanosecond(u32::from(ms) * 1_000_000).unwrap_or(t)
}

fn error(status: u16, message: &str) -> SimResponse {
    SimResponse::json(status, &json!({ "text": message }))
}

#[derive(Clone, Copy)]
enum Column {
    Id,
    CreatedAt,
    AlertedAt,
}

impl Alerts {
    /// Stores an alert on a document at `revision`; its id.
    pub fn raise(&mut self, spec: AlertSpec, revision: i64) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        let created_at = ms(spec.created_at.unwrap_or_else(OffsetDateTime::now_utc));
        let alerted_at = ms(spec.alerted_at.unwrap_or(created_at));
        let guid = format!("00000000-0000-4000-8000-{id:012x}");
        let details = spec.raw_details.clone().unwrap_or_else(|| {
            json!({
                "match": {
                    "hash": format!("{}", 17_914_125_682_699_366_401u64 ^ id as u64),
                    "type": "process",
                    "source": "recorder",
                    "version": 1,
                    "contexts": [],
                    "properties": spec.properties,
                },
                "finding": {
                    "whats": [{
                        "source_name": "recorder",
                        "intel_intra_ids": spec.intra_ids,
                        "artifact_activity": {},
                    }],
                    "domain": "threatresponse",
                    "intel_id": format!("{}:{revision}:8ebe28bf-1acb-41b7-9f30-7b40a9145b1d", spec.doc_id),
                    "finding_id": format!("{}", 1_245_935_966_959_239_109u64 ^ id as u64),
                    "first_seen": stamp_ms(alerted_at),
                    "last_seen": stamp_ms(alerted_at),
                    "source_name": "recorder",
                },
                "intel_id": spec.doc_id,
                "config_id": 2,
                "config_rev_id": 1,
            })
            .to_string()
        });
        self.list.push(SimAlert {
            id,
            guid,
            state: "unresolved".into(),
            intel_doc_id: spec.doc_id,
            intel_doc_revision_id: revision,
            computer_name: spec.computer.unwrap_or_else(|| format!("endpoint-{id}")),
            alerted_at,
            created_at,
            details,
        });
        id
    }

    /// Every alert, in the order raised.
    pub fn all(&self) -> Vec<SimAlert> {
        self.list.clone()
    }

    /// Removes an alert (as an admin deleting it would); false when there is none.
    pub fn delete(&mut self, id: i64) -> bool {
        let before = self.list.len();
        self.list.retain(|a| a.id != id);
        self.list.len() < before
    }

    /// `GET {base}/alerts`.
    pub fn answer(&self, req: &SimRequest, v4: bool) -> SimResponse {
        let limit = match req.param("limit").map(str::parse::<usize>) {
            None => DEFAULT_ALERT_LIMIT,
            Some(Ok(l)) if (1..=MAX_ALERT_LIMIT).contains(&l) => l,
            Some(_) => return error(400, "limit must be a number from 1 to 500"),
        };
        let offset = match req.param("offset").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(o)) => o,
            Some(Err(_)) => return error(400, "offset must be a number"),
        };
        let time_param = |name: &str| -> Result<Option<OffsetDateTime>, SimResponse> {
            match req.param(name) {
                None => Ok(None),
                Some(v) => OffsetDateTime::parse(v.trim(), &Rfc3339)
                    .map(Some)
                    .map_err(|_| error(400, &format!("{name} must be an ISO-8601 time"))),
            }
        };
        let (from, until) = match (time_param("alertedAtFrom"), time_param("alertedAtUntil")) {
            (Ok(f), Ok(u)) => (f, u),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        let docs: Vec<i64> = req
            .params("intelDocId")
            .iter()
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        let states = req.params("state");
        let mut keys = Vec::new();
        if let Some(sort) = req.param("sort").filter(|s| !s.trim().is_empty()) {
            for part in sort.split(',') {
                let part = part.trim();
                let (desc, name) = match part.strip_prefix('-') {
                    Some(n) => (true, n),
                    None => (false, part.strip_prefix('+').unwrap_or(part)),
                };
                let column = match name {
                    "id" => Column::Id,
                    "createdAt" | "receivedAt" | "updatedAt" => Column::CreatedAt,
                    "alertedAt" => Column::AlertedAt,
                    other => return error(400, &format!("invalid sort column: {other}")),
                };
                keys.push((column, desc));
            }
        }
        if keys.len() > 1 && self.compound_sort_refused {
            return error(400, "sort takes one column");
        }
        if self.sort_ignored {
            keys.clear();
        }
        let mut rows: Vec<&SimAlert> = self
            .list
            .iter()
            .filter(|a| from.is_none_or(|f| a.alerted_at >= f))
            .filter(|a| until.is_none_or(|u| a.alerted_at < u))
            .filter(|a| docs.is_empty() || docs.contains(&a.intel_doc_id))
            .filter(|a| states.is_empty() || states.contains(&a.state.as_str()))
            .collect();
        rows.sort_by(|a, b| {
            for (column, desc) in &keys {
                let o = match column {
                    Column::Id => a.id.cmp(&b.id),
                    Column::CreatedAt => a.created_at.cmp(&b.created_at),
                    Column::AlertedAt => a.alerted_at.cmp(&b.alerted_at),
                };
                let o = if *desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.id.cmp(&b.id)
        });
        let filtered = rows.len();
        let page: Vec<Value> = rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(alert_json)
            .collect();
        if v4 {
            SimResponse::json(
                200,
                &json!({"data": page, "meta": {"totalCount": self.list.len(), "filteredCount": filtered}}),
            )
        } else {
            SimResponse::json(200, &Value::Array(page))
        }
    }
}

fn alert_json(a: &SimAlert) -> Value {
    let received = a.created_at - time::Duration::milliseconds(294);
    json!({
        "id": a.id,
        "state": a.state,
        "type": "detect.match",
        "guid": a.guid,
        "priority": "high",
        "severity": "info",
        "details": a.details,
        "intelDocId": a.intel_doc_id,
        "groupingId": 2,
        "intelDocRevisionId": a.intel_doc_revision_id,
        "scanConfigId": 2,
        "scanConfigRevisionId": 1,
        "computerName": a.computer_name,
        "computerIpAddress": "10.0.0.7",
        "matchType": "process",
        "path": null,
        "receivedAt": stamp_ms(received),
        "suppressedAt": null,
        "alertedAt": stamp_ms(a.alerted_at),
        "findingId": format!("{}", 1_245_935_966_959_239_109u64 ^ a.id as u64),
        "ackedAt": null,
        "createdAt": stamp_ms(a.created_at),
        "updatedAt": stamp_ms(a.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn req(query: &[(&str, &str)]) -> SimRequest {
        SimRequest {
            method: "GET".into(),
            target: String::new(),
            path: "/alerts".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn ids(r: &SimResponse) -> Vec<i64> {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let rows = v.get("data").cloned().unwrap_or(v);
        rows.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn alerts_page_sort_and_filter_as_recorded() {
        let mut a = Alerts::default();
        let t = datetime!(2026-11-28 12:00:00 UTC);
        for (doc, created) in [(7, 0), (8, 2), (7, 1), (9, 1)] {
            a.raise(
                AlertSpec {
                    created_at: Some(t + time::Duration::seconds(created)),
                    ..AlertSpec::on(doc, json!({"remote_ip": "1.2.3.4"}))
                },
                1,
            );
        }
        assert_eq!(ids(&a.answer(&req(&[]), true)), [1, 2, 3, 4]);
        let newest = a.answer(&req(&[("sort", "-createdAt,-id")]), true);
        assert_eq!(ids(&newest), [2, 4, 3, 1]);
        let v: Value = serde_json::from_slice(&newest.body).unwrap();
        assert_eq!(v["meta"]["totalCount"], 4);
        let details: Value =
            serde_json::from_str(v["data"][0]["details"].as_str().unwrap()).unwrap();
        assert_eq!(details["match"]["properties"]["remote_ip"], "1.2.3.4");
        assert_eq!(v["data"][0]["createdAt"], "2026-11-28T12:00:02.000Z");
        let paged = req(&[("sort", "-createdAt"), ("limit", "2"), ("offset", "2")]);
        assert_eq!(ids(&a.answer(&paged, false)), [4, 1]);
        assert_eq!(
            ids(&a.answer(&req(&[("intelDocId", "7"), ("sort", "+alertedAt")]), true)),
            [1, 3]
        );
        let from = req(&[("alertedAtFrom", "2026-11-28T12:00:01Z")]);
        assert_eq!(ids(&a.answer(&from, true)), [2, 3, 4]);
        assert_eq!(a.answer(&req(&[("limit", "501")]), true).status, 400);
        assert_eq!(a.answer(&req(&[("sort", "-severityX")]), true).status, 400);
        a.compound_sort_refused = true;
        assert_eq!(
            a.answer(&req(&[("sort", "-createdAt,-id")]), true).status,
            400
        );
        a.sort_ignored = true;
        assert_eq!(
            ids(&a.answer(&req(&[("sort", "-createdAt")]), true)),
            [1, 2, 3, 4]
        );
        assert!(a.delete(2) && !a.delete(2));
    }
}
