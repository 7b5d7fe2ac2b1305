//! The label params: Tanium Labels, Tags as Labels, ThreatAssess Labels, Disabled Intel Label.

use crate::label_rules::{check_name, LabelRules, Managed, TagRule, DEFAULT_LABEL};
use crate::param_names as pn;
use crate::params::RawParams;

use super::value::{boolean, list, shown, text, Problems};

/// The rules; a bad param is recorded and reads as no labels from it.
pub(super) fn labels(raw: &RawParams, p: &mut Problems) -> LabelRules {
    let fixed = p.take(names(raw, pn::TANIUM_LABELS));
    // A job that never set Tanium Labels (made before the param existed, say) gets the
    // default; one that cleared it gets none.
    let set = raw
        .get(pn::TANIUM_LABELS.name)
        .is_some_and(|v| !v.is_null());
    let fixed = if set {
        fixed
    } else {
        vec![DEFAULT_LABEL.to_string()]
    };
    let tags = p.take(list(raw, pn::TAGS_AS_LABELS, true).and_then(|entries| {
        entries
            .iter()
            .map(|e| TagRule::parse(e).map_err(|why| format!("{} {why}", pn::TAGS_AS_LABELS.label)))
            .collect()
    }));
    let threatassess = p
        .take(
            boolean(
                raw,
                &[pn::THREATASSESS_LABELS.name],
                pn::THREATASSESS_LABELS.label,
                false,
            )
            .map(Some),
        )
        .unwrap_or(false);
    LabelRules {
        fixed,
        tags,
        threatassess,
    }
}

/// Disabled Intel Label: a name none of the label rules gives (they would take it off the
/// documents their indicators do not earn it for), or None.
pub(super) fn disabled_label(
    raw: &RawParams,
    rules: &LabelRules,
    p: &mut Problems,
) -> Option<String> {
    let spec = pn::DISABLED_INTEL_LABEL;
    let name = p.take(text(raw, spec).and_then(|name| match name {
        None => Ok(None),
        Some(n) => {
            check_name(&n).map_err(|why| format!("{} {why}", spec.label))?;
            Ok(Some(n.trim().to_string()))
        }
    }))?;
    let managed = Managed::from_tokens(rules.tokens().iter());
    if managed.manages(&name) {
        p.take::<()>(Err(format!(
            "{} '{}' is also a label {}, {} or {} give: choose a name of its own",
            spec.label,
            shown(&name),
            pn::TANIUM_LABELS.label,
            pn::TAGS_AS_LABELS.label,
            pn::THREATASSESS_LABELS.label
        )));
        return None;
    }
    Some(name)
}

fn names(raw: &RawParams, spec: pn::ParamSpec) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in list(raw, spec, true)? {
        check_name(&name).map_err(|why| format!("{} {why}", spec.label))?;
        if name.contains('*') {
            return Err(format!(
                "{} '{}' holds a '*': patterns belong in Tags as Labels",
                spec.label,
                shown(&name)
            ));
        }
        if !out
            .iter()
            .any(|o| crate::label_rules::key(o) == crate::label_rules::key(&name))
        {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::config::tests::{good, with};
    use crate::config::JobConfig;
    use crate::label_rules::TagRule;

    #[test]
    fn every_document_is_labelled_threatconnect_unless_the_job_says_otherwise() {
        let c = JobConfig::from_params(&good()).unwrap();
        assert_eq!(c.labels.fixed, vec!["ThreatConnect"]);
        assert!(c.labels.tags.is_empty() && !c.labels.threatassess);
        let none = JobConfig::from_params(&with(good(), "tanium_labels", json!(""))).unwrap();
        assert!(none.labels.is_empty(), "{:?}", none.labels);
        let r = [
            (
                "tanium_labels",
                json!("All Endpoints| Pilot ,all endpoints"),
            ),
            ("tags_as_labels", json!(["APT28", "crime*"])),
            ("threatassess_labels", json!(true)),
        ]
        .into_iter()
        .fold(good(), |r, (k, v)| with(r, k, v));
        let c = JobConfig::from_params(&r).unwrap();
        assert_eq!(c.labels.fixed, vec!["All Endpoints", "Pilot"]);
        assert_eq!(
            c.labels.tags,
            vec![
                TagRule::Exact("apt28".into()),
                TagRule::Prefix("crime".into())
            ]
        );
        assert!(c.labels.threatassess);
        assert_eq!(c.redacted_json()["labels"]["fixed"][1], "Pilot");
    }

    #[test]
    fn the_disabled_intel_label_is_off_by_default_and_a_name_of_its_own() {
        let c = JobConfig::from_params(&good()).unwrap();
        assert_eq!(c.disabled_label, None);
        let c = JobConfig::from_params(&with(
            good(),
            "disabled_intel_label",
            json!(" Noisy Intel "),
        ))
        .unwrap();
        assert_eq!(c.disabled_label.as_deref(), Some("Noisy Intel"));
        for (k, v, name) in [
            ("tanium_labels", json!("Pilot"), "pilot"),
            ("tags_as_labels", json!("noisy*"), "Noisy Intel"),
            ("threatassess_labels", json!(true), "ThreatAssess High"),
        ] {
            let r = with(with(good(), k, v), "disabled_intel_label", json!(name));
            let e = JobConfig::from_params(&r).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "Disabled Intel Label '{name}' is also a label Tanium Labels, Tags as Labels or ThreatAssess Labels give"
                )),
                "{k}: {e}"
            );
        }
    }

    #[test]
    fn bad_label_params_name_their_label() {
        for (k, v, want) in [
            (
                "tags_as_labels",
                json!("*"),
                "Tags as Labels '*' alone would make every tag a label",
            ),
            (
                "tags_as_labels",
                json!("a*b"),
                "Tags as Labels 'a*b' has a '*' before its end",
            ),
            (
                "tanium_labels",
                json!("Pilot*"),
                "Tanium Labels 'Pilot*' holds a '*'",
            ),
            (
                "tanium_labels",
                json!(["a\u{1}b"]),
                "Tanium Labels 'a\\u{1}b' holds a control character",
            ),
            (
                "threatassess_labels",
                json!("maybe"),
                "ThreatAssess Labels must be true or false",
            ),
        ] {
            let e = JobConfig::from_params(&with(good(), k, v))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{k}: {e}");
        }
    }
}
