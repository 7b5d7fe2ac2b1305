//! Pure rendering: one TC indicator -> one intel document (STIX 1.2 or OpenIOC 1.1). No I/O here.

pub use crate::config::IntelFormat;
