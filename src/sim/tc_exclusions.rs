//! Indicator Exclusion Lists in the TC simulator, in the documented shape
//! (threatconnect-developer-docs `docs/rest_api/v3/exclusion_lists/retrieve.rst`, documented,
//! not recorded): `GET /v3/security/exclusionLists` (paged with `resultStart`/`resultLimit`,
//! default 100; `owner=` keeps that owner's lists and every System-level one) and
//! `GET /v3/security/exclusionLists/{id}` (`fields=values` adds `fixedValues` and
//! `variableValues`, on the collection too). Lists are System-level (`managed`, or custom
//! without an owner) or an owner's. An Api User without the role gets the status
//! [`TcSim::deny_exclusion_lists`] sets.

use serde_json::{json, Value};

use super::server::{SimRequest, SimResponse};
use super::tc::{envelope, error, next_link, paging, State, TcSim};

/// One exclusion list as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimExclusionList {
    /// As TC names it, e.g. `Indicator-Address-IPv4` (owner lists may lack the prefix).
    pub name: String,
    /// The owner of an owner-level list; None: a System-level list.
    pub owner: Option<String>,
    /// A default list managed at the System level.
    pub managed: bool,
    /// Inactive lists do not apply.
    pub active: bool,
    /// Values excluded as they are.
    pub fixed: Vec<String>,
    /// Patterns: CIDR ranges for addresses, `*` wildcards for names.
    pub variable: Vec<String>,
}

