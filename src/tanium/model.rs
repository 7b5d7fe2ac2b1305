//! Tanium Threat Response objects as the intel API returns them (both API generations).
//!
//! Field parsing is lenient on purpose (the TR 4.x shapes are partly UNCONFIRMED): ids may be
//! JSON numbers or numeric strings, and `null` stands for "absent" everywhere.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Which Threat Response REST generation the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiGeneration {
    /// TR 3.x / Detect: `/plugin/products/detect3/api/v1`, bare JSON.
    V3,
    /// TR 4.x: `/plugin/products/threat-response/api/v1`, `{"data": ...}` envelope, explicit deploy.
    V4,
}

impl ApiGeneration {
    /// The intel API base path.
    pub fn base_path(self) -> &'static str {
        match self {
            ApiGeneration::V3 => "/plugin/products/detect3/api/v1",
            ApiGeneration::V4 => "/plugin/products/threat-response/api/v1",
        }
    }

    /// Human label for logs and the `check` summary.
    pub fn label(self) -> &'static str {
        match self {
            ApiGeneration::V3 => "Threat Response 3.x (detect3 API)",
            ApiGeneration::V4 => "Threat Response 4.x (threat-response API)",
        }
    }
}

/// An intel source.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    /// Source id.
    #[serde(deserialize_with = "lenient_i64")]
    pub id: i64,
    /// Source name (matched exactly).
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    /// Source type, e.g. `api-client`.
    #[serde(rename = "type", deserialize_with = "lenient_opt_string")]
    pub kind: Option<String>,
    /// Free-text description shown in the console.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub description: Option<String>,
}

/// Why a source is one of Threat Response's own (None: it is not): documents posted without a
/// source land in id 1 (analysts' uploads) and Tanium Signals live in id 2, as recorded answers
/// show; reputation IOCs appear under a source named Reputation (Tanium's documentation).
/// Names compare without case, so a job configured by name is refused before any request.
pub fn built_in_source(id: Option<i64>, name: &str) -> Option<&'static str> {
    let name = name.trim().to_lowercase();
    match (id, name.as_str()) {
        (Some(1), _) | (_, "user") => Some("Threat Response's own source for analysts' uploads"),
        (Some(2), _) | (_, "tanium signals") => Some("Threat Response's own Tanium Signals source"),
        (_, "reputation") => Some("Threat Response's own source for reputation intel"),
        _ => None,
    }
}

/// The listing view of one intel document: enough to decide create / update / skip / delete.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct IntelDoc {
    /// Tanium's document id.
    #[serde(deserialize_with = "lenient_i64")]
    pub id: i64,
    /// Source the document belongs to.
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub source_id: Option<i64>,
    /// Document name (STIX Indicator Title / OpenIOC short_description).
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    /// Document description: absent from listing rows on real servers, present from
    /// [`crate::tanium::TaniumClient::get_doc`].
    #[serde(deserialize_with = "lenient_opt_string")]
    pub description: Option<String>,
    /// The id the document claims (our deterministic identity).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub intrinsic_id: Option<String>,
    /// MD5 of the stored content.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub md5: Option<String>,
    /// Number of content revisions.
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub revision_id: Option<i64>,
    /// `stix`, `openioc`, ...
    #[serde(rename = "type", deserialize_with = "lenient_opt_string")]
    pub kind: Option<String>,
    /// Stored size in bytes.
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub size: Option<i64>,
    /// The document itself, in get-by-id answers (listings leave it out).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub contents: Option<String>,
    /// None when the server does not say (the field is missing or not a list): then the
    /// document's labels are read on their own route when needed.
    #[serde(deserialize_with = "lenient_label_ids")]
    pub label_ids: Option<Vec<i64>>,
    /// Threat Response turned the document off (4.x intel health; whether listings carry it is
    /// UNCONFIRMED: absent means "does not say").
    #[serde(deserialize_with = "lenient_opt_bool")]
    pub disabled: Option<bool>,
    /// Endpoints on which Threat Response disabled the document (noisy intel).
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub disabled_endpoint_count: Option<i64>,
    /// Findings Threat Response throttled for the document.
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub throttled_finding_count: Option<i64>,
    /// Threat Response's verdict on the document, e.g. `HIGH_FIDELITY`.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub status: Option<String>,
}

