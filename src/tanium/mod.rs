//! The Tanium side: session, API generation, source, intel documents, deploy.

pub mod client;
pub mod model;

pub use client::TaniumClient;
pub use model::{ApiGeneration, IntelDoc, Source, Upload};
