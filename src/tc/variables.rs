//! `&{TC:TEXT:key}` / `&{TC:KEYCHAIN:key}` param values, resolved through
//! `GET {api_path}/internal/variable/runtime/{provider}/{key}` by the client that makes every
//! other ThreatConnect call: the same signer, the same token renewal, the same retry rule.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::error::{Error, Result, Service};
use crate::http::path_of;
use crate::param_names;
use crate::params::RawParams;
use crate::secret::Secret;
use crate::tc::client::TcClient;

/// A `&{TC:TYPE:key}` reference found in a param value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Who stores it: `TC` (others such as `Vault` are not supported).
    pub provider: String,
    /// `TEXT`, `KEYCHAIN` or `FILE`.
    pub kind: String,
    /// The variable's name.
    pub key: String,
}

/// Parses a whole value as a TC variable reference (tcex matches the whole value too).
pub fn parse_variable(value: &str) -> Option<Variable> {
    let inner = value.trim().strip_prefix("&{")?.strip_suffix('}')?;
    let mut parts = inner.splitn(3, ':');
    let provider = parts.next()?.trim();
    let kind = parts.next()?.trim();
    let key = parts.next()?;
    if provider.is_empty() || kind.is_empty() || key.is_empty() || key.contains('}') {
        return None;
    }
    Some(Variable {
        provider: provider.to_string(),
        kind: kind.to_ascii_uppercase(),
        key: key.to_string(),
    })
}

/// Whether any value (or list element) is a variable reference, i.e. a TC call is needed.
pub fn has_variables(raw: &RawParams) -> bool {
    raw.values().any(|v| match v {
        Value::String(s) => parse_variable(s).is_some(),
        Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| parse_variable(s).is_some())),
        _ => false,
    })
}

fn label_of(name: &str) -> String {
    param_names::JOB_PARAMS
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.label.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// What [`TcClient::resolve_variables`] did.
#[derive(Debug, Default)]
pub struct Resolved {
    /// How many values were replaced.
    pub count: usize,
    /// KEYCHAIN values: credentials wherever they land, so the caller masks them everywhere.
    pub sensitive: Vec<Secret>,
}

impl TcClient {
    /// Resolves every `&{TC:TEXT:..}` / `&{TC:KEYCHAIN:..}` value in place. Errors name the
    /// parameter, never the resolved value.
    pub fn resolve_variables(&self, raw: &mut RawParams) -> Result<Resolved> {
        let mut resolved = Resolved::default();
        for (name, value) in raw.iter_mut() {
            let slots: Vec<&mut Value> = match value {
                Value::Array(items) => items.iter_mut().collect(),
                other => vec![other],
            };
            for slot in slots {
                let Some(var) = slot.as_str().and_then(parse_variable) else {
                    continue;
                };
                let label = label_of(name);
                if !var.provider.eq_ignore_ascii_case("TC")
                    || !matches!(var.kind.as_str(), "TEXT" | "KEYCHAIN")
                {
                    return Err(Error::Param(format!(
                        "{label} refers to a {}:{} variable; only TC TEXT and KEYCHAIN variables are supported",
                        var.provider, var.kind
                    )));
                }
                let text = self.variable(&var, &label)?;
                log::debug!("resolved the {} variable of {label}", var.kind);
                if var.kind == "KEYCHAIN" {
                    resolved.sensitive.push(Secret::new(text.clone()));
                }
                *slot = Value::String(text);
                resolved.count += 1;
            }
        }
        Ok(resolved)
    }

    fn variable(&self, var: &Variable, label: &str) -> Result<String> {
        let segment = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let url = format!(
            "{}/internal/variable/runtime/{}/{}",
            self.api_path(),
            segment(&var.provider),
            segment(&var.key)
        );
        let resp = self.answer(&url)?;
        let request = format!("GET {}", path_of(&url));
        if !(200..300).contains(&resp.status) {
            return Err(Error::Param(format!(
                "{label}: ThreatConnect could not resolve its {} variable (HTTP {} from {request})",
                var.kind, resp.status
            )));
        }
        let protocol = |detail: String| Error::Protocol {
            service: Service::ThreatConnect,
            request: request.clone(),
            detail,
        };
        if let Some(e) = resp.not_the_api(Service::ThreatConnect, &request) {
            return Err(e);
        }
        let body: Value = serde_json::from_slice(&resp.body)
            .map_err(|_| protocol(format!("the answer for {label}'s variable is not JSON")))?;
        match body.get("data") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
            _ => Err(protocol(format!(
                "the answer for {label}'s variable has no \"data\" text"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_recognised_only_as_whole_values() {
        let v = parse_variable(" &{TC:KEYCHAIN:tanium pw} ").unwrap();
        assert_eq!(
            (v.provider.as_str(), v.kind.as_str(), v.key.as_str()),
            ("TC", "KEYCHAIN", "tanium pw")
        );
        assert!(parse_variable("x &{TC:TEXT:a}").is_none());
        assert!(parse_variable("&{TC:TEXT}").is_none());
        let mut raw = RawParams::new();
        raw.insert("owners".into(), serde_json::json!(["A", "&{TC:TEXT:o}"]));
        assert!(has_variables(&raw));
    }
}
