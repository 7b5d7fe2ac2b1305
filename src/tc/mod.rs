//! The ThreatConnect side: its settings, request signing, TQL, the job filters, the indicator
//! model and the paging client.

pub mod auth;
pub mod client;
pub mod filter;
pub mod model;
mod settings;
pub mod tql;

pub use filter::Filters;
pub use settings::{Auth, Settings};
