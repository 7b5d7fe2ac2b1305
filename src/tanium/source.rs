//! The app's intel source (found by exact name, created when missing), the intel deploy, and
//! what `check` reads.

use serde_json::json;

use crate::error::{Error, Result, Service};
use crate::http::{self};
use crate::tanium::model::{int_of, ApiGeneration, Source};

use super::answers::{describe, json_body, rows_of, status_error, unwrap_data};
use super::client::{Payload, TaniumClient};
use super::session::{Credentials, CURRENT_PATH};

const SOURCE_DESCRIPTION: &str = "Address, File and Host indicators sent from ThreatConnect by \
the tanium-tr-indicators job app. Managed automatically: documents here are created, replaced \
and deleted by the app.";

impl TaniumClient {
    /// Finds the intel source with exactly this name; never writes (dry-run, check).
    pub fn find_source(&self, name: &str) -> Result<Option<Source>> {
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
        let mut found: Vec<Source> = rows
            .into_iter()
            .filter_map(|r| serde_json::from_value::<Source>(r).ok())
            .filter(|s| s.name == name && s.id > 0)
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
        let path = format!("{}/sources", self.generation.base_path());
        let body = json!({"type": "api-client", "name": name, "description": SOURCE_DESCRIPTION});
        let resp = self.send("POST", &path, Some(&Payload::json(&body)))?;
        if resp.status == 409 {
            // Someone created it between our listing and our POST.
            return self
                .find_source(name)?
                .ok_or_else(|| status_error(&resp, "POST", &path));
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "POST", &path));
        }
        let created = json_body(&resp, &describe("POST", &path))
            .ok()
            .map(unwrap_data)
            .and_then(|v| serde_json::from_value::<Source>(v).ok())
            .filter(|s| s.id > 0);
        let source = match created {
            Some(s) => s,
            // Unreadable answer to a write that succeeded: look it up instead.
            None => self.find_source(name)?.ok_or_else(|| Error::Protocol {
                service: Service::Tanium,
                request: describe("POST", &path),
                detail: format!("source {name:?} was accepted but cannot be found afterwards"),
            })?,
        };
        log::info!("created Tanium intel source {name:?} (id {})", source.id);
        Ok(source)
    }

    /// Deploys intel to endpoints once: 4.x `POST {base}/intel/deploy` (true); 3.x deploys on
    /// its own (false, no request). A 4.x server without the route also yields false.
    pub fn deploy(&self) -> Result<bool> {
        if self.generation == ApiGeneration::V3 {
            return Ok(false);
        }
        let path = format!("{}/intel/deploy", self.generation.base_path());
        let resp = self.send("POST", &path, None)?;
        if resp.status == 404 {
            log::warn!("Tanium has no intel deploy route; intel reaches endpoints on the server's own schedule");
            return Ok(false);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            let mut e = status_error(&resp, "POST", &path);
            if let Error::Status { message, .. } = &mut e {
                message.push_str(" (a deploy may already be running; the next run deploys again)");
            }
            return Err(e);
        }
        // A 200 that is not JSON (a proxy's page) started no deploy.
        let answer = unwrap_data(json_body(&resp, &describe("POST", &path))?);
        let task = answer.get("taskId").and_then(int_of);
        match task {
            Some(t) => log::info!("Tanium intel deploy started (task {t})"),
            None => log::info!("Tanium intel deploy started"),
        }
        Ok(true)
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

    /// Reads what a run needs besides sources and intels, `GET {base}/intel/status` and
    /// `GET {base}/labels`, with the client's credentials: one `(what, outcome)` each, for
    /// `check` mode. A 403 is an error naming the missing permission.
    pub fn check_access(&self) -> Vec<(&'static str, Result<String>)> {
        let base = self.generation.base_path();
        let status_path = format!("{base}/intel/status");
        let status = self.send("GET", &status_path, None).and_then(|resp| {
            if resp.status == 404 && self.generation == ApiGeneration::V3 {
                return Ok("not offered (3.x deploys intel on its own)".to_string());
            }
            if http::classify(resp.status) != http::Verdict::Ok {
                return Err(status_error(&resp, "GET", &status_path));
            }
            let v = unwrap_data(json_body(&resp, &describe("GET", &status_path))?);
            let revision = v.get("currentRevision").and_then(int_of);
            let size = v.get("currentSize").and_then(int_of);
            Ok(match (revision, size) {
                (Some(r), Some(s)) => format!("readable (revision {r}, {s} bytes deployed)"),
                _ => "readable".to_string(),
            })
        });
        let labels_path = format!("{base}/labels");
        let labels = self
            .expect_ok("GET", &labels_path, None)
            .and_then(|resp| {
                let v = json_body(&resp, &describe("GET", &labels_path))?;
                rows_of(v).ok_or_else(|| Error::Protocol {
                    service: Service::Tanium,
                    request: describe("GET", &labels_path),
                    detail: "the label listing is not a JSON list".into(),
                })
            })
            .map(|rows| format!("readable ({} listed)", rows.len()));
        vec![("intel status", status), ("labels", labels)]
    }
}
