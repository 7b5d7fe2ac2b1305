//! Client-side evaluation of the job filters, with exactly the meaning of the TQL that
//! [`crate::tc::tql::build`] emits, plus the exclude tags that TQL does not carry.
//!
//! The sync runs every received indicator through [`Filters::matches`]: an indicator that does
//! not match (an excluded tag, or it stopped qualifying) must not be in Tanium.

use crate::config::Filters;
use crate::tc::model::Indicator;
use crate::tc::tql::effective_types;

/// Tag names compare case-insensitively, as TQL's `hasTag(summary ...)` does.
fn tag_key(s: &str) -> String {
    s.to_lowercase()
}

fn has_any_tag(ind: &Indicator, wanted: &[String]) -> bool {
    if wanted.is_empty() {
        return false;
    }
    let wanted: Vec<String> = wanted.iter().map(|t| tag_key(t)).collect();
    ind.tags.iter().any(|t| wanted.contains(&tag_key(t)))
}

/// `value >= min`, where a minimum of 0 restricts nothing and an unset value meets no positive minimum.
fn at_least(value: Option<f64>, min: Option<u32>) -> bool {
    match min {
        None | Some(0) => true,
        Some(m) => value.is_some_and(|v| v >= f64::from(m)),
    }
}

impl Filters {
    /// Whether the job sends this indicator: type, owners, include / exclude tags, minimums,
    /// maximum false positives and active status, as the job's TQL means them.
    ///
    /// When `tql` is set only the type restriction and the active status can be checked here
    /// (user TQL is evaluated by ThreatConnect alone); everything TC returned for it is accepted.
    pub fn matches(&self, ind: &Indicator) -> bool {
        let Some(kind) = ind.kind() else {
            return false;
        };
        if !effective_types(self).contains(&kind) || !ind.active {
            return false;
        }
        if self.tql.as_deref().is_some_and(|t| !t.trim().is_empty()) {
            return true;
        }
        if !self.owners.is_empty() && !self.owners.contains(&ind.owner_name) {
            return false;
        }
        if !self.include_tags.is_empty() && !has_any_tag(ind, &self.include_tags) {
            return false;
        }
        if has_any_tag(ind, &self.exclude_tags) {
            return false;
        }
        let score = Some(ind.threat_assess_score.unwrap_or(0) as f64);
        if !at_least(score, self.min_threatassess_score)
            || !at_least(ind.confidence.map(|c| c as f64), self.min_confidence)
            || !at_least(ind.rating, self.min_rating)
        {
            return false;
        }
        match self.max_false_positives {
            Some(max) => ind.false_positives.unwrap_or(0) <= i64::from(max),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::model::IndicatorType;

    fn ind() -> Indicator {
        Indicator {
            id: 1,
            owner_name: "Org".into(),
            type_name: "Host".into(),
            summary: "bad.example".into(),
            host_name: Some("bad.example".into()),
            rating: Some(3.0),
            confidence: Some(60),
            threat_assess_score: Some(400),
            false_positives: Some(1),
            tags: vec!["APT".into(), "Ünï".into()],
            ..Indicator::default()
        }
    }

    #[test]
    fn each_filter_alone() {
        let all = Filters::default();
        assert!(all.matches(&ind()));
        let other_type = Indicator {
            type_name: "URL".into(),
            ..ind()
        };
        assert!(!all.matches(&other_type));
        assert!(!all.matches(&Indicator {
            active: false,
            ..ind()
        }));
        let types = Filters {
            types: vec![IndicatorType::Address],
            ..Filters::default()
        };
        assert!(!types.matches(&ind()));
        let owners = Filters {
            owners: vec!["Other".into()],
            ..Filters::default()
        };
        assert!(!owners.matches(&ind()));
        let inc = Filters {
            include_tags: vec!["apt".into()],
            ..Filters::default()
        };
        assert!(inc.matches(&ind()), "tags compare case-insensitively");
        let inc_uni = Filters {
            include_tags: vec!["ÜNÏ".into()],
            ..Filters::default()
        };
        assert!(inc_uni.matches(&ind()));
        let exc = Filters {
            exclude_tags: vec!["Nope".into(), "APT".into()],
            ..Filters::default()
        };
        assert!(!exc.matches(&ind()));
        for (f, ok) in [
            (
                Filters {
                    min_rating: Some(3),
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    min_rating: Some(4),
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    min_confidence: Some(61),
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    min_threatassess_score: Some(400),
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    min_threatassess_score: Some(401),
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    max_false_positives: Some(0),
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    max_false_positives: Some(1),
                    ..Filters::default()
                },
                true,
            ),
        ] {
            assert_eq!(f.matches(&ind()), ok, "{f:?}");
        }
    }

    #[test]
    fn unset_values() {
        let bare = Indicator {
            rating: None,
            confidence: None,
            threat_assess_score: None,
            false_positives: None,
            ..ind()
        };
        let zero = Filters {
            min_rating: Some(0),
            min_confidence: Some(0),
            min_threatassess_score: Some(0),
            max_false_positives: Some(0),
            ..Filters::default()
        };
        assert!(zero.matches(&bare));
        let one = Filters {
            min_rating: Some(1),
            ..Filters::default()
        };
        assert!(!one.matches(&bare));
    }

    #[test]
    fn user_tql_only_checks_types() {
        let f = Filters {
            owners: vec!["Other".into()],
            types: vec![IndicatorType::Host],
            tql: Some("rating > 4".into()),
            ..Filters::default()
        };
        assert!(f.matches(&ind()));
        assert!(!f.matches(&Indicator {
            type_name: "Address".into(),
            ..ind()
        }));
    }
}
