//! Which Tanium labels a document carries, decided from its indicator and the job's label
//! params alone: the job's own labels (Tanium Labels), labels named after the indicator's tags
//! (Tags as Labels) and one label per ThreatAssess band. Pure: names only; the sync maps names
//! to Tanium's label ids and reconciles.
//!
//! Label names compare case-insensitively, as TC tags do. How Tanium compares them is
//! UNCONFIRMED; comparing without case never makes a second label a case-insensitive server
//! would refuse, and on a case-sensitive one it reuses the label an admin already made.
//!
//! Which labels the job manages (may add and remove) is said by rule tokens (`label:<name>`,
//! `tag:<name>`, `tag:<prefix>*`, `threatassess:v1`), which the checkpoint keeps between runs,
//! so the rules of earlier runs still say which labels are the job's after the params change.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::tc::model::Indicator;

/// ThreatConnect does not publish ThreatAssess bands (only the 0-1000 score), so these are the
/// app's own: four equal quarters, each the lowest score of its band.
pub const BANDS: [(i64, &str); 4] = [
    (750, "ThreatAssess Critical"),
    (500, "ThreatAssess High"),
    (250, "ThreatAssess Medium"),
    (0, "ThreatAssess Low"),
];

/// Changes whenever [`BANDS`] do, so that documents labelled by other bands are relabelled.
const BANDS_TOKEN: &str = "threatassess:v1";

/// Default of Tanium Labels: what every document of the job carries unless the job says not.
pub const DEFAULT_LABEL: &str = "ThreatConnect";

pub fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The band label of a ThreatAssess score; none for an indicator TC has not scored.
pub fn band(score: Option<i64>) -> Option<&'static str> {
    let score = score?;
    BANDS
        .iter()
        .find(|(lowest, _)| score >= *lowest)
        .map(|(_, name)| *name)
}

/// One entry of Tags as Labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagRule {
    Exact(String),
    /// `apt*`: every tag starting with `apt`.
    Prefix(String),
}

impl TagRule {
    pub fn parse(entry: &str) -> Result<TagRule, String> {
        let entry = entry.trim();
        check_name(entry)?;
        match entry.strip_suffix('*') {
            Some(prefix) if prefix.trim().is_empty() => {
                Err("'*' alone would make every tag a label: name the tags or prefixes".into())
            }
            Some(prefix) if prefix.contains('*') => Err(format!(
                "'{entry}' has a '*' before its end: only `prefix*` is supported"
            )),
            Some(prefix) => Ok(TagRule::Prefix(key(prefix))),
            None if entry.contains('*') => Err(format!(
                "'{entry}' has a '*' before its end: only `prefix*` is supported"
            )),
            None => Ok(TagRule::Exact(key(entry))),
        }
    }

    fn matches(&self, tag_key: &str) -> bool {
        match self {
            TagRule::Exact(k) => tag_key == k,
            TagRule::Prefix(p) => tag_key.starts_with(p.as_str()),
        }
    }

    fn token(&self) -> String {
        match self {
            TagRule::Exact(k) => format!("tag:{k}"),
            TagRule::Prefix(p) => format!("tag:{p}*"),
        }
    }
}

/// Names Tanium will hold: not blank, no control characters (they would not survive results.tc
/// and the console).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a label name is empty".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "'{}' holds a control character",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// The job's label params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LabelRules {
    /// Tanium Labels: on every document.
    pub fixed: Vec<String>,
    /// Tags as Labels.
    pub tags: Vec<TagRule>,
    /// ThreatAssess Labels.
    pub threatassess: bool,
}

impl LabelRules {
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.tags.is_empty() && !self.threatassess
    }

    /// The labels `ind`'s document must carry, each name once (compared without case; the
    /// first spelling wins: the job's own labels, then the tags as TC spells them, then the
    /// band).
    pub fn for_indicator(&self, ind: &Indicator) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut push = |name: &str| {
            if seen.insert(key(name)) {
                out.push(name.trim().to_string());
            }
        };
        for f in &self.fixed {
            push(f);
        }
        for tag in &ind.tags {
            let k = key(tag);
            if check_name(tag).is_ok() && self.tags.iter().any(|r| r.matches(&k)) {
                push(tag);
            }
        }
        if self.threatassess {
            if let Some(b) = band(ind.threat_assess_score) {
                push(b);
            }
        }
        out
    }

    /// The rules as sorted tokens: what the checkpoint keeps to know, after the params change,
    /// which labels were the job's.
    pub fn tokens(&self) -> BTreeSet<String> {
        let mut t: BTreeSet<String> = self
            .fixed
            .iter()
            .map(|f| format!("label:{}", key(f)))
            .collect();
        t.extend(self.tags.iter().map(TagRule::token));
        if self.threatassess {
            t.insert(BANDS_TOKEN.to_string());
        }
        t
    }

    /// A short hash of the rules ("" when there are none): a change means every document's
    /// labels must be looked at again.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.tokens())
    }

    /// Names this job would put on some document whatever its indicator is (the job's own
    /// labels and the bands), for `check`.
    pub fn known_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fixed.clone();
        if self.threatassess {
            names.extend(BANDS.iter().rev().map(|(_, n)| n.to_string()));
        }
        names.extend(self.tags.iter().filter_map(|r| match r {
            TagRule::Exact(k) => Some(k.clone()),
            TagRule::Prefix(_) => None,
        }));
        names
    }
}

