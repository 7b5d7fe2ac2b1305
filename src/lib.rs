//! tanium-tr-indicators: a ThreatConnect Job App that keeps a Tanium Threat Response intel
//! source in step with the Address, File and Host indicators a job's filters select.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod http;
pub mod intel;
pub mod package;
pub mod secret;
pub mod sim;
pub mod tanium;
pub mod tc;

pub use error::{Error, Result};
