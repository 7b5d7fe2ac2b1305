//! The one place the two clients are built, both with the run's retry policy. ThreatConnect's
//! is built once: the client that resolved the job's variables also runs the job, with the
//! token it may have renewed on the way.

use std::cell::OnceCell;

use crate::error::Result;
use crate::http::RetryPolicy;
use crate::tanium::{self, TaniumClient};
use crate::tc::{self, client::TcClient};

/// Builds the clients of one run.
#[derive(Debug)]
pub struct Clients {
    policy: RetryPolicy,
    tc: OnceCell<TcClient>,
}

impl Clients {
    /// No client yet; each is built when first asked for.
    pub fn new(policy: RetryPolicy) -> Clients {
        Clients {
            policy,
            tc: OnceCell::new(),
        }
    }

    /// The retry policy both clients follow.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The ThreatConnect client, built from `settings` on first use; a run reads its TC side
    /// once, so later calls pass the same settings.
    pub fn tc(&self, settings: &tc::Settings) -> Result<&TcClient> {
        if let Some(client) = self.tc.get() {
            return Ok(client);
        }
        let client = TcClient::new(settings, self.policy.clone())?;
        Ok(self.tc.get_or_init(|| client))
    }

    /// A Tanium client, logged in and with its API generation known.
    pub fn tanium(&self, settings: &tanium::Settings) -> Result<TaniumClient> {
        TaniumClient::connect(settings, self.policy.clone())
    }
}
