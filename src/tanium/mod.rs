//! The Tanium side: session, API generation, source, intel documents, deploy.

pub mod model;