impl IntelDoc {
    /// Whether Threat Response has disabled the document, everywhere or on some endpoints.
    pub fn disabled_by_tr(&self) -> bool {
        self.disabled == Some(true) || self.disabled_endpoint_count.is_some_and(|n| n > 0)
    }
}

/// A Tanium label (`GET {base}/labels`).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct Label {
    #[serde(deserialize_with = "lenient_i64")]
    pub id: i64,
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub description: String,
}

/// What `GET {base}/tasks/{id}` says of an intel deploy (recorded: `status` `STARTED` or
/// `COMPLETED`, `startTime`, `endTime`, `error`). Times are the server's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running {
        started: Option<String>,
    },
    Completed {
        ended: Option<String>,
    },
    /// Ended otherwise: another status, or an error the task reports.
    Ended {
        status: String,
        error: Option<String>,
        ended: Option<String>,
    },
}

impl TaskState {
    /// Reads a task answer (the envelope removed); None when it names no status.
    pub fn from_task(v: &Value) -> Option<TaskState> {
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        let status = text("status")?;
        let error = match v.get("error") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(other) => Some(other.to_string()),
        };
        let upper = status.to_ascii_uppercase();
        let busy = ["START", "RUN", "PEND", "QUEUE", "PROGRESS"]
            .iter()
            .any(|w| upper.contains(w));
        Some(if busy {
            TaskState::Running {
                started: text("startTime"),
            }
        } else if upper.starts_with("COMPLETE") && error.is_none() {
            TaskState::Completed {
                ended: text("endTime"),
            }
        } else {
            TaskState::Ended {
                status,
                error,
                ended: text("endTime"),
            }
        })
    }
}

/// What Threat Response answered to `POST {base}/intel/deploy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployAnswer {
    /// A deploy started: its task id when the answer names one.
    Started(Option<i64>),
    /// 3.x (or a server without the route): intel reaches endpoints on its own schedule.
    NotAStep,
    /// 400, which Threat Response answers while another deploy runs (the recorded 400's cause
    /// is unconfirmed): the server's words.
    Refused(String),
}

/// Label ids as numbers, numeric strings or label objects with an `id`; entries that are none
/// of these are dropped.
fn lenient_label_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<i64>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::Object(o) => o.get("id").and_then(int_of),
                    v => int_of(v),
                })
                .filter(|id| *id > 0)
                .collect(),
        ),
        _ => None,
    })
}

/// One document to send, as the renderer produced it; borrowed so a worker pool copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// The XML document, UTF-8.
    pub body: &'a str,
    /// Tanium's intel type header value: `stix` or `openioc`.
    pub kind: &'a str,
    /// File name for `Content-Disposition` (e.g. `tc-<identity>.xml`).
    pub file_name: &'a str,
}

/// Reads an integer id that may arrive as a number, a numeric string or `null` (0).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(lenient_opt_i64(d)?.unwrap_or(0))
}

/// Reads an optional integer that may arrive as a number or a numeric string.
fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(int_of(&Value::deserialize(d)?))
}

/// Reads a string that may be `null` (empty) or a number (its decimal text).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(lenient_opt_string(d)?.unwrap_or_default())
}

/// Reads an optional string that may arrive as a number (its decimal text).
fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Reads an optional boolean that may arrive as `true`/`false`, `"true"`/`"false"` or 0/1.
fn lenient_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    })
}

