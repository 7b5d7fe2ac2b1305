//! In-repo simulators of the ThreatConnect v3 API and the Tanium TR intel API, shared by the
//! tests, the benchmark and the built-in demo.

pub mod alerts;
pub mod bench;
pub mod dataset;
pub mod lab;
pub mod server;
pub mod tanium;
pub mod tc;
pub mod tc_exclusions;
pub mod tql_eval;
