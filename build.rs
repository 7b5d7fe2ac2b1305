//! Build-time check of install.json and layout.json against the code.
//!
//! Fails the build with a clear message when install.json or layout.json is not valid JSON,
//! misses a required field, declares a version other than Cargo.toml's, or declares params that
//! differ (by name or label) from `src/param_names.rs`, the one list the code reads.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

#[allow(dead_code)]
mod names {
    include!("src/param_names.rs");
}

const TOP_LEVEL_REQUIRED: &[&str] = &[
    "allowOnDemand",
    "displayName",
    "features",
    "languageVersion",
    "listDelimiter",
    "params",
    "programLanguage",
    "programMain",
    "programVersion",
    "runtimeLevel",
];

const PARAM_TYPES: &[&str] = &[
    "Boolean",
    "Choice",
    "EditChoice",
    "KeyValueList",
    "MultiChoice",
    "String",
    "StringMixed",
];

fn main() {
    for f in [
        "install.json",
        "layout.json",
        "src/param_names.rs",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut problems = Vec::new();
    let install = load("install.json", &mut problems);
    let layout = load("layout.json", &mut problems);
    if let Some(ij) = &install {
        check_install(ij, &mut problems);
        if let Some(lj) = &layout {
            check_layout(ij, lj, &mut problems);
        }
    }
    if !problems.is_empty() {
        let mut msg = String::from("install.json / layout.json do not match the code:\n");
        for p in &problems {
            msg.push_str("  - ");
            msg.push_str(p);
            msg.push('\n');
        }
        panic!("{msg}");
    }
}

fn load(file: &str, problems: &mut Vec<String>) -> Option<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{file}: cannot read it: {e}"));
            return None;
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) => {
            problems.push(format!("{file}: must be a JSON object"));
            None
        }
        Err(e) => {
            problems.push(format!("{file}: not valid JSON: {e}"));
            None
        }
    }
}

fn check_install(ij: &Value, problems: &mut Vec<String>) {
    for field in TOP_LEVEL_REQUIRED {
        if ij.get(field).is_none() {
            problems.push(format!("install.json: required field `{field}` is missing"));
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    match ij.get("programVersion").and_then(Value::as_str) {
        Some(v) if v == version => {}
        other => problems.push(format!(
            "install.json: programVersion is {other:?}, Cargo.toml says {version:?}"
        )),
    }
    if ij.get("runtimeLevel").and_then(Value::as_str) != Some("Organization") {
        problems.push("install.json: runtimeLevel must be \"Organization\" (a Job App)".into());
    }
    let features = ij.get("features").and_then(Value::as_array);
    if !features.is_some_and(|f| f.iter().any(|x| x == "fileParams")) {
        problems.push(
            "install.json: features must include \"fileParams\" (the encrypted param file)".into(),
        );
    }
    let Some(params) = ij.get("params").and_then(Value::as_array) else {
        problems.push("install.json: `params` must be an array".into());
        return;
    };
    let mut declared = BTreeSet::new();
    for (i, p) in params.iter().enumerate() {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let what = if name.is_empty() {
            format!("install.json params[{i}]")
        } else {
            format!("install.json param `{name}`")
        };
        if name.is_empty() {
            problems.push(format!("{what}: `name` is missing"));
            continue;
        }
        if !declared.insert(name.to_string()) {
            problems.push(format!("{what}: declared twice"));
        }
        let label = p.get("label").and_then(Value::as_str);
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        if !PARAM_TYPES.contains(&ty) {
            problems.push(format!(
                "{what}: `type` {ty:?} is not one of {PARAM_TYPES:?}"
            ));
        }
        if matches!(ty, "Choice" | "MultiChoice")
            && p.get("validValues")
                .and_then(Value::as_array)
                .is_none_or(|v| v.is_empty())
        {
            problems.push(format!("{what}: a {ty} needs `validValues`"));
        }
        let hidden = p.get("hidden").and_then(Value::as_bool).unwrap_or(false);
        if hidden != names::HIDDEN_PARAMS.contains(&name) {
            problems.push(format!(
                "{what}: install.json says hidden = {hidden}; HIDDEN_PARAMS in src/param_names.rs disagrees"
            ));
        }
        if names::PLATFORM_PARAMS.contains(&name) {
            problems.push(format!(
                "{what}: is a platform runtime param and must not be declared"
            ));
        }
        match names::JOB_PARAMS.iter().find(|s| s.name == name) {
            None => problems.push(format!(
                "{what}: declared in install.json but the code never reads it (add it to JOB_PARAMS in src/param_names.rs)"
            )),
            Some(spec) if Some(spec.label) != label => problems.push(format!(
                "{what}: label is {label:?} in install.json but {:?} in src/param_names.rs",
                spec.label
            )),
            Some(_) => {}
        }
    }
    for spec in names::JOB_PARAMS {
        if !declared.contains(spec.name) {
            problems.push(format!(
                "param `{}` ({}) is read by the code but not declared in install.json",
                spec.name, spec.label
            ));
        }
    }
}

fn check_layout(ij: &Value, lj: &Value, problems: &mut Vec<String>) {
    let visible: BTreeSet<&str> = ij
        .get("params")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| !p.get("hidden").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .collect();
    let Some(inputs) = lj.get("inputs").and_then(Value::as_array) else {
        problems.push("layout.json: `inputs` must be an array".into());
        return;
    };
    let mut seen = BTreeSet::new();
    for (i, input) in inputs.iter().enumerate() {
        let title = input.get("title").and_then(Value::as_str).unwrap_or("");
        if !(3..=100).contains(&title.chars().count()) {
            problems.push(format!(
                "layout.json inputs[{i}]: `title` must be 3 to 100 characters"
            ));
        }
        if input.get("sequence").and_then(Value::as_u64).is_none() {
            problems.push(format!("layout.json inputs[{i}]: `sequence` is missing"));
        }
        let Some(params) = input.get("parameters").and_then(Value::as_array) else {
            problems.push(format!(
                "layout.json inputs[{i}]: `parameters` must be an array"
            ));
            continue;
        };
        for p in params {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            if !visible.contains(name) {
                problems.push(format!(
                    "layout.json: `{name}` is not a visible param in install.json"
                ));
            }
            seen.insert(name);
        }
    }
    for name in visible.difference(&seen) {
        problems.push(format!(
            "layout.json: install.json param `{name}` is missing from layout.json"
        ));
    }
    if !lj.get("outputs").is_none_or(Value::is_array) {
        problems.push("layout.json: `outputs` must be an array".into());
    }
}
