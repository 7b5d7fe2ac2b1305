//! Reading Tanium's answers: envelopes and listing shapes of both generations, status errors,
//! and the permission each call needs when a 403 says it is missing.

use serde_json::Value;

use crate::error::{Error, Result, Service};
use crate::http::{self, Response};
use crate::tanium::model::ApiGeneration;

/// What a call needs the server's permission to do, and the permission's name. Only
/// "threat response intels write" is a name on record (Splunk SOAR's Tanium TR README); the
/// others follow its pattern.
pub(super) fn permission_for(method: &str, path: &str) -> Option<(&'static str, &'static str)> {
    let p = http::path_of(path);
    let rest = [ApiGeneration::V4, ApiGeneration::V3]
        .into_iter()
        .find_map(|g| p.strip_prefix(g.base_path()))?;
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let read = method == "GET";
    Some(match (segs.as_slice(), read) {
        (["sources", _, "intels", ..], false) | (["intels", ..], false) => {
            ("write intel documents", "threat response intels write")
        }
        (["sources", _, "intels", ..], true) | (["intels", ..], true) => {
            ("read intel documents", "threat response intels read")
        }
        (["sources", ..], true) => ("read intel sources", "threat response sources read"),
        (["sources", _], false) if method == "DELETE" => {
            ("delete intel sources", "threat response sources write")
        }
        (["sources", ..], false) => ("create intel sources", "threat response sources write"),
        (["labels", ..], true) => ("read labels", "threat response labels read"),
        (["labels", ..], false) => ("write labels", "threat response labels write"),
        (["intel", "deploy"], _) => ("deploy intel", "threat response intel deploy"),
        (["intel", "status"], _) => ("read intel status", "threat response intels read"),
        (["alerts", ..], true) => ("read alerts", "threat response alerts read"),
        _ => return None,
    })
}

/// Says which permission a 403 to this call means is missing.
pub(super) fn needed_for(method: &str, path: &str) -> String {
    match permission_for(method, path) {
        Some((action, name)) => format!("the account or API token needs '{name}' to {action}"),
        None => "the account or API token lacks a Threat Response permission this call needs"
            .to_string(),
    }
}

/// A 403 that is not about the credentials themselves: a missing permission.
pub(super) fn forbidden(method: &str, path: &str) -> Error {
    Error::Forbidden {
        service: Service::Tanium,
        needed: needed_for(method, path),
        answers: format!("{} answered 403", describe(method, path)),
    }
}

/// `METHOD /path` without the query.
pub(super) fn describe(method: &str, path: &str) -> String {
    format!("{method} {}", http::path_of(path))
}

pub(super) fn status_error(resp: &Response, method: &str, path: &str) -> Error {
    let request = describe(method, path);
    if let Some(e) = resp.not_the_api(Service::Tanium, &request) {
        return e;
    }
    let mut message = resp.body_excerpt(300);
    if message.is_empty() {
        message = "(no details)".into();
    }
    Error::Status {
        service: Service::Tanium,
        host: resp.host.clone(),
        request,
        status: resp.status,
        message,
    }
}

/// Parses a JSON body; an empty body is `null`. A non-JSON body is a protocol error that
/// names the content type (Tanium answers text or XML on some routes).
pub(super) fn json_body(resp: &Response, request: &str) -> Result<Value> {
    if resp.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    if let Some(e) = resp.not_the_api(Service::Tanium, request) {
        return Err(e);
    }
    serde_json::from_slice(&resp.body).map_err(|e| Error::Protocol {
        service: Service::Tanium,
        request: request.to_string(),
        detail: format!(
            "expected JSON, got {} ({e})",
            resp.header("content-type").unwrap_or("no content type")
        ),
    })
}

/// Removes the 4.x `{"data": ...}` envelope when present (3.x answers bare JSON).
pub fn unwrap_data(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.contains_key("data") => m.remove("data").unwrap_or(Value::Null),
        other => other,
    }
}

