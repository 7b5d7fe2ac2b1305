//! Tanium Threat Response objects as the intel API returns them (both API generations).

use serde::Deserialize;

/// Which Threat Response REST generation the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiGeneration {
    /// TR 3.x / Detect: `/plugin/products/detect3/api/v1`, bare JSON.
    V3,
    /// TR 4.x: `/plugin/products/threat-response/api/v1`, `{"data": ...}` envelope, explicit deploy.
    V4,
}

impl ApiGeneration {
    /// The intel API base path.
    pub fn base_path(self) -> &'static str {
        match self {
            ApiGeneration::V3 => "/plugin/products/detect3/api/v1",
            ApiGeneration::V4 => "/plugin/products/threat-response/api/v1",
        }
    }
}

/// An intel source.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    /// Source id.
    pub id: i64,
    /// Source name (matched exactly).
    pub name: String,
    /// Source type, e.g. `api-client`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// The listing view of one intel document: enough to decide create / update / skip / delete.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct IntelDoc {
    /// Tanium's document id.
    pub id: i64,
    /// Source the document belongs to.
    pub source_id: Option<i64>,
    /// Document name (STIX Indicator Title / OpenIOC short_description).
    pub name: String,
    /// Document description.
    pub description: Option<String>,
    /// The id the document claims (our deterministic identity).
    pub intrinsic_id: Option<String>,
    /// MD5 of the stored content.
    pub md5: Option<String>,
    /// Number of content revisions.
    pub revision_id: Option<i64>,
    /// `stix`, `openioc`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Stored size in bytes.
    pub size: Option<i64>,
}