impl SimExclusionList {
    /// An active custom list of `owner` (None: System level) with these values.
    pub fn new(name: &str, owner: Option<&str>, fixed: &[&str], variable: &[&str]) -> Self {
        SimExclusionList {
            name: name.into(),
            owner: owner.map(str::to_string),
            managed: false,
            active: true,
            fixed: fixed.iter().map(|s| s.to_string()).collect(),
            variable: variable.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// An active default list managed at the System level.
    pub fn managed(name: &str, fixed: &[&str], variable: &[&str]) -> Self {
        SimExclusionList {
            managed: true,
            ..SimExclusionList::new(name, None, fixed, variable)
        }
    }

    /// "106 fixed, 42 variable", as TC describes a list.
    fn description(&self) -> String {
        let mut parts = Vec::new();
        if !self.fixed.is_empty() {
            parts.push(format!("{} fixed", self.fixed.len()));
        }
        if !self.variable.is_empty() {
            parts.push(format!("{} variable", self.variable.len()));
        }
        parts.join(", ")
    }
}

/// Lists shaped like the defaults a ThreatConnect instance ships (System-managed: AS numbers,
/// 1058 fixed; IPv4, 106 fixed and 42 variable, as the docs describe them; IPv6, hosts, the
/// three hashes, URLs and e-mail addresses with sizes of our own) and one Organization host
/// list. The values are generated: few of them match a generated dataset.
pub fn tc_like_defaults(organization: &str) -> Vec<SimExclusionList> {
    let mut rng = crate::sim::dataset::Rng::new(0x00E0_C1D5);
    let mut hex = |n: usize| -> String {
        let mut s = String::new();
        while s.len() < n {
            s.push_str(&format!("{:016x}", rng.next_u64()));
        }
        s.truncate(n);
        s
    };
    fn own(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let asn: Vec<String> = (0..1058).map(|i| format!("AS{}", 1000 + i * 7)).collect();
    let v4_fixed: Vec<String> = (0..106)
        .map(|i| format!("{}.0.{}.{}", 11 + i % 200, i * 2 % 256, 1 + i % 254))
        .collect();
    let v4_var: Vec<String> = (0..42)
        .map(|i| format!("{}.0.{}.0/24", 23 + i * 4, i * 5))
        .collect();
    let v6_fixed: Vec<String> = (0..12).map(|i| format!("2001:500:{i:x}::d0d")).collect();
    let v6_var: Vec<String> = (0..6).map(|i| format!("2001:7f{i:x}::/32")).collect();
    let hosts: Vec<String> = (0..120)
        .map(|i| format!("svc{i}.trusted-cdn.example"))
        .collect();
    let host_var: Vec<String> = (0..24)
        .map(|i| format!("*.cdn{i}.trusted.example"))
        .collect();
    let md5: Vec<String> = (0..10).map(|_| hex(32)).collect();
    let sha1: Vec<String> = (0..10).map(|_| hex(40)).collect();
    let sha256: Vec<String> = (0..10).map(|_| hex(64)).collect();
    let urls: Vec<String> = (0..40)
        .map(|i| format!("https://update{i}.vendor.example/"))
        .collect();
    let mails: Vec<String> = (0..20)
        .map(|i| format!("noreply{i}@vendor.example"))
        .collect();
    let gateways: Vec<String> = (0..5).map(|i| format!("mx{i}.corp.example")).collect();
    vec![
        SimExclusionList::managed("Indicator-ASN-AS Number", &own(&asn), &[]),
        SimExclusionList::managed("Indicator-Address-IPv4", &own(&v4_fixed), &own(&v4_var)),
        SimExclusionList::managed("Indicator-Address-IPv6", &own(&v6_fixed), &own(&v6_var)),
        SimExclusionList::managed("Indicator-Host", &own(&hosts), &own(&host_var)),
        SimExclusionList::managed("Indicator-File-MD5", &own(&md5), &[]),
        SimExclusionList::managed("Indicator-File-SHA1", &own(&sha1), &[]),
        SimExclusionList::managed("Indicator-File-SHA256", &own(&sha256), &[]),
        SimExclusionList::managed("Indicator-URL", &own(&urls), &[]),
        SimExclusionList::managed(
            "Indicator-EmailAddress",
            &own(&mails),
            &["*@vendor.example"],
        ),
        SimExclusionList::new("Indicator-Host", Some(organization), &own(&gateways), &[]),
    ]
}

/// The lists of a simulated instance and who may read them.
#[derive(Debug, Default)]
pub(super) struct Book {
    lists: Vec<(i64, SimExclusionList)>,
    next_id: i64,
    /// The status an Api User without the role gets (None: the lists can be read).
    denied: Option<u16>,
}

impl TcSim {
    /// Adds a list; its id.
    pub fn add_exclusion_list(&self, list: SimExclusionList) -> i64 {
        let mut b = self.exclusions();
        b.next_id += 1;
        let id = b.next_id;
        b.lists.push((id, list));
        id
    }

    /// Changes list `id` (false when there is none).
    pub fn edit_exclusion_list(&self, id: i64, f: impl FnOnce(&mut SimExclusionList)) -> bool {
        let mut b = self.exclusions();
        match b.lists.iter_mut().find(|(i, _)| *i == id) {
            Some((_, l)) => {
                f(l);
                true
            }
            None => false,
        }
    }

    /// Deletes list `id`.
    pub fn remove_exclusion_list(&self, id: i64) {
        self.exclusions().lists.retain(|(i, _)| *i != id);
    }

    /// Makes the exclusion list routes answer `status` (401 or 403, with TC's error body), as
    /// for an Api User without an Organization role of Standard User or above; None: readable.
    pub fn deny_exclusion_lists(&self, status: Option<u16>) {
        self.exclusions().denied = status;
    }

    fn exclusions(&self) -> std::sync::MutexGuard<'_, Book> {
        self.state()
            .exclusions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn values(v: &[String]) -> Value {
    json!({
        "data": v.iter().map(|x| json!({"value": x})).collect::<Vec<_>>(),
        "count": v.len(),
    })
}

fn render(st: &State, id: i64, l: &SimExclusionList, with_values: bool) -> Value {
    let mut o = json!({
        "id": id,
        "name": l.name,
        "description": l.description(),
        "active": l.active,
        "managed": l.managed,
    });
    if let Some(owner) = &l.owner {
        o["owner"] = json!(owner);
        o["ownerId"] = json!(st.owner_id(owner));
    }
    if with_values {
        o["fixedValues"] = values(&l.fixed);
        o["variableValues"] = values(&l.variable);
    }
    o
}

fn denied(status: u16) -> SimResponse {
    let (code, message) = if status == 401 {
        (
            "0x1002",
            "The API user does not have permission to perform the operation on this resource",
        )
    } else {
        (
            "0x1003",
            "Forbidden: insufficient role to view Indicator Exclusion Lists",
        )
    };
    error(status, code, message)
}

/// Serves both exclusion list routes (`path` decoded, without a trailing slash); None when
/// `path` is neither.
pub(super) fn handle(st: &State, req: &SimRequest, path: &str) -> Option<SimResponse> {
    let rest = path.strip_prefix("/api/v3/security/exclusionLists")?;
    let book = st.exclusions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(status) = book.denied {
        return Some(denied(status));
    }
    let with_values = req
        .params("fields")
        .iter()
        .any(|f| f.eq_ignore_ascii_case("values"));
    if rest.is_empty() {
        return Some(list(st, req, &book, with_values));
    }
    let one = rest
        .strip_prefix('/')
        .and_then(|id| id.parse::<i64>().ok())
        .and_then(|id| book.lists.iter().find(|(i, _)| *i == id));
    Some(match one {
        Some((id, l)) => envelope(render(st, *id, l, with_values), None, None),
        None if rest.strip_prefix('/').is_some_and(|r| !r.contains('/')) => {
            error(404, "0x1004", "The requested resource was not found")
        }
        None => return None,
    })
}

fn list(st: &State, req: &SimRequest, book: &Book, with_values: bool) -> SimResponse {
    let (start, limit) = match paging(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let owner = req.param("owner");
    if let Some(o) = owner {
        if !st.owner_known(o) {
            return error(
                403,
                "0x1003",
                &format!("Owner '{o}' does not exist or you do not have access to it"),
            );
        }
    }
    let all: Vec<Value> = book
        .lists
        .iter()
        .filter(|(_, l)| match (owner, &l.owner) {
            (Some(o), Some(lo)) => o == lo,
            _ => true,
        })
        .map(|(id, l)| render(st, *id, l, with_values))
        .collect();
    let end = start.saturating_add(limit).min(all.len());
    let next = (end < all.len()).then(|| next_link(st, req, end));
    envelope(&all[start.min(end)..end], None, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tc::TcSimOptions;

    fn get(sim: &TcSim, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let req = SimRequest {
            method: "GET".into(),
            target: String::new(),
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let resp = handle(sim.state(), &req, path).expect("an exclusion list route");
        (resp.status, serde_json::from_slice(&resp.body).unwrap())
    }

    #[test]
    fn lists_answer_in_the_documented_shape_paged_and_by_owner() {
        let sim = TcSim::start(TcSimOptions::default()).unwrap();
        sim.insert(crate::tc::model::Indicator {
            id: 1,
            owner_id: Some(9),
            owner_name: "Common Community".into(),
            type_name: "Host".into(),
            summary: "a.example".into(),
            host_name: Some("a.example".into()),
            ..Default::default()
        });
        let v4 = sim.add_exclusion_list(SimExclusionList::managed(
            "Indicator-Address-IPv4",
            &["192.0.2.1", "192.0.2.2"],
            &["198.51.100.0/24"],
        ));
        let host = sim.add_exclusion_list(SimExclusionList::new(
            "Host",
            Some("Common Community"),
            &["mail.example"],
            &[],
        ));
        sim.add_exclusion_list(SimExclusionList::new(
            "Indicator-File-SHA256",
            None,
            &["AB".repeat(32).as_str()],
            &[],
        ));
        let (status, all) = get(&sim, "/api/v3/security/exclusionLists", &[]);
        assert_eq!(status, 200);
        assert_eq!(all["status"], "Success");
        assert_eq!(
            all["data"][0],
            json!({"id": v4, "name": "Indicator-Address-IPv4", "description": "2 fixed, 1 variable",
                   "active": true, "managed": true})
        );
        assert_eq!(all["data"][1]["owner"], "Common Community");
        assert_eq!(all["data"][1]["ownerId"], 9);
        assert!(all["data"][1].get("fixedValues").is_none());
        let (_, page) = get(
            &sim,
            "/api/v3/security/exclusionLists",
            &[("resultStart", "1"), ("resultLimit", "1")],
        );
        assert_eq!(page["data"].as_array().unwrap().len(), 1);
        assert_eq!(page["data"][0]["id"], host);
        assert!(page["next"].as_str().unwrap().contains("resultStart=2"));
        let (_, org) = get(
            &sim,
            "/api/v3/security/exclusionLists",
            &[("owner", "Demo Organization")],
        );
        assert_eq!(
            org["data"].as_array().unwrap().len(),
            2,
            "System lists stay, the Community's goes"
        );
        let (status, _) = get(
            &sim,
            "/api/v3/security/exclusionLists",
            &[("owner", "Nobody")],
        );
        assert_eq!(status, 403);
        let (_, one) = get(
            &sim,
            &format!("/api/v3/security/exclusionLists/{v4}"),
            &[("fields", "values")],
        );
        assert_eq!(
            one["data"]["fixedValues"],
            json!({"data": [{"value": "192.0.2.1"}, {"value": "192.0.2.2"}], "count": 2})
        );
        assert_eq!(
            one["data"]["variableValues"]["data"][0]["value"],
            "198.51.100.0/24"
        );
        let (status, _) = get(&sim, "/api/v3/security/exclusionLists/999", &[]);
        assert_eq!(status, 404);
        sim.deny_exclusion_lists(Some(403));
        let (status, body) = get(&sim, "/api/v3/security/exclusionLists", &[]);
        assert_eq!((status, body["errCode"].as_str()), (403, Some("0x1003")));
        sim.deny_exclusion_lists(Some(401));
        let (status, _) = get(&sim, &format!("/api/v3/security/exclusionLists/{v4}"), &[]);
        assert_eq!(status, 401);
    }
}
