//! Which remote side a request went to, so messages say who failed and what to check.

use std::fmt;

/// Which remote side a request went to, so messages say who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The ThreatConnect v3 API.
    ThreatConnect,
    /// The Tanium server (session API and Threat Response plugin).
    Tanium,
}

impl Service {
    /// Where an admin sets this side's address, for messages that say what to check.
    pub fn address_param(self) -> &'static str {
        match self {
            Service::ThreatConnect => "the platform's API URL (tc_api_path)",
            Service::Tanium => "Tanium Address",
        }
    }

    /// The job param that turns certificate checks off for this side, when the job has one.
    pub fn verify_param(self) -> Option<&'static str> {
        match self {
            Service::ThreatConnect => None,
            Service::Tanium => Some("Verify SSL Cert"),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::ThreatConnect => "ThreatConnect",
            Service::Tanium => "Tanium",
        })
    }
}
