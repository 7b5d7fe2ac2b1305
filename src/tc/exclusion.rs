//! Indicator Exclusion Lists as ThreatConnect documents them (`docs/rest_api/v3/exclusion_lists`,
//! documented, not recorded): the lists an Api User can see, and one list's values. Read
//! leniently: fields may be missing, ids may be strings, a list's name may or may not carry the
//! `Indicator-` prefix (the matcher in `crate::exclusions` reads it).

use serde::Deserialize;

use super::answer::SVC;
use crate::error::{Error, Result};
use crate::http::path_of;
use crate::tc::client::TcClient;
use crate::tc::model::{default_true, lenient_i64};
use crate::tc::tql::encode_query_value;

/// What reading the lists takes, in the docs' words: the role the admin grants.
pub const READ_ROLE: &str = "an Organization role of Standard User or above (Sharing User, \
                             Organization Administrator, App Developer), or Editor or Director \
                             in a Community or Source";

/// One list, as the collection lists it or, with `fields=values`, with its values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExclusionList {
    #[serde(deserialize_with = "lenient_i64")]
    pub id: Option<i64>,
    /// Its type, e.g. `Indicator-Address-IPv4` (`Address-IPv6` in one documented answer).
    pub name: String,
    /// The owner of an owner-level list; absent on System-level lists.
    pub owner: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub owner_id: Option<i64>,
    /// Inactive lists do not apply; absent reads as active.
    #[serde(deserialize_with = "default_true")]
    pub active: bool,
    /// A default list managed at the System level.
    pub managed: Option<bool>,
    pub fixed_values: Option<Values>,
    pub variable_values: Option<Values>,
}

impl Default for ExclusionList {
    fn default() -> Self {
        ExclusionList {
            id: None,
            name: String::new(),
            owner: None,
            owner_id: None,
            active: true,
            managed: None,
            fixed_values: None,
            variable_values: None,
        }
    }
}

/// `{"data": [{"value": ...}], "count": n}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct Values {
    pub data: Vec<Value>,
    #[serde(deserialize_with = "lenient_u64")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct Value {
    pub value: String,
}

impl Values {
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.data.iter().map(|v| v.value.as_str())
    }

    /// Whether the answer holds fewer values than its `count` says the list has.
    pub fn short(&self) -> bool {
        self.count.is_some_and(|c| c > self.data.len() as u64)
    }
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    Ok(lenient_i64(d)?.and_then(|n| u64::try_from(n).ok()))
}

#[derive(Deserialize)]
struct One {
    #[serde(default)]
    status: Option<String>,
    data: ExclusionList,
}

/// A refusal of the lists is a missing role, whatever status carried it: the job's credentials
/// were accepted before (TC documents 401 for a missing permission, 403 for an owner the user
/// cannot read).
fn refused(e: Error, request: &str) -> Error {
    let answered = match &e {
        Error::Forbidden {
            service: SVC,
            answers,
            ..
        } => answers.clone(),
        Error::Auth { service: SVC, .. } => format!("401 to {request}"),
        _ => return e,
    };
    Error::Forbidden {
        service: SVC,
        needed: format!("reading Indicator Exclusion Lists needs {READ_ROLE}"),
        answers: answered,
    }
}

impl TcClient {
    /// Every exclusion list the Api User can see of `owner` (with the System-level ones), or of
    /// every owner the server answers for when `owner` is None; paged with `resultStart`.
    pub fn exclusion_lists(&self, owner: Option<&str>) -> Result<Vec<ExclusionList>> {
        let mut url = format!("{}/v3/security/exclusionLists?", self.api_path());
        if let Some(o) = owner {
            url.push_str(&format!("owner={}", encode_query_value(o)));
        }
        let request = "GET /api/v3/security/exclusionLists";
        let mut out = Vec::new();
        let mut unreadable = None;
        self.each_record(
            &url,
            100,
            &mut |r| match serde_json::from_str::<ExclusionList>(r.get()) {
                Ok(l) if l.id.is_some() && !l.name.trim().is_empty() => out.push(l),
                Ok(_) => {
                    unreadable.get_or_insert_with(|| "a list without an id or a name".to_string());
                }
                Err(e) => {
                    unreadable.get_or_insert_with(|| e.to_string());
                }
            },
        )
        .map_err(|e| refused(e, request))?;
        match unreadable {
            None => Ok(out),
            Some(why) => Err(Error::Protocol {
                service: SVC,
                request: request.into(),
                detail: format!("an unreadable exclusion list ({why})"),
            }),
        }
    }

    /// List `id` with its fixed and variable values (`fields=values`).
    pub fn exclusion_values(&self, id: i64) -> Result<ExclusionList> {
        let url = format!(
            "{}/v3/security/exclusionLists/{id}?fields=values",
            self.api_path()
        );
        let request = format!("GET {}", path_of(&url));
        let resp = self.get(&url).map_err(|e| refused(e, &request))?;
        let protocol = |detail: String| Error::Protocol {
            service: SVC,
            request: request.clone(),
            detail,
        };
        if let Some(e) = resp.not_the_api(SVC, &request) {
            return Err(e);
        }
        let one: One = serde_json::from_slice(&resp.body)
            .map_err(|e| protocol(format!("body is not an exclusion list: {e}")))?;
        if one.status.as_deref() != Some("Success") {
            return Err(protocol(format!(
                "status is {:?}, not \"Success\"",
                one.status.as_deref().unwrap_or("missing")
            )));
        }
        Ok(one.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shapes_parse() {
        let list: ExclusionList = serde_json::from_str(
            r#"{"id":30,"owner":"Demo Organization","ownerId":1,"name":"Address-IPv6",
               "description":"1 fixed, 1 variable",
               "fixedValues":{"data":[{"value":"2001:500:12::d0d"}],"count":1},
               "variableValues":{"data":[{"value":"100::/64"}],"count":1},
               "active":true,"managed":false}"#,
        )
        .unwrap();
        assert_eq!(list.id, Some(30));
        assert_eq!(list.owner.as_deref(), Some("Demo Organization"));
        let fixed: Vec<&str> = list.fixed_values.as_ref().unwrap().values().collect();
        assert_eq!(fixed, vec!["2001:500:12::d0d"]);
        assert!(!list.variable_values.as_ref().unwrap().short());
        let head: ExclusionList = serde_json::from_str(
            r#"{"id":"2","name":"Indicator-Address-IPv4","description":"106 fixed, 42 variable","managed":true}"#,
        )
        .unwrap();
        assert_eq!(
            (head.id, head.active, head.managed),
            (Some(2), true, Some(true))
        );
        assert!(head.fixed_values.is_none() && head.owner.is_none());
        let short: Values =
            serde_json::from_str(r#"{"data":[{"value":"a"}],"count":"106"}"#).unwrap();
        assert!(short.short());
    }
}
