//! `origin.url`, parsed once: the one [`FromStr`] behind both config validation and
//! `Origin::from_config` (the origin module).

use std::str::FromStr;

/// What an `origin.url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginUrl {
    /// `http://host[:port][/base]` or `https://…`: an origin server.
    Http(http::Uri),
    /// `file:///folder`: a local folder (the absolute path).
    File(String),
}

impl FromStr for OriginUrl {
    type Err = &'static str;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected http://host:port, https://host:port or file:///folder";
        match url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() => {
                let uri: http::Uri = url.parse().map_err(|_| "not a valid URL")?;
                if !uri.host().is_some_and(|h| !h.is_empty()) {
                    return Err("not a valid URL");
                }
                Ok(OriginUrl::Http(uri))
            }
            Some(("file", rest)) if rest.starts_with('/') => Ok(OriginUrl::File(rest.to_string())),
            _ => Err(EXPECTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_file_origins() {
        assert!(matches!(
            "http://127.0.0.1:27804".parse(),
            Ok(OriginUrl::Http(_))
        ));
        assert!(matches!(
            "https://origin.example/base".parse(),
            Ok(OriginUrl::Http(_))
        ));
        assert_eq!(
            "file:///srv/media".parse(),
            Ok(OriginUrl::File("/srv/media".into()))
        );
        for bad in [
            "ftp://a",
            "file://relative",
            "http://",
            "srv/media",
            "http://a b",
        ] {
            assert!(bad.parse::<OriginUrl>().is_err(), "{bad}");
        }
    }
}
