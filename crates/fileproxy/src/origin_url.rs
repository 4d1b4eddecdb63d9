//! `origin.url`, parsed once: the one [`FromStr`] behind the `origin.url` key of the
//! configuration and `Origin::from_config` (the origin module), which builds from the
//! parsed value.

use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an `origin.url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginTarget {
    /// `http://host[:port][/base]` or `https://…`: an origin server.
    Http(http::Uri),
    /// `file:///folder`: a local folder (the absolute path).
    File(String),
}

/// An `origin.url`: what it names and the text as written (serialized back as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    text: String,
    target: OriginTarget,
}

impl OriginUrl {
    /// What the URL names.
    pub fn target(&self) -> &OriginTarget {
        &self.target
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for OriginUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for OriginUrl {
    type Err = &'static str;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected http://host:port, https://host:port or file:///folder";
        let target = match url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() => {
                let uri: http::Uri = url.parse().map_err(|_| "not a valid URL")?;
                if !uri.host().is_some_and(|h| !h.is_empty()) {
                    return Err("not a valid URL");
                }
                if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                    return Err("credentials in the URL are not supported");
                }
                OriginTarget::Http(uri)
            }
            Some(("file", rest)) if rest.starts_with('/') => OriginTarget::File(rest.to_string()),
            _ => return Err(EXPECTED),
        };
        Ok(OriginUrl {
            text: url.to_string(),
            target,
        })
    }
}

impl Serialize for OriginUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for OriginUrl {
    /// Reads the URL; the message names the bad value.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|why| D::Error::custom(format!("{text:?}: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_file_origins() {
        let parse = |s: &str| s.parse::<OriginUrl>().map(|u| u.target().clone());
        assert!(matches!(
            parse("http://127.0.0.1:27804"),
            Ok(OriginTarget::Http(_))
        ));
        assert!(matches!(
            parse("https://origin.example/base"),
            Ok(OriginTarget::Http(_))
        ));
        assert_eq!(
            parse("file:///srv/media"),
            Ok(OriginTarget::File("/srv/media".into()))
        );
        for bad in [
            "ftp://a",
            "file://relative",
            "http://",
            "srv/media",
            "http://a b",
            "http://user:pw@h",
        ] {
            assert!(bad.parse::<OriginUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keeps_the_text_as_written() {
        let u: OriginUrl = "http://127.0.0.1:27804".parse().unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:27804");
        assert_eq!(
            toml::Value::try_from(&u).unwrap().as_str(),
            Some("http://127.0.0.1:27804")
        );
    }
}
