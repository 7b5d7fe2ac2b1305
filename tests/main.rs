//! The integration tests, one binary: each module drives the real library or the real binary
//! against the in-repo simulators on 127.0.0.1. `cargo test --test integration <module>::` runs
//! one module.

mod support;

mod bench_smoke;
mod chaos;
mod check;
mod detections;
mod engine;
mod fuzz;
mod grouped;
mod health;
mod hostile;
mod intel;
mod labels;
mod lease;
mod messages;
mod package;
mod platform;
mod rails;
mod readme;
mod replay;
mod replay2;
mod security;
mod sync;
mod takeover;
mod tanium;
mod tanium_real;
mod tc;
mod tc_rails;
mod tls;
