//! The safety rails: what is never sent, how much a run may remove, the cap, the age window,
//! and whether the job deploys.

use crate::param_names as pn;
use crate::params::RawParams;
use crate::safety::{Guard, NeverSend, Rails, DEFAULT_MAX_REMOVAL_PERCENT};

use super::value::{boolean, list, spec_whole, Problems};

/// Largest Maximum Indicator Age: a century.
const MAX_AGE_DAYS: u32 = 36_500;

/// The rails; a bad param is recorded and reads as its default.
pub(super) fn rails(raw: &RawParams, p: &mut Problems) -> Rails {
    let flag = |spec: pn::ParamSpec| boolean(raw, &[spec.name], spec.label, true);
    let never_send = p.take(list(raw, pn::NEVER_SEND, true).and_then(|entries| {
        NeverSend::parse(&entries).map_err(|e| format!("{} {e}", pn::NEVER_SEND.label))
    }));
    Rails {
        guard: Guard {
            safeguards: p.take(flag(pn::SAFEGUARDS).map(Some)).unwrap_or(true),
            never_send,
        },
        max_removal_percent: p
            .take(spec_whole(raw, pn::MAX_REMOVAL_PERCENT, 0, 100))
            .unwrap_or(DEFAULT_MAX_REMOVAL_PERCENT),
        max_indicators: p
            .take(spec_whole(raw, pn::MAX_INDICATORS, 1, u32::MAX))
            .map(u64::from),
        max_indicator_age_days: p.take(spec_whole(
            raw,
            pn::MAX_INDICATOR_AGE_DAYS,
            1,
            MAX_AGE_DAYS,
        )),
        honor_exclusion_lists: p
            .take(flag(pn::HONOR_EXCLUSION_LISTS).map(Some))
            .unwrap_or(true),
        honor_expiry: p.take(flag(pn::HONOR_EXPIRY).map(Some)).unwrap_or(true),
        deploy_intel: p.take(flag(pn::DEPLOY_INTEL).map(Some)).unwrap_or(true),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::config::tests::{good, with};
    use crate::config::JobConfig;

    #[test]
    fn defaults_are_on_and_every_rail_is_read() {
        let c = JobConfig::from_params(&good()).unwrap();
        assert!(c.rails.guard.safeguards && c.rails.deploy_intel);
        assert!(c.rails.honor_exclusion_lists && c.rails.honor_expiry);
        assert_eq!(c.rails.max_removal_percent, 50);
        assert_eq!(
            (c.rails.max_indicators, c.rails.max_indicator_age_days),
            (None, None)
        );
        let r = [
            ("safeguards", json!(false)),
            (
                "never_send",
                json!("10.0.0.0/8, corp.example|d41d8cd98f00b204e9800998ecf8427e"),
            ),
            ("max_removal_percent", json!("100")),
            ("max_indicators", json!("5000")),
            ("max_indicator_age_days", json!("90")),
            ("deploy_intel", json!("false")),
            ("honor_exclusion_lists", json!(false)),
            ("honor_expiry", json!("false")),
        ]
        .into_iter()
        .fold(good(), |r, (k, v)| with(r, k, v));
        let c = JobConfig::from_params(&r).unwrap();
        assert!(!c.rails.guard.safeguards && !c.rails.deploy_intel);
        assert!(!c.rails.honor_exclusion_lists && !c.rails.honor_expiry);
        assert_eq!(c.rails.guard.never_send.canonical().len(), 3);
        assert_eq!(c.rails.max_removal_percent, 100);
        assert_eq!(c.rails.max_indicators, Some(5000));
        assert_eq!(c.rails.max_indicator_age_days, Some(90));
        let shown = c.redacted_json();
        assert_eq!(shown["rails"]["never_send"][1], "corp.example");
    }

    #[test]
    fn bad_rails_name_their_label() {
        for (k, v, want) in [
            (
                "never_send",
                json!("10.0.0.0/40"),
                "Never Send '10.0.0.0/40' is not",
            ),
            (
                "max_removal_percent",
                json!("101"),
                "Maximum Removal Percent must be a whole number from 0 to 100",
            ),
            (
                "max_indicators",
                json!("0"),
                "Maximum Indicators must be a whole number, 1 or more",
            ),
            (
                "max_indicator_age_days",
                json!("x"),
                "Maximum Indicator Age (days) must be",
            ),
            (
                "safeguards",
                json!("maybe"),
                "Block Unsafe Indicators must be true or false",
            ),
            (
                "honor_exclusion_lists",
                json!("sometimes"),
                "Honor Exclusion Lists must be true or false",
            ),
            (
                "honor_expiry",
                json!(2),
                "Honor Expiry must be true or false",
            ),
        ] {
            let e = JobConfig::from_params(&with(good(), k, v))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{k}: {e}");
        }
    }
}
