//! The value grammar every param is read with: text, lists, Booleans and whole numbers as the
//! platform delivers them (JSON values, `|`-delimited text, legacy argv flags), and the
//! [`Problems`] that collect what is wrong with them, so one run reports every bad param.
//!
//! Messages name the param by its label and show the offending value shortened; credentials
//! are read untrimmed and never shown.

use serde_json::Value;

use crate::param_names::ParamSpec;
use crate::params::RawParams;

#[cfg(test)]
thread_local! {
    /// Every param name looked up on this thread, so a test can check that validation reads
    /// exactly the declared params.
    pub(crate) static READ: std::cell::RefCell<std::collections::BTreeSet<String>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

/// Collects every problem so one run reports all bad params at once.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn take<T: Default>(&mut self, r: std::result::Result<T, String>) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            T::default()
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn joined(&self) -> String {
        self.0.join("; ")
    }
}

/// Shows a user value in a message, shortened so message.tc stays readable.
pub(crate) fn shown(v: &str) -> String {
    let v = v.trim();
    if v.chars().count() > 60 {
        format!("{}...", v.chars().take(57).collect::<String>())
    } else {
        v.to_string()
    }
}

/// The first of `names` present with a non-null value.
fn lookup<'a>(raw: &'a RawParams, names: &[&'a str]) -> Option<(&'a str, &'a Value)> {
    #[cfg(test)]
    READ.with(|r| r.borrow_mut().extend(names.iter().map(|n| n.to_string())));
    names
        .iter()
        .find_map(|n| raw.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
}

/// One value as text; `trim` is off for credentials. Empty means absent.
pub(crate) fn scalar(
    raw: &RawParams,
    names: &[&str],
    label: &str,
    trim: bool,
) -> std::result::Result<Option<String>, String> {
    let Some((_, v)) = lookup(raw, names) else {
        return Ok(None);
    };
    scalar_value(v, label, trim)
}

fn scalar_value(v: &Value, label: &str, trim: bool) -> std::result::Result<Option<String>, String> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let items: Vec<&Value> = items.iter().filter(|i| !i.is_null()).collect();
            return match items.as_slice() {
                [] => Ok(None),
                [one] => scalar_value(one, label, trim),
                _ => Err(format!("{label} was given more than once")),
            };
        }
        Value::Object(_) => return Err(format!("{label} must be text, not a JSON object")),
    };
    let s = if trim { s.trim().to_string() } else { s };
    Ok((!s.trim().is_empty()).then_some(s))
}

/// A text param by its spec, trimmed; the label names it in errors.
pub(crate) fn text(
    raw: &RawParams,
    spec: ParamSpec,
) -> std::result::Result<Option<String>, String> {
    scalar(raw, &[spec.name], spec.label, true)
}

/// A list param: JSON list, `|`-delimited (and comma-delimited when `commas`), trimmed,
/// empties dropped, duplicates dropped keeping the first.
pub(crate) fn list(
    raw: &RawParams,
    spec: ParamSpec,
    commas: bool,
) -> std::result::Result<Vec<String>, String> {
    let Some((_, v)) = lookup(raw, &[spec.name]) else {
        return Ok(Vec::new());
    };
    let mut pieces: Vec<String> = Vec::new();
    let push_str = |s: &str, pieces: &mut Vec<String>| {
        // A JSON list inside a string (e.g. from argv) is accepted too.
        if s.trim_start().starts_with('[') {
            if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s) {
                for i in items {
                    if let Some(t) = i.as_str() {
                        pieces.push(t.to_string());
                    } else if !i.is_null() {
                        pieces.push(i.to_string());
                    }
                }
                return;
            }
        }
        for part in s.split('|') {
            if commas {
                pieces.extend(part.split(',').map(str::to_string));
            } else {
                pieces.push(part.to_string());
            }
        }
    };
    match v {
        Value::Array(items) => {
            for i in items {
                match i {
                    Value::Null => {}
                    Value::String(s) => push_str(s, &mut pieces),
                    Value::Object(_) | Value::Array(_) => {
                        return Err(format!("{} must be a list of names", spec.label))
                    }
                    other => pieces.push(other.to_string()),
                }
            }
        }
        Value::String(s) => push_str(s, &mut pieces),
        Value::Object(_) => return Err(format!("{} must be a list of names", spec.label)),
        other => pieces.push(other.to_string()),
    }
    let mut out: Vec<String> = Vec::new();
    for p in pieces {
        let p = p.trim();
        if !p.is_empty() && !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

/// A Boolean: true/false (JSON or text, any case), 1/0, yes/no; a bare legacy flag is true.
pub(crate) fn boolean(
    raw: &RawParams,
    names: &[&str],
    label: &str,
    default: bool,
) -> std::result::Result<bool, String> {
    match scalar(raw, names, label, true)? {
        None => Ok(default),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!(
                "{label} must be true or false, got '{}'",
                shown(&s)
            )),
        },
    }
}

/// A whole number in `lo..=hi` (`hi == u32::MAX` means no upper bound).
pub(crate) fn whole(
    raw: &RawParams,
    names: &[&str],
    label: &str,
    lo: u32,
    hi: u32,
) -> std::result::Result<Option<u32>, String> {
    let Some(s) = scalar(raw, names, label, true)? else {
        return Ok(None);
    };
    let range = if hi == u32::MAX {
        format!("a whole number, {lo} or more")
    } else {
        format!("a whole number from {lo} to {hi}")
    };
    match s.parse::<u32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(format!("{label} must be {range}, got '{}'", shown(&s))),
    }
}

pub(crate) fn spec_whole(
    raw: &RawParams,
    spec: ParamSpec,
    lo: u32,
    hi: u32,
) -> std::result::Result<Option<u32>, String> {
    whole(raw, &[spec.name], spec.label, lo, hi)
}
