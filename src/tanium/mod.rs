//! The Tanium side: its settings, session, API generation, source, intel documents, deploy.

pub mod client;
pub mod model;
mod settings;

pub use client::TaniumClient;
pub use model::{ApiGeneration, IntelDoc, Source, Upload};
pub use settings::Settings;
