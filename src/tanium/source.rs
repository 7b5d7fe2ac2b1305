//! The app's intel source (found by exact name, created when missing), the intel deploy, and
//! what `check` reads.

use serde_json::{json, Value};

use crate::error::{Error, Result, Service};
use crate::http::{self, Tries};
use crate::tanium::model::{int_of, ApiGeneration, DeployAnswer, Source, TaskState};

use super::answers::{describe, json_body, rows_of, status_error, unwrap_data};
use super::client::{Payload, TaniumClient};
use super::session::{Credentials, CURRENT_PATH};

const SOURCE_DESCRIPTION: &str = "Address, File and Host indicators sent from ThreatConnect by \
the tanium-tr-indicators job app. Managed automatically: documents here are created, replaced \
and deleted by the app.";

impl TaniumClient {
    /// Every intel source the server lists (rows without a positive id left out).
    pub fn list_sources(&self) -> Result<Vec<Source>> {
        let path = format!("{}/sources", self.generation.base_path());
        let resp = self
            .expect_ok("GET", &path, None)
            .map_err(|e| self.fixed_generation_hint(e))?;
        let v = json_body(&resp, &describe("GET", &path))?;
        let rows = rows_of(v).ok_or_else(|| Error::Protocol {
            service: Service::Tanium,
            request: describe("GET", &path),
            detail: "the source listing is not a JSON list".into(),
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_value::<Source>(r).ok())
            .filter(|s| s.id > 0)
            .collect())
    }

    /// Finds the intel source with exactly this name; never writes (dry-run, check).
    pub fn find_source(&self, name: &str) -> Result<Option<Source>> {
        let mut found: Vec<Source> = self
            .list_sources()?
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        found.sort_by_key(|s| s.id);
        if found.len() > 1 {
            log::warn!(
                "Tanium has {} intel sources named {name:?} (ids {:?}); using the oldest, id {}",
                found.len(),
                found.iter().map(|s| s.id).collect::<Vec<_>>(),
                found[0].id
            );
        }
        Ok(found.into_iter().next())
    }

    /// Finds the source by exact name or creates it as type `api-client`.
    pub fn find_or_create_source(&self, name: &str) -> Result<Source> {
        if let Some(s) = self.find_source(name)? {
            return Ok(s);
        }
        let source = match self.create_source(name, SOURCE_DESCRIPTION)? {
            Some(s) => s,
            // Someone created it between our listing and our POST.
            None => {
                return self.find_source(name)?.ok_or_else(|| Error::Protocol {
                    service: Service::Tanium,
                    request: describe("POST", &format!("{}/sources", self.generation.base_path())),
                    detail: format!("source {name:?} was refused as existing but cannot be found"),
                })
            }
        };
        log::info!("created Tanium intel source {name:?} (id {})", source.id);
        Ok(source)
    }

