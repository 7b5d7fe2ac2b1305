//! Indicators as the ThreatConnect v3 API returns them, typed and tolerant of missing or extra fields.

use serde::{Deserialize, Deserializer};
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::OffsetDateTime;

/// The three indicator types this app sends to Tanium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndicatorType {
    /// An IPv4 or IPv6 address.
    Address,
    /// A file, by its MD5 / SHA1 / SHA256 hashes.
    File,
    /// A host name (FQDN).
    Host,
}

impl IndicatorType {
    /// All types, in the order TQL lists them.
    pub const ALL: [IndicatorType; 3] = [
        IndicatorType::Address,
        IndicatorType::File,
        IndicatorType::Host,
    ];

    /// The TC `typeName`.
    pub fn as_str(self) -> &'static str {
        match self {
            IndicatorType::Address => "Address",
            IndicatorType::File => "File",
            IndicatorType::Host => "Host",
        }
    }

    /// Parses a TC `typeName` (case-insensitive); `None` for types this app does not send.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "address" => Some(IndicatorType::Address),
            "file" => Some(IndicatorType::File),
            "host" => Some(IndicatorType::Host),
            _ => None,
        }
    }
}

impl serde::Serialize for IndicatorType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for IndicatorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One v3 indicator with the fields the sync and the renderers need.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Indicator {
    /// TC's numeric id (unique per owner and value); 0 when the record has none.
    #[serde(deserialize_with = "lenient_id")]
    pub id: i64,
    /// Owner id.
    #[serde(deserialize_with = "lenient_i64")]
    pub owner_id: Option<i64>,
    pub owner_name: String,
    /// `typeName` as TC sends it (user TQL may select other types; those are dropped).
    #[serde(rename = "type")]
    pub type_name: String,
    /// The indicator value as TC displays it (File: hashes joined by " : ").
    pub summary: String,
    /// Address value.
    pub ip: Option<String>,
    /// Host value.
    pub host_name: Option<String>,
    /// File MD5.
    pub md5: Option<String>,
    /// File SHA1.
    pub sha1: Option<String>,
    /// File SHA256.
    pub sha256: Option<String>,
    /// Threat rating, 0-5 (a decimal in JSON).
    #[serde(deserialize_with = "lenient_f64")]
    pub rating: Option<f64>,
    /// Confidence, 0-100.
    #[serde(deserialize_with = "lenient_i64")]
    pub confidence: Option<i64>,
    /// ThreatAssess score, 0-1000 (with `fields=threatAssess`).
    #[serde(deserialize_with = "lenient_i64")]
    pub threat_assess_score: Option<i64>,
    /// False positive count (with `fields=falsePositives`).
    #[serde(deserialize_with = "lenient_i64")]
    pub false_positives: Option<i64>,
    /// Tag names (with `fields=tags`).
    #[serde(deserialize_with = "tag_names")]
    pub tags: Vec<String>,
    /// The TC description.
    pub description: Option<String>,
    /// Link to the indicator in the TC UI.
    pub web_link: Option<String>,
    /// When it was added, as TC sends it.
    pub date_added: Option<String>,
    /// When it was last modified, as TC sends it (`YYYY-MM-DDTHH:MM:SSZ`).
    pub last_modified: String,
    /// Active status; TC omits inactive indicators unless asked, so absent means active.
    #[serde(deserialize_with = "default_true")]
    pub active: bool,
    /// When its source says it stops being valid (with `fields=externalDates`), as TC sends it.
    pub external_date_expires: Option<String>,
    /// Its document leaves out what an observation may change (`lastModified`, the
    /// ThreatAssess score): set on the pull while Report Tanium Detections is on, so that the
    /// job's own observation never rewrites (and deploys) the document.
    #[serde(skip)]
    pub leave_out_observed: bool,
}

impl Default for Indicator {
    fn default() -> Self {
        Indicator {
            id: 0,
            owner_id: None,
            owner_name: String::new(),
            type_name: String::new(),
            summary: String::new(),
            ip: None,
            host_name: None,
            md5: None,
            sha1: None,
            sha256: None,
            rating: None,
            confidence: None,
            threat_assess_score: None,
            false_positives: None,
            tags: Vec::new(),
            description: None,
            web_link: None,
            date_added: None,
            last_modified: String::new(),
            active: true,
            external_date_expires: None,
            leave_out_observed: false,
        }
    }
}

impl Indicator {
    /// The app's type for this indicator, `None` when it is not Address, File or Host.
    pub fn kind(&self) -> Option<IndicatorType> {
        IndicatorType::parse(&self.type_name)
    }

    /// `lastModified` as an instant, when it parses (RFC 3339 or ISO 8601).
    pub fn last_modified_at(&self) -> Option<OffsetDateTime> {
        let raw = self.last_modified.trim();
        OffsetDateTime::parse(raw, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(raw, &Iso8601::DEFAULT))
            .ok()
    }

