//! tanium-tr-indicators: a ThreatConnect Job App that keeps a Tanium Threat Response intel
//! source in step with the Address, File and Host indicators a job's filters select.

pub mod app;
pub mod check;
pub mod cli;
pub mod clients;
pub mod compact;
pub mod config;
#[cfg(feature = "sim")]
pub mod demo;
pub mod detections;
pub mod error;
pub mod exclusions;
pub mod http;
pub mod intel;
pub mod job;
pub mod label_rules;
pub mod package;
/// The one list of param names and labels the code reads; build.rs checks it against install.json.
pub mod param_names;
pub mod params;
pub mod platform;
pub mod safety;
pub mod secret;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sync;
pub mod tanium;
pub mod tc;
pub mod words;

pub use error::{Error, Result};