    /// Creates a source of type `api-client`; None when the server answers that the name is
    /// taken (409).
    pub(super) fn create_source(&self, name: &str, description: &str) -> Result<Option<Source>> {
        let path = format!("{}/sources", self.generation.base_path());
        let body =
            Payload::json(&json!({"type": "api-client", "name": name, "description": description}));
        // A create whose answer was lost may have made the source, and a Tanium that lets
        // names repeat would take the same POST again as a second one: look before each retry.
        let mut tries = Tries::default().pausing_after(1);
        let resp = loop {
            let outcome = self.send_with(&mut tries, "POST", &path, Some(&body));
            if !tries.pending() {
                break outcome?;
            }
            if let Some(s) = self.find_source(name)? {
                log::info!(
                    "Tanium made source {name:?} (id {}) though its answer to the create was lost",
                    s.id
                );
                return Ok(Some(s));
            }
            tries.allow_one_more();
        };
        if resp.status == 409 {
            return Ok(None);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "POST", &path));
        }
        let created = json_body(&resp, &describe("POST", &path))
            .ok()
            .map(unwrap_data)
            .and_then(|v| serde_json::from_value::<Source>(v).ok())
            .filter(|s| s.id > 0);
        match created {
            Some(s) => Ok(Some(s)),
            // Unreadable answer to a write that succeeded: look it up instead.
            None => self
                .find_source(name)?
                .ok_or_else(|| Error::Protocol {
                    service: Service::Tanium,
                    request: describe("POST", &path),
                    detail: format!("source {name:?} was accepted but cannot be found afterwards"),
                })
                .map(Some),
        }
    }

    /// Deploys intel to endpoints once: 4.x `POST {base}/intel/deploy` (no body, no content
    /// type, as the recorded client sends it); 3.x deploys on its own (no request). A 4.x
    /// server without the route is not a step either. A 400 is what Threat Response answers
    /// while another deploy runs (the cause of the recorded 400 is unconfirmed): refused, not
    /// failed.
    pub fn deploy(&self) -> Result<DeployAnswer> {
        if self.generation == ApiGeneration::V3 {
            return Ok(DeployAnswer::NotAStep);
        }
        let path = format!("{}/intel/deploy", self.generation.base_path());
        let resp = self.send("POST", &path, None)?;
        if resp.status == 404 {
            log::warn!("Tanium has no intel deploy route; intel reaches endpoints on the server's own schedule");
            return Ok(DeployAnswer::NotAStep);
        }
        if resp.status == 400 {
            let said = resp.body_excerpt(200);
            log::info!(
                "Tanium answered 400 to the intel deploy ({}): taken as a deploy already running",
                if said.is_empty() { "no details" } else { &said }
            );
            return Ok(DeployAnswer::Refused(said));
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "POST", &path));
        }
        // A 200 that is not JSON (a proxy's page) started no deploy.
        let answer = unwrap_data(json_body(&resp, &describe("POST", &path))?);
        let task = answer.get("taskId").and_then(int_of);
        match task {
            Some(t) => log::info!("Tanium intel deploy started (task {t})"),
            None => log::info!("Tanium intel deploy started"),
        }
        Ok(DeployAnswer::Started(task))
    }

    /// What became of an intel deploy: `GET {base}/tasks/{id}`; None when the server does not
    /// know the task (404) or names no status.
    pub fn deploy_task(&self, task: i64) -> Result<Option<TaskState>> {
        let path = format!("{}/tasks/{task}", self.generation.base_path());
        let resp = self.send("GET", &path, None)?;
        if resp.status == 404 {
            return Ok(None);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "GET", &path));
        }
        let v = unwrap_data(json_body(&resp, &describe("GET", &path))?);
        Ok(TaskState::from_task(&v))
    }

    /// Whether TR reports an intel deploy in progress (`GET {base}/intel/status`); None when
    /// the status cannot be read or says neither (then deploying is the old behaviour).
    /// 3.x has no deploy step: never running.
    pub fn deploy_running(&self) -> Option<bool> {
        if self.generation == ApiGeneration::V3 {
            return Some(false);
        }
        let path = format!("{}/intel/status", self.generation.base_path());
        let status = self
            .expect_ok("GET", &path, None)
            .and_then(|resp| json_body(&resp, &describe("GET", &path)));
        match status {
            Ok(v) => deploying(&unwrap_data(v)),
            Err(e) => {
                log::info!("could not read the intel status before deploying: {e}");
                None
            }
        }
    }

    /// Checks connectivity, credentials and the source; a one-line summary for `check` mode.
    pub fn check(&self) -> Result<String> {
        let resp = self.send("GET", CURRENT_PATH, None)?;
        if !(200..300).contains(&resp.status) && resp.status != 404 {
            return Err(status_error(&resp, "GET", CURRENT_PATH));
        }
        let auth = match self.credentials {
            Credentials::Token => "an API token".to_string(),
            Credentials::Login { ref username, .. } => format!("user {username:?}"),
        };
        let source = match self.find_source(&self.source_name)? {
            Some(s) => format!("intel source {:?} exists (id {})", s.name, s.id),
            None => format!(
                "intel source {:?} does not exist yet (the first run creates it)",
                self.source_name
            ),
        };
        Ok(format!(
            "Tanium {} reachable: {}, signed in with {auth}; {source}",
            self.base_url,
            self.generation.label()
        ))
    }

    /// For `check`: reads `GET {base}/intel/status` (a run reads it before deploying) and says
    /// what it holds; None on 3.x, which offers none. A 403 is an error naming the permission.
    pub fn check_intel_status(&self) -> Result<Option<String>> {
        let path = format!("{}/intel/status", self.generation.base_path());
        let resp = self.send("GET", &path, None)?;
        if resp.status == 404 && self.generation == ApiGeneration::V3 {
            return Ok(None);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "GET", &path));
        }
        let v = unwrap_data(json_body(&resp, &describe("GET", &path))?);
        let revision = v.get("currentRevision").and_then(int_of);
        let size = v.get("currentSize").and_then(int_of);
        Ok(Some(match (revision, size) {
            (Some(r), Some(s)) => format!("readable (revision {r}, {s} bytes deployed)"),
            _ => "readable".to_string(),
        }))
    }
}

/// Whether an intel status says a deploy is in progress. Which field says so is UNCONFIRMED
/// (the recorded status shows createdAt, modifiedAt, currentRevision and currentSize): a
/// `status`/`state` text naming progress, a true `inProgress`/`deploying`/`pending`-like flag,
/// or a pending revision above the current one all count; a status with none of these says
/// nothing (None) unless it has the recorded fields (then: not running).
pub(super) fn deploying(status: &Value) -> Option<bool> {
    let obj = status.as_object()?;
    let busy = |t: &str| {
        let t = t.to_ascii_lowercase();
        ["progress", "running", "deploying", "pending", "compiling"]
            .iter()
            .any(|w| t.contains(w))
    };
    for (k, v) in obj {
        let key = k.to_ascii_lowercase();
        match v {
            Value::String(t) if (key == "status" || key == "state") && busy(t) => {
                return Some(true)
            }
            Value::Bool(true) if busy(&key) => return Some(true),
            _ => {}
        }
    }
    let revision = |k: &str| obj.get(k).and_then(int_of);
    if let (Some(p), Some(c)) = (revision("pendingRevision"), revision("currentRevision")) {
        return Some(p > c);
    }
    obj.contains_key("currentRevision").then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deploy_in_progress_is_read_from_any_plausible_status() {
        let recorded = json!({"createdAt": "x", "modifiedAt": "y", "currentRevision": 855, "currentSize": 1187840});
        assert_eq!(deploying(&recorded), Some(false));
        for busy in [
            json!({"currentRevision": 1, "status": "Deploy in progress"}),
            json!({"state": "RUNNING"}),
            json!({"inProgress": true}),
            json!({"isDeploying": true, "currentRevision": 3}),
            json!({"pendingRevision": 4, "currentRevision": 3}),
        ] {
            assert_eq!(deploying(&busy), Some(true), "{busy}");
        }
        assert_eq!(
            deploying(&json!({"status": "idle", "currentRevision": 3})),
            Some(false)
        );
        assert_eq!(deploying(&json!({"something": "else"})), None);
        assert_eq!(deploying(&json!([1])), None);
    }
}
