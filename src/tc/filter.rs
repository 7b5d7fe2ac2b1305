//! The job's indicator filters, and their client-side evaluation with exactly the meaning of
//! the TQL that [`crate::tc::tql::build`] emits, plus the exclude tags that TQL does not carry.
//!
//! The sync runs every received indicator through [`Filters::matches`]: an indicator that does
//! not match (an excluded tag, or it stopped qualifying) must not be in Tanium.

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::tc::model::{Indicator, IndicatorType};
use crate::tc::tql::{effective_types, user_tql};

/// The job's indicator filters (ignored, except types, when `tql` is set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    /// Owner names; empty means every owner the API user can read.
    pub owners: Vec<String>,
    /// Types to send; never empty (defaults to all three).
    pub types: Vec<IndicatorType>,
    /// Send only indicators with at least one of these tags (empty: no restriction).
    pub include_tags: Vec<String>,
    /// Never send indicators with any of these tags.
    pub exclude_tags: Vec<String>,
    /// Minimum ThreatAssess score, 0..=1000.
    pub min_threatassess_score: Option<u32>,
    /// Minimum confidence, 0..=100.
    pub min_confidence: Option<u32>,
    /// Minimum threat rating, 0..=5.
    pub min_rating: Option<u32>,
    /// Maximum false positive count.
    pub max_false_positives: Option<u32>,
    /// User TQL that replaces all of the above except the type restriction.
    pub tql: Option<String>,
}

/// Tag names compare case-insensitively, as TQL's `hasTag(summary ...)` does.
fn tag_key(s: &str) -> String {
    s.to_lowercase()
}

fn has_any_tag_named(tag: &str, wanted: &[String]) -> bool {
    let key = tag_key(tag);
    wanted.iter().any(|w| tag_key(w) == key)
}

fn has_any_tag(ind: &Indicator, wanted: &[String]) -> bool {
    ind.tags.iter().any(|t| has_any_tag_named(t, wanted))
}

/// `value >= min`, where a minimum of 0 restricts nothing and an unset value meets no positive minimum.
fn at_least(value: Option<f64>, min: Option<u32>) -> bool {
    match min {
        None | Some(0) => true,
        Some(m) => value.is_some_and(|v| v >= f64::from(m)),
    }
}

