//! The ThreatConnect side: request signing, TQL, the indicator model and the paging client.

pub mod auth;
pub mod model;