/// An integer from a JSON number (integral) or a numeric string; anything else is absent.
pub fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_may_be_numbers_or_numeric_strings_and_nulls_are_absent() {
        let d: IntelDoc = serde_json::from_value(json!({
            "id": "431", "revisionId": 16, "type": "openioc", "intrinsicId": 11111,
            "md5": null, "name": null, "sourceId": "7", "size": 5930.0, "extra": [1]
        }))
        .unwrap();
        assert_eq!(d.id, 431);
        assert_eq!(d.source_id, Some(7));
        assert_eq!(d.intrinsic_id.as_deref(), Some("11111"));
        assert_eq!(d.md5, None);
        assert_eq!(d.name, "");
        assert_eq!(d.size, Some(5930));
        let s: Source =
            serde_json::from_value(json!({"id": 3, "name": "x", "type": null})).unwrap();
        assert_eq!((s.id, s.kind), (3, None));
        let bad: IntelDoc = serde_json::from_value(json!({"id": "abc"})).unwrap();
        assert_eq!(bad.id, 0);
    }

    #[test]
    fn intel_health_is_read_where_present_and_absent_says_nothing() {
        let recorded: IntelDoc = serde_json::from_value(json!({"id": 9,
            "throttledFindingCount": 0, "allowAutoDisable": true, "disabled": false,
            "disabledEndpointCount": 0, "firstDeploymentTimestamp": "2023-10-13T19:28:05.584Z",
            "lastDeploymentTimestamp": "2023-11-28T18:50:31.920Z", "status": "HIGH_FIDELITY"}))
        .unwrap();
        assert_eq!(
            (recorded.disabled, recorded.status.as_deref()),
            (Some(false), Some("HIGH_FIDELITY"))
        );
        assert!(!recorded.disabled_by_tr());
        let off: IntelDoc = serde_json::from_value(
            json!({"id": 9, "disabled": "true", "disabledEndpointCount": "12"}),
        )
        .unwrap();
        assert!(off.disabled_by_tr());
        assert_eq!(off.disabled_endpoint_count, Some(12));
        let some: IntelDoc =
            serde_json::from_value(json!({"id": 9, "disabled": false, "disabledEndpointCount": 3}))
                .unwrap();
        assert!(some.disabled_by_tr(), "disabled on some endpoints");
        let silent: IntelDoc = serde_json::from_value(json!({"id": 9})).unwrap();
        assert_eq!((silent.disabled, silent.disabled_by_tr()), (None, false));
    }

    #[test]
    fn a_deploy_task_is_running_completed_or_ended_otherwise() {
        let recorded = json!({"id": 1, "type": "fileDownload", "status": "COMPLETED",
            "metadata": {}, "results": {}, "error": null,
            "startTime": "2021-09-05T13:46:16.606Z", "endTime": "2021-09-05T13:46:16.900Z"});
        assert_eq!(
            TaskState::from_task(&recorded),
            Some(TaskState::Completed {
                ended: Some("2021-09-05T13:46:16.900Z".into())
            })
        );
        let started = json!({"status": "STARTED", "startTime": "t0", "endTime": null});
        assert_eq!(
            TaskState::from_task(&started),
            Some(TaskState::Running {
                started: Some("t0".into())
            })
        );
        assert_eq!(
            TaskState::from_task(&json!({"status": "running"})),
            Some(TaskState::Running { started: None })
        );
        let failed = json!({"status": "COMPLETED", "error": "compile failed", "endTime": "t1"});
        assert_eq!(
            TaskState::from_task(&failed),
            Some(TaskState::Ended {
                status: "COMPLETED".into(),
                error: Some("compile failed".into()),
                ended: Some("t1".into())
            })
        );
        assert!(matches!(
            TaskState::from_task(&json!({"status": "FAILED", "error": {"code": 3}})),
            Some(TaskState::Ended { error: Some(e), .. }) if e.contains("3")
        ));
        assert_eq!(TaskState::from_task(&json!({"id": 4})), None);
        assert_eq!(TaskState::from_task(&json!([1])), None);
    }

    #[test]
    fn label_ids_are_read_in_any_plausible_shape_and_absent_is_not_empty() {
        let ids = |v: Value| {
            serde_json::from_value::<IntelDoc>(json!({"id": 1, "labelIds": v}))
                .unwrap()
                .label_ids
        };
        assert_eq!(
            ids(json!([3, "4", {"id": 5}, {"name": "x"}, null])),
            Some(vec![3, 4, 5])
        );
        assert_eq!(ids(json!([])), Some(vec![]));
        assert_eq!(ids(json!(null)), None);
        assert_eq!(ids(json!("3")), None);
        let d: IntelDoc = serde_json::from_value(json!({"id": 1})).unwrap();
        assert_eq!(d.label_ids, None);
    }
}