fn shown(v: Option<f64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

impl Filters {
    /// A short stable hash of the filter set, so the sync notices when the job's filters
    /// changed; the order of owners, types and tags does not matter.
    pub fn fingerprint(&self) -> String {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        let mut types: Vec<&str> = self.types.iter().map(|t| t.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let canonical = json!({
            "v": 1,
            "owners": sorted(&self.owners),
            "types": types,
            "include_tags": sorted(&self.include_tags),
            "exclude_tags": sorted(&self.exclude_tags),
            "min_threatassess_score": self.min_threatassess_score,
            "min_confidence": self.min_confidence,
            "min_rating": self.min_rating,
            "max_false_positives": self.max_false_positives,
            "tql": self.tql.as_deref().map(str::trim),
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the job sends this indicator: type, owners, include / exclude tags, minimums,
    /// maximum false positives and active status, as the job's TQL means them.
    pub fn matches(&self, ind: &Indicator) -> bool {
        self.rejection(ind).is_none()
    }

    /// Why the job does not send this indicator (None: it does), in words for the plan and log.
    ///
    /// With user TQL only the type and the active status can be checked here (user TQL is
    /// evaluated by ThreatConnect alone); everything else TC returned for it is accepted.
    // One early return per filter: the first that leaves an indicator out is the one it is
    // counted under.
    pub fn rejection(&self, ind: &Indicator) -> Option<Rejection> {
        let no = |filter, detail: String| Some(Rejection { filter, detail });
        let Some(kind) = ind.kind() else {
            return no(
                "Indicator Types",
                format!("type {} is never sent", ind.type_name),
            );
        };
        if !ind.active {
            return no("inactive", "inactive in ThreatConnect".into());
        }
        if !effective_types(self).contains(&kind) {
            return no(
                "Indicator Types",
                format!("type {kind} is not among the Indicator Types"),
            );
        }
        if user_tql(self).is_some() {
            return None;
        }
        if !self.owners.is_empty() && !self.owners.contains(&ind.owner_name) {
            return no(
                "ThreatConnect Owners",
                format!("owner {} is not among the Owners", ind.owner_name),
            );
        }
        if !self.include_tags.is_empty() && !has_any_tag(ind, &self.include_tags) {
            return no("Include Tags", "has none of the Include Tags".into());
        }
        if let Some(t) = ind
            .tags
            .iter()
            .find(|t| has_any_tag_named(t, &self.exclude_tags))
        {
            return no("Exclude Tags", format!("has the exclude tag {t}"));
        }
        let score = Some(ind.threat_assess_score.unwrap_or(0) as f64);
        let confidence = ind.confidence.map(|c| c as f64);
        let minimums = [
            (
                "Minimum ThreatAssess Score",
                "ThreatAssess score",
                score,
                self.min_threatassess_score,
            ),
            (
                "Minimum Confidence Rating",
                "confidence",
                confidence,
                self.min_confidence,
            ),
            (
                "Minimum Threat Rating",
                "rating",
                ind.rating,
                self.min_rating,
            ),
        ];
        for (filter, what, value, min) in minimums {
            if !at_least(value, min) {
                return no(
                    filter,
                    format!(
                        "{what} {} is below the minimum {}",
                        shown(value),
                        min.unwrap_or(0)
                    ),
                );
            }
        }
        match self.max_false_positives {
            Some(max) if ind.false_positives.unwrap_or(0) > i64::from(max) => no(
                "Maximum False Positive Count",
                format!(
                    "{} false positives, above the maximum {max}",
                    ind.false_positives.unwrap_or(0)
                ),
            ),
            _ => None,
        }
    }
}

/// Why the job's filters leave an indicator out: which filter (by the label the admin sees,
/// or `inactive`), and the details for the plan and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub filter: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn user_tql_only_checks_that_the_type_can_be_sent() {
        let f = Filters {
            owners: vec!["Other".into()],
            types: vec![IndicatorType::Address],
            tql: Some("rating > 4".into()),
            ..Filters::default()
        };
        assert!(f.matches(&ind()), "TQL overrides Indicator Types");
        assert!(!f.matches(&Indicator {
            type_name: "URL".into(),
            ..ind()
        }));
    }

    #[test]
    fn rejections_say_why() {
        let why = |f: Filters, i: Indicator| f.rejection(&i).map(|r| r.detail).unwrap_or_default();
        let d = Filters::default;
        assert_eq!(
            why(
                d(),
                Indicator {
                    active: false,
                    ..ind()
                }
            ),
            "inactive in ThreatConnect"
        );
        let exc = Filters {
            exclude_tags: vec!["apt".into()],
            ..d()
        };
        assert_eq!(why(exc, ind()), "has the exclude tag APT");
        let inc = Filters {
            include_tags: vec!["C2".into()],
            ..d()
        };
        assert_eq!(why(inc, ind()), "has none of the Include Tags");
        let conf = Filters {
            min_confidence: Some(70),
            ..d()
        };
        assert_eq!(why(conf, ind()), "confidence 60 is below the minimum 70");
        let fp = Filters {
            max_false_positives: Some(0),
            ..d()
        };
        assert_eq!(why(fp, ind()), "1 false positives, above the maximum 0");
        let owner = Filters {
            owners: vec!["X".into()],
            ..d()
        };
        assert_eq!(why(owner, ind()), "owner Org is not among the Owners");
        assert_eq!(d().rejection(&ind()), None);
    }

    #[test]
    fn fingerprint_is_stable_order_free_and_sensitive() {
        let f = Filters {
            owners: vec!["B".into(), "A".into()],
            types: vec![IndicatorType::Host, IndicatorType::Address],
            include_tags: vec!["x".into()],
            min_confidence: Some(50),
            ..Filters::default()
        };
        let mut g = f.clone();
        g.owners.reverse();
        g.types.reverse();
        assert_eq!(f.fingerprint(), g.fingerprint());
        assert_eq!(f.fingerprint().len(), 16);
        let changes: [fn(&mut Filters); 9] = [
            (|f| f.owners.push("C".into())),
            (|f| f.types.push(IndicatorType::File)),
            (|f| f.include_tags.clear()),
            (|f| f.exclude_tags.push("x".into())),
            (|f| f.min_confidence = Some(51)),
            (|f| f.min_rating = Some(1)),
            (|f| f.min_threatassess_score = Some(1)),
            (|f| f.max_false_positives = Some(0)),
            (|f| f.tql = Some("rating > 1".into())),
        ];
        for change in changes {
            let mut h = f.clone();
            change(&mut h);
            assert_ne!(f.fingerprint(), h.fingerprint(), "{h:?}");
        }
    }
}