/// The rows of a listing in any of the shapes seen or guessed: a bare array, `{"data": [...]}`,
/// `{"data": {"intels"|"sources"|"items"|...: [...]}}`, or an object with one array field.
pub fn rows_of(v: Value) -> Option<Vec<Value>> {
    match unwrap_data(v) {
        Value::Array(a) => Some(a),
        Value::Null => Some(Vec::new()),
        Value::Object(mut m) => {
            for key in ["intels", "sources", "items", "results", "docs", "rows"] {
                if let Some(Value::Array(a)) = m.remove(key) {
                    return Some(a);
                }
            }
            let mut arrays = m.into_iter().filter_map(|(_, v)| match v {
                Value::Array(a) => Some(a),
                _ => None,
            });
            match (arrays.next(), arrays.next()) {
                (Some(a), None) => Some(a),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `meta.totalCount` of a listing answer (recorded on 4.x lists: `{"data": [...], "meta":
/// {"totalCount": N}}`), also when the envelope holds the meta; None when it does not say.
pub fn total_count(v: &Value) -> Option<u64> {
    let meta = v
        .get("meta")
        .or_else(|| v.get("data").and_then(|d| d.get("meta")))?;
    meta.get("totalCount")
        .and_then(crate::tanium::model::int_of)
        .and_then(|n| u64::try_from(n).ok())
}

/// A Threat Response permission a run may need, for `check`'s account of them; the names are
/// those [`permission_for`] gives the calls that need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    UseApi,
    SourcesRead,
    SourcesWrite,
    IntelsRead,
    IntelsWrite,
    LabelsRead,
    LabelsWrite,
    IntelDeploy,
    AlertsRead,
}

impl Permission {
    /// The permission's name as the job's messages (and the README) give it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::UseApi => "threat response use api",
            Permission::SourcesRead => "threat response sources read",
            Permission::SourcesWrite => "threat response sources write",
            Permission::IntelsRead => "threat response intels read",
            Permission::IntelsWrite => "threat response intels write",
            Permission::LabelsRead => "threat response labels read",
            Permission::LabelsWrite => "threat response labels write",
            Permission::IntelDeploy => "threat response intel deploy",
            Permission::AlertsRead => "threat response alerts read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    pub(super) fn listing_shapes_are_all_understood() {
        let one = json!([{"id": 1}]);
        assert_eq!(rows_of(one.clone()).unwrap().len(), 1);
        assert_eq!(rows_of(json!({"data": one.clone()})).unwrap().len(), 1);
        assert_eq!(
            rows_of(json!({"data": {"intels": one.clone(), "total": 1}}))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            rows_of(json!({"data": {"whatever": one.clone()}}))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(rows_of(json!({"data": null})).unwrap().len(), 0);
        assert!(rows_of(json!({"data": {"a": [], "b": []}})).is_none());
        assert!(rows_of(json!("text")).is_none());
    }

    #[test]
    fn total_count_is_read_where_4x_lists_carry_it() {
        let page = json!({"data": [{"id": 1}], "meta": {"totalCount": 120, "filteredCount": 1}});
        assert_eq!(total_count(&page), Some(120));
        assert_eq!(rows_of(page).unwrap().len(), 1);
        assert_eq!(
            total_count(&json!({"data": {"items": [], "meta": {"totalCount": "7"}}})),
            Some(7)
        );
        assert_eq!(total_count(&json!({"data": []})), None);
        assert_eq!(total_count(&json!([{"id": 1}])), None);
        assert_eq!(total_count(&json!({"meta": {"totalCount": -1}})), None);
    }

    #[test]
    pub(super) fn envelope_is_removed_only_when_present() {
        assert_eq!(unwrap_data(json!({"data": {"id": 3}})), json!({"id": 3}));
        assert_eq!(unwrap_data(json!({"id": 3})), json!({"id": 3}));
    }

    #[test]
    fn permission_names_are_those_the_403_messages_give() {
        let base = ApiGeneration::V4.base_path();
        let named = |m: &str, p: &str| permission_for(m, &format!("{base}{p}")).map(|p| p.1);
        for (p, method, path) in [
            (Permission::SourcesRead, "GET", "/sources"),
            (Permission::SourcesWrite, "POST", "/sources"),
            (Permission::IntelsRead, "GET", "/intels"),
            (Permission::IntelsWrite, "POST", "/sources/1/intels"),
            (Permission::LabelsRead, "GET", "/labels"),
            (Permission::LabelsWrite, "POST", "/labels"),
            (Permission::IntelDeploy, "POST", "/intel/deploy"),
            (
                Permission::AlertsRead,
                "GET",
                "/alerts?sort=-createdAt&limit=500",
            ),
        ] {
            assert_eq!(named(method, path), Some(p.name()), "{p:?}");
        }
        assert_eq!(Permission::UseApi.name(), "threat response use api");
    }

    #[test]
    pub(super) fn a_403_names_the_permission_of_the_call() {
        let base = ApiGeneration::V4.base_path();
        let hint = |m: &str, p: &str| needed_for(m, &format!("{base}{p}"));
        assert_eq!(
            hint("POST", "/sources/3/intels"),
            "the account or API token needs 'threat response intels write' to write intel documents"
        );
        assert!(hint("PUT", "/intels/9").ends_with("to write intel documents"));
        assert!(hint("DELETE", "/intels/?id=9").ends_with("to write intel documents"));
        assert!(hint("GET", "/intels?limit=500").ends_with("to read intel documents"));
        assert!(hint("GET", "/sources").ends_with("to read intel sources"));
        assert!(hint("POST", "/sources").ends_with("to create intel sources"));
        assert!(hint("GET", "/labels").ends_with("to read labels"));
        assert!(hint("POST", "/intel/deploy").ends_with("to deploy intel"));
        assert!(hint("GET", "/intel/status").ends_with("to read intel status"));
        let v3 = ApiGeneration::V3.base_path();
        assert!(needed_for("GET", &format!("{v3}/labels")).ends_with("to read labels"));
        assert!(needed_for("GET", "/api/v2/other").contains("lacks a Threat Response"));
    }
}
