//! Observations on ThreatConnect indicators (TC 7.8+, "False Positives and Observations"):
//! reading indicators by id with their counts, and reporting new observations with
//! `PUT /v3/indicators/{id}?fields=observations` `{"observations": n}`.
//!
//! A report adds to a count, so sending it twice counts twice. It is sent again only when
//! ThreatConnect surely did not act on it: a 429 or 503 answer, a connection that was never
//! made, or a 401 to a job token that is then renewed. An answer lost on the way back (a
//! timeout, a closed connection, another 5xx) leaves the write's fate unknown: the caller reads
//! the count again to tell ([`WriteFailure::Unsure`]).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::http::{self, failure::Failure, path_of, Verdict};
use crate::intel::identity::{self, Identity};
use crate::tc::model::{lenient_i64, IndicatorType};
use crate::tc::tql::encode_query_value;

use super::answer::{status_error, tc_message, SVC};
use super::client::TcClient;

/// Ids per read by id (`id in (…)`): the URL stays well under the 8 KB servers take.
pub const IDS_PER_READ: usize = 200;

/// What the Api User lacks when ThreatConnect refuses an observation (403): the option, set on
/// the Api User's account (it also needs a role that may report: Standard User or above in an
/// Organization, Contributor or above in a Community or Source).
pub const OBSERVATION_PERMISSION: &str =
    "the Api User needs 'Include in Observations and False Positives'";

/// An indicator as the observation writes need it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Observed {
    #[serde(deserialize_with = "super::model::lenient_id")]
    pub id: i64,
    pub owner_name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub summary: String,
    pub web_link: Option<String>,
    /// Observations reported so far, by every user.
    #[serde(deserialize_with = "lenient_i64")]
    pub observations: Option<i64>,
}

impl Observed {
    /// The identity its document would carry (None: a type or value the job does not send).
    pub fn identity(&self) -> Option<Identity> {
        let kind = IndicatorType::parse(&self.type_name)?;
        identity::identity_of(&self.owner_name, kind, &self.summary).ok()
    }
}

/// Why an observation write did not count.
#[derive(Debug)]
pub enum WriteFailure {
    /// 404: the indicator is gone.
    Gone,
    /// 403: the Api User may not report observations.
    Forbidden(Error),
    /// The answer was lost: ThreatConnect may or may not have counted it.
    Unsure(Error),
    /// Refused or failed; nothing was counted.
    Failed(Error),
}

impl TcClient {
    /// The indicators of `ids` that TC still has, with their observation counts (records it
    /// cannot read are left out: their ids then count as gone).
    pub fn observed_by_id(&self, ids: &[i64]) -> Result<Vec<Observed>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_READ) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let tql = format!("id in ({})", list.join(","));
            let url = format!(
                "{}/v3/indicators?tql={}&fields=observations",
                self.api_path(),
                encode_query_value(&tql)
            );
            let limit = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            self.each_record(
                &url,
                limit,
                &mut |r| match serde_json::from_str::<Observed>(r.get()) {
                    Ok(o) if o.id > 0 => out.push(o),
                    _ => log::debug!("an indicator record read by id could not be read"),
                },
            )?;
        }
        Ok(out)
    }

    /// For `check`: one indicator read with its observation count, which proves the field is
    /// readable (writing one cannot be tried without counting it).
    pub fn check_observations(&self) -> Result<()> {
        let url = format!(
            "{}/v3/indicators?resultLimit=1&fields=observations",
            self.api_path()
        );
        self.each_record(&url, 1, &mut |_| {}).map(|_| ())
    }

    /// Reports `n` new observations of indicator `id`; see the module docs for when it is
    /// sent again.
    pub fn add_observations(&self, id: i64, n: u64) -> std::result::Result<(), WriteFailure> {
        let url = format!("{}/v3/indicators/{id}?fields=observations", self.api_path());
        let what = format!("PUT {}", path_of(&url));
        let body = serde_json::json!({ "observations": n }).to_string();
        let policy = self.policy();
        let max = policy.max_attempts.max(1);
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let generation = self.generation();
            let more = attempt < max;
            let resp = match self.put_once(&url, body.as_bytes()) {
                Ok(resp) => resp,
                Err(Error::Transport(na)) => {
                    let never_sent = matches!(
                        na.failure,
                        Failure::NotFound
                            | Failure::Refused
                            | Failure::TimedOut {
                                connecting: true,
                                ..
                            }
                            | Failure::Certificate(_)
                            | Failure::Tls(_)
                            | Failure::Proxy(_)
                    );
                    let final_ = matches!(na.failure, Failure::NotFound | Failure::Certificate(_));
                    if never_sent && more && !final_ {
                        let d = policy.delay(attempt, None);
                        log::warn!(
                            "{what} to ThreatConnect: {}; retrying in {:.1} s (attempt {}/{max})",
                            na.failure,
                            d.as_secs_f64(),
                            attempt + 1
                        );
                        policy.sleeper.sleep(d);
                        continue;
                    }
                    let e = Error::Transport(na);
                    return Err(if never_sent {
                        WriteFailure::Failed(e)
                    } else {
                        WriteFailure::Unsure(e)
                    });
                }
                Err(e) => return Err(WriteFailure::Failed(e)),
            };
            match resp.status {
                s if http::classify(s) == Verdict::Ok => return Ok(()),
                401 if self.uses_token() && !renewed => {
                    renewed = true;
                    log::info!("ThreatConnect answered 401 to {what}; renewing the job token");
                    self.renew(generation).map_err(WriteFailure::Failed)?;
                }
                429 | 503 if more => {
                    let d = policy.delay(attempt, resp.retry_after());
                    log::warn!(
                        "{what} to ThreatConnect: {}; retrying in {:.1} s (attempt {}/{max})",
                        resp.status,
                        d.as_secs_f64(),
                        attempt + 1
                    );
                    policy.sleeper.sleep(d);
                }
                404 => return Err(WriteFailure::Gone),
                403 => {
                    let (_, msg) = tc_message(&resp);
                    return Err(WriteFailure::Forbidden(Error::Forbidden {
                        service: SVC,
                        needed: OBSERVATION_PERMISSION.into(),
                        answers: format!("403 to {what}: {msg}"),
                    }));
                }
                408 | 500 | 502 | 504..=599 => {
                    return Err(WriteFailure::Unsure(status_error(&resp, &what)))
                }
                _ => return Err(WriteFailure::Failed(status_error(&resp, &what))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observed_record_knows_the_identity_its_document_carries() {
        let o: Observed = serde_json::from_str(
            r#"{"id": "12", "ownerName": "Demo Org", "type": "Host", "summary": "Evil.Example",
                "webLink": "https://tc/x", "observations": 3}"#,
        )
        .unwrap();
        assert_eq!((o.id, o.observations), (12, Some(3)));
        let expected = identity::identity("Demo Org", IndicatorType::Host, "evil.example");
        assert_eq!(o.identity(), Some(expected));
        let url = Observed {
            type_name: "URL".into(),
            ..o
        };
        assert_eq!(url.identity(), None);
    }
}
