//! The README is the admin's guide: its parameter tables must say what install.json declares,
//! row for row.

use std::collections::BTreeMap;

use serde_json::Value;

const HEADER: &str = "| name | label | type | required | default | meaning |";

struct Row {
    label: String,
    kind: String,
    required: String,
    default: String,
}

/// Splits a table row at the `|` that are not escaped as `\|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

fn readme_rows(readme: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.trim() == HEADER {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let c = cells(line);
        assert_eq!(c.len(), 6, "a parameter row has six cells: {line}");
        let name = c[0].trim_matches('`').to_string();
        let row = Row {
            label: c[1].clone(),
            kind: c[2].clone(),
            required: c[3].clone(),
            default: c[4].clone(),
        };
        assert!(
            rows.insert(name.clone(), row).is_none(),
            "{name} has two rows in the README"
        );
    }
    rows
}

fn default_of(p: &Value) -> String {
    match p.get("default") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

#[test]
fn parameter_rows_match_install_json() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let install: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/install.json")).unwrap())
            .unwrap();
    let mut rows = readme_rows(&readme);
    let flag = |p: &Value, k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    for p in install["params"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let row = rows
            .remove(name)
            .unwrap_or_else(|| panic!("install.json declares {name}; the README has no row"));
        assert_eq!(row.label, p["label"].as_str().unwrap(), "label of {name}");
        let kind = p["type"].as_str().unwrap();
        assert!(
            row.kind == kind || row.kind.starts_with(&format!("{kind},")),
            "type of {name}: README {:?}, install.json {kind}",
            row.kind
        );
        for (key, word) in [
            ("encrypt", "encrypted"),
            ("allowMultiple", "multiple"),
            ("hidden", "hidden"),
        ] {
            // A MultiChoice is multiple by its type.
            if key == "allowMultiple" && kind == "MultiChoice" {
                continue;
            }
            assert_eq!(
                row.kind.contains(word),
                flag(p, key),
                "{name}: README type {:?} vs install.json {key}",
                row.kind
            );
        }
        assert_eq!(
            row.required == "yes",
            flag(p, "required"),
            "required of {name}"
        );
        assert_eq!(row.default, default_of(p), "default of {name}");
    }
    assert!(
        rows.is_empty(),
        "README rows for params install.json does not declare: {:?}",
        rows.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_two_set_up_commands_open_the_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let top: Vec<&str> = readme.lines().take(6).collect();
    assert_eq!(
        top,
        [
            "# tanium-tr-indicators",
            "",
            "```",
            "cargo run --release -- demo",
            "cargo test",
            "```"
        ]
    );
}
