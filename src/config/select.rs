//! What the job sends and how: the indicator filters ([`Filters`]) and the intel format.

use crate::intel;
use crate::param_names as pn;
use crate::params::RawParams;
use crate::tc::{model::IndicatorType, tql, Filters};

use super::value::{list, shown, spec_whole, text, Problems};

/// The job's filters; a bad one is recorded and reads as unset.
pub(super) fn filters(raw: &RawParams, p: &mut Problems) -> Filters {
    Filters {
        owners: p.take(list(raw, pn::OWNERS, false)),
        types: p.take(indicator_types(raw)),
        include_tags: p.take(list(raw, pn::INCLUDE_TAGS, true)),
        exclude_tags: p.take(list(raw, pn::EXCLUDE_TAGS, true)),
        min_threatassess_score: p.take(spec_whole(raw, pn::MIN_THREATASSESS_SCORE, 0, 1000)),
        min_confidence: p.take(spec_whole(raw, pn::MIN_CONFIDENCE, 0, 100)),
        min_rating: p.take(spec_whole(raw, pn::MIN_RATING, 0, 5)),
        max_false_positives: p.take(spec_whole(raw, pn::MAX_FALSE_POSITIVES, 0, u32::MAX)),
        tql: p.take(user_tql(raw)),
    }
}

/// The job's own TQL, refused when it could escape the bounds the job wraps it in.
fn user_tql(raw: &RawParams) -> Result<Option<String>, String> {
    let tql = text(raw, pn::TQL)?;
    if let Some(t) = &tql {
        tql::check_shape(t).map_err(|e| format!("{} {e}", pn::TQL.label))?;
    }
    Ok(tql)
}

fn indicator_types(raw: &RawParams) -> Result<Vec<IndicatorType>, String> {
    let spec = pn::INDICATOR_TYPES;
    let names = list(raw, spec, true)?;
    let mut chosen = Vec::new();
    for n in &names {
        match IndicatorType::parse(n) {
            Some(t) => chosen.push(t),
            None => {
                return Err(format!(
                    "{} must be among Address, File, Host, got '{}'",
                    spec.label,
                    shown(n)
                ))
            }
        }
    }
    if chosen.is_empty() {
        return Ok(IndicatorType::ALL.to_vec());
    }
    Ok(IndicatorType::ALL
        .into_iter()
        .filter(|t| chosen.contains(t))
        .collect())
}

pub(super) fn intel_format(raw: &RawParams) -> Result<intel::Format, String> {
    let spec = pn::INTEL_FORMAT;
    match text(raw, spec)? {
        None => Ok(intel::Format::Stix),
        Some(s) => {
            let k: String = s
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            match k.as_str() {
                "stix" | "stix12" => Ok(intel::Format::Stix),
                "openioc" | "openioc11" | "ioc" => Ok(intel::Format::OpenIoc),
                _ => Err(format!(
                    "{} must be STIX or OpenIOC, got '{}'",
                    spec.label,
                    shown(&s)
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::config::tests::{good, with};
    use crate::config::JobConfig;
    use crate::tc::model::IndicatorType;

    #[test]
    fn lists_tags_booleans_and_numbers() {
        let r = with(
            with(
                with(
                    with(
                        with(
                            with(good(), "owners", json!("Org A|Org, B| |Org A")),
                            "include_tags",
                            json!(["x, y", "z|x", " "]),
                        ),
                        "exclude_tags",
                        json!("bad,worse"),
                    ),
                    "indicator_types",
                    json!("host|ADDRESS"),
                ),
                "verify_ssl",
                json!(false),
            ),
            "min_confidence",
            json!(50),
        );
        let c = JobConfig::from_params(&r).unwrap();
        assert_eq!(c.filters.owners, vec!["Org A", "Org, B"]);
        assert_eq!(c.filters.include_tags, vec!["x", "y", "z"]);
        assert_eq!(c.filters.exclude_tags, vec!["bad", "worse"]);
        assert_eq!(
            c.filters.types,
            vec![IndicatorType::Address, IndicatorType::Host]
        );
        assert!(!c.tanium.http.verify_tls);
        assert_eq!(c.filters.min_confidence, Some(50));
        let r = with(
            with(good(), "owners", json!("[\"A|1\", \"B\"]")),
            "verify_ssl",
            json!(true),
        );
        let c = JobConfig::from_params(&r).unwrap();
        assert_eq!(c.filters.owners, vec!["A|1", "B"]);
        assert!(c.tanium.http.verify_tls);
        for (v, want) in [
            (json!("TRUE"), true),
            (json!("false"), false),
            (json!(["true"]), true),
        ] {
            let c = JobConfig::from_params(&with(good(), "tc_verify", v)).unwrap();
            assert_eq!(c.tc.http.verify_tls, want);
        }
    }

    #[test]
    fn a_tql_that_could_escape_the_jobs_bounds_is_refused_naming_the_param_and_position() {
        let e = JobConfig::from_params(&with(
            good(),
            "tql",
            json!("  rating >= 5) OR (rating >= 99"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("TQL has a ')' at position 12 with no '(' before it"),
            "{e}"
        );
        let c = JobConfig::from_params(&with(
            good(),
            "tql",
            json!("(rating >= 5) OR (rating >= 99)"),
        ))
        .unwrap();
        assert_eq!(
            c.filters.tql.as_deref(),
            Some("(rating >= 5) OR (rating >= 99)")
        );
    }

    /// install.json's notes say how to enter a tag that holds a comma: the whole value as a
    /// JSON list, in the text field or in one entry of a multiple one.
    #[test]
    fn a_tag_with_a_comma_is_entered_as_a_json_list() {
        for v in [
            json!(r#"["APT, Group 1", "crime"]"#),
            json!([r#"["APT, Group 1", "crime"]"#]),
        ] {
            let c = JobConfig::from_params(&with(good(), "include_tags", v.clone())).unwrap();
            assert_eq!(c.filters.include_tags, vec!["APT, Group 1", "crime"], "{v}");
            let c = JobConfig::from_params(&with(good(), "exclude_tags", v.clone())).unwrap();
            assert_eq!(c.filters.exclude_tags, vec!["APT, Group 1", "crime"], "{v}");
        }
        let c =
            JobConfig::from_params(&with(good(), "include_tags", json!("APT, Group 1"))).unwrap();
        assert_eq!(c.filters.include_tags, vec!["APT", "Group 1"]);
    }
}