pub fn fingerprint_of(tokens: &BTreeSet<String>) -> String {
    use sha2::{Digest, Sha256};
    if tokens.is_empty() {
        return String::new();
    }
    let joined: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let digest = Sha256::digest(joined.join("\n").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Which label names are the job's: those the rules of this run and of earlier runs (whose
/// labels may still be on documents) would give some document. Labels outside it (added by
/// hand, or by another integration) are never removed.
#[derive(Debug, Clone, Default)]
pub struct Managed {
    exact: BTreeSet<String>,
    prefixes: Vec<String>,
}

impl Managed {
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a String>) -> Managed {
        let mut m = Managed::default();
        for t in tokens {
            if let Some(name) = t.strip_prefix("label:") {
                m.exact.insert(name.to_string());
            } else if let Some(rule) = t.strip_prefix("tag:") {
                match rule.strip_suffix('*') {
                    Some(p) => m.prefixes.push(p.to_string()),
                    None => {
                        m.exact.insert(rule.to_string());
                    }
                }
            } else if t.starts_with("threatassess:") {
                // Any version: labels of older bands are the job's too.
                m.exact.extend(BANDS.iter().map(|(_, n)| key(n)));
            }
        }
        m
    }

    pub fn manages(&self, name: &str) -> bool {
        let k = key(name);
        self.exact.contains(&k) || self.prefixes.iter().any(|p| k.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(tags: &[&str], score: Option<i64>) -> Indicator {
        Indicator {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            threat_assess_score: score,
            ..Indicator::default()
        }
    }

    fn rules(fixed: &[&str], tags: &[&str], threatassess: bool) -> LabelRules {
        LabelRules {
            fixed: fixed.iter().map(|f| f.to_string()).collect(),
            tags: tags.iter().map(|t| TagRule::parse(t).unwrap()).collect(),
            threatassess,
        }
    }

    #[test]
    fn bands_are_quarters_of_the_score_and_an_unscored_indicator_has_none() {
        for (score, want) in [
            (Some(0), Some("ThreatAssess Low")),
            (Some(249), Some("ThreatAssess Low")),
            (Some(250), Some("ThreatAssess Medium")),
            (Some(499), Some("ThreatAssess Medium")),
            (Some(500), Some("ThreatAssess High")),
            (Some(749), Some("ThreatAssess High")),
            (Some(750), Some("ThreatAssess Critical")),
            (Some(1000), Some("ThreatAssess Critical")),
            (None, None),
            (Some(-5), None),
        ] {
            assert_eq!(band(score), want, "{score:?}");
        }
    }

    #[test]
    fn a_document_gets_the_job_labels_its_matching_tags_and_its_band_each_once() {
        let r = rules(&["ThreatConnect", "apt28"], &["APT*", "Crimeware"], true);
        let got = r.for_indicator(&ind(
            &[
                "APT28",
                "apt-x",
                "Benign",
                "crimeware",
                "CRIMEWARE",
                "Crime",
            ],
            Some(800),
        ));
        assert_eq!(
            got,
            vec![
                "ThreatConnect",
                "apt28",
                "apt-x",
                "crimeware",
                "ThreatAssess Critical"
            ]
        );
        assert_eq!(
            rules(&[], &[], false).for_indicator(&ind(&["APT"], Some(900))),
            Vec::<String>::new()
        );
        // A tag TC would not keep as a name is never a label.
        let bad = rules(&[], &["x*"], false).for_indicator(&ind(&["x\u{7}"], None));
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn tag_rules_take_names_and_trailing_prefixes_only() {
        assert_eq!(
            TagRule::parse(" APT ").unwrap(),
            TagRule::Exact("apt".into())
        );
        assert_eq!(
            TagRule::parse("Apt*").unwrap(),
            TagRule::Prefix("apt".into())
        );
        for bad in ["*", " * ", "a*b", "a**", "*a", "", "a\nb"] {
            assert!(TagRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_fingerprint_follows_the_rules_not_their_order_or_case() {
        let a = rules(&["ThreatConnect", "Pilot"], &["apt*"], false);
        let b = rules(&["pilot", "THREATCONNECT"], &["APT*"], false);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        for other in [
            rules(&["ThreatConnect"], &["apt*"], false),
            rules(&["ThreatConnect", "Pilot"], &["apt"], false),
            rules(&["ThreatConnect", "Pilot"], &["apt*"], true),
            // the same names, from another rule: other documents get them
            rules(&["ThreatConnect", "Pilot", "apt"], &[], false),
        ] {
            assert_ne!(a.fingerprint(), other.fingerprint(), "{other:?}");
        }
        assert_eq!(LabelRules::default().fingerprint(), "");
    }

    #[test]
    fn managed_names_come_from_current_and_earlier_rules() {
        let before = rules(&["Old"], &["crime*"], true).tokens();
        let now = rules(&["ThreatConnect"], &["APT28"], false).tokens();
        let m = Managed::from_tokens(before.iter().chain(now.iter()));
        for name in [
            "old",
            "ThreatConnect",
            "apt28",
            "Crimeware",
            "crime",
            "ThreatAssess High",
        ] {
            assert!(m.manages(name), "{name}");
        }
        for name in ["Pilot", "APT", "ThreatAssess", "xcrime"] {
            assert!(!m.manages(name), "{name}");
        }
    }
}
