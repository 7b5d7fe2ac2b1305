//! The ThreatConnect side: its settings, request signing, TQL, the job filters, the indicator
//! model, the paging client, Indicator Exclusion Lists and the resolution of the job's `&{TC:...}` variables.

mod answer;
pub mod auth;
pub mod client;
pub mod exclusion;
pub mod filter;
pub mod model;
pub mod observations;
pub mod pages;
mod settings;
pub mod tql;
pub mod variables;

pub use filter::Filters;
pub use settings::{Auth, Settings};
