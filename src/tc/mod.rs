//! The ThreatConnect side: request signing, TQL, the indicator model and the paging client.

pub mod auth;
pub mod client;
pub mod filter;
pub mod model;
pub mod tql;
