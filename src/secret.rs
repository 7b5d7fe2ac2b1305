//! A string that must never be printed: API secrets, tokens, passwords, the param key.

use std::fmt;

/// Wraps a credential so that `Debug` and `Display` can only ever print a placeholder.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// What every secret prints as, so logs show that a value exists without showing it.
pub const REDACTED: &str = "***";

impl Secret {
    /// Wraps a credential as soon as it is read, so it cannot leak by accident later.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Gives the raw value to the one place that must send it (a signer or a header setter).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Lets callers test for an empty credential without unwrapping it.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serialised as the placeholder too, so a printed config shows that a secret is set, never it.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {s:#?}"), "*** *** ***");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }
}