    /// `externalDateExpires` as an instant; None when unset, blank or not a date (an expiry
    /// the job cannot read expires nothing).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        let raw = self.external_date_expires.as_deref()?.trim();
        OffsetDateTime::parse(raw, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(raw, &Iso8601::DEFAULT))
            .ok()
    }

    /// Why this record cannot be read as an indicator at all (as opposed to an indicator with
    /// an invalid value): no id, no type, no value or no usable `lastModified`. Such a record
    /// is schema drift, not "no data", so the pull that met it is incomplete.
    pub fn unreadable(&self) -> Option<&'static str> {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim().is_empty());
        if self.id <= 0 {
            Some("it has no numeric id")
        } else if self.type_name.trim().is_empty() {
            Some("it has no type")
        } else if self.summary.trim().is_empty()
            && [
                &self.ip,
                &self.host_name,
                &self.md5,
                &self.sha1,
                &self.sha256,
            ]
            .into_iter()
            .all(blank)
        {
            Some("it has no value (summary)")
        } else if self.last_modified_at().is_none() {
            Some("it has no readable lastModified")
        } else {
            None
        }
    }
}

/// An id that may arrive as a number or a numeric string; anything else is 0 (no id).
pub(super) fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(lenient_i64(d)?.unwrap_or(0))
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()),
        Some(serde_json::Value::String(s)) => {
            s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    })
}

pub(super) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    })
}

pub(super) fn default_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Bool(b)) => b,
        Some(serde_json::Value::String(s)) => !s.eq_ignore_ascii_case("false"),
        _ => true,
    })
}

fn tag_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Tag {
        #[serde(default)]
        name: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        Wrapped {
            #[serde(default)]
            data: Vec<Tag>,
        },
        Bare(Vec<Tag>),
        Other(#[allow(dead_code)] serde_json::Value),
    }
    Ok(match Option::<Tags>::deserialize(d)? {
        Some(Tags::Wrapped { data }) | Some(Tags::Bare(data)) => {
            data.into_iter().filter_map(|t| t.name).collect()
        }
        _ => Vec::new(),
    })
}

/// An indicator TC reports as deleted (`/v3/indicators/deleted`). Real records carry no id and
/// no deletion date: `{"ownerName", "dateAdded", "type", "summary"}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct DeletedIndicator {
    pub owner_name: String,
    /// `typeName`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The value it had.
    pub summary: String,
    /// When the indicator was added, as TC sends it.
    pub date_added: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_v3_shapes_and_tolerates_unknown_fields() {
        let j = r#"{"id": 3, "ownerId": 1, "ownerName": "Demo Organization", "dateAdded": "2021-10-26T12:40:00Z",
          "webLink": "https://x/#/details/indicators/3/overview", "type": "Host",
          "lastModified": "2021-11-02T14:58:55Z", "rating": 3.00, "confidence": 74, "description": "A bad host.",
          "summary": "badguy.com", "privateFlag": false, "active": true, "hostName": "badguy.com",
          "threatAssessScore": 405, "falsePositives": 2, "somethingNew": {"x": 1},
          "tags": {"data": [{"id": 11, "name": "Targeted Attack"}, {"id": 13, "name": "APT"}]}}"#;
        let i: Indicator = serde_json::from_str(j).unwrap();
        assert_eq!(i.kind(), Some(IndicatorType::Host));
        assert_eq!(i.host_name.as_deref(), Some("badguy.com"));
        assert_eq!(i.rating, Some(3.0));
        assert_eq!(i.tags, vec!["Targeted Attack", "APT"]);
        assert_eq!(i.false_positives, Some(2));
        let min: Indicator =
            serde_json::from_str(r#"{"id":1,"type":"Address","summary":"1.2.3.4"}"#).unwrap();
        assert!(min.active);
        assert!(min.tags.is_empty());
        assert_eq!(min.rating, None);
    }

    #[test]
    fn an_expiry_is_read_when_it_is_a_date_and_expires_nothing_otherwise() {
        let at = |v: Option<&str>| {
            Indicator {
                external_date_expires: v.map(str::to_string),
                ..Indicator::default()
            }
            .expires_at()
        };
        let i: Indicator = serde_json::from_str(
            r#"{"id":1,"type":"Host","summary":"a.b","externalDateExpires":"2026-02-01T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            i.expires_at(),
            Some(time::macros::datetime!(2026-02-01 10:00:00 UTC))
        );
        assert_eq!(
            at(Some("2026-02-01T10:00:00.250Z")).map(|t| t.unix_timestamp()),
            Some(1_769_940_000)
        );
        assert_eq!(at(Some("")), None);
        assert_eq!(at(Some("soon")), None);
        assert_eq!(at(None), None);
    }

    #[test]
    fn unreadable_records_are_told_apart_from_invalid_values() {
        let ok: Indicator = serde_json::from_str(
            r#"{"id":"7","type":"Address","summary":"not an ip","lastModified":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!((ok.id, ok.unreadable()), (7, None));
        for (json, why) in [
            (
                r#"{"type":"Host","summary":"a.b","lastModified":"2026-01-01T00:00:00Z"}"#,
                "it has no numeric id",
            ),
            (
                r#"{"id":"x7","type":"Host","summary":"a.b","lastModified":"2026-01-01T00:00:00Z"}"#,
                "it has no numeric id",
            ),
            (
                r#"{"id":1,"typeName":"Host","summary":"a.b","lastModified":"2026-01-01T00:00:00Z"}"#,
                "it has no type",
            ),
            (
                r#"{"id":1,"type":"Host","lastModified":"2026-01-01T00:00:00Z"}"#,
                "it has no value (summary)",
            ),
            (
                r#"{"id":1,"type":"Host","summary":"a.b","lastModified":"yesterday"}"#,
                "it has no readable lastModified",
            ),
        ] {
            let i: Indicator = serde_json::from_str(json).unwrap();
            assert_eq!(i.unreadable(), Some(why), "{json}");
        }
    }
}
