//! The Tanium side: its settings, session, API generation, source, intel documents, deploy.

pub mod alerts;
mod answers;
pub mod client;
mod generation;
mod intels;
pub mod label_api;
pub mod lease;
pub mod model;
mod session;
mod settings;
mod source;

pub use alerts::{Alert, AlertsRead};
pub use answers::Permission;
pub use client::TaniumClient;
pub use model::{ApiGeneration, DeployAnswer, IntelDoc, Label, Source, TaskState, Upload};
pub use settings::Settings;
