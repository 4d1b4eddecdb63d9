//! [`Secret`]: a configuration value that must never reach a log line, a `Debug`
//! dump or an answer.

use serde::{Deserialize, Serialize};

/// A secret key or token from the configuration (`auth.secret`, `traffic.api_key`, …).
///
/// It is a plain TOML string (serde-transparent, so `FILEPROXY_AUTH__SECRET=12345`
/// stays a string), its `Debug` prints `<redacted>` or `<empty>`, it has no `Display`,
/// and its text is read only through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the code that signs, compares or sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_serde_keeps_it() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Secret::default()), "<empty>");
        assert_eq!(s.expose(), "hunter2");
        let v = toml::Value::try_from(&s).unwrap();
        assert_eq!(v.as_str(), Some("hunter2"));
        let back: Secret = v.try_into().unwrap();
        assert_eq!(back.expose(), "hunter2");
    }
}
