//! Static-file admission (SPEC §9): `POST /api/static-whitelist` admits a (network,
//! UA) to the `protect.static_suffixes` only, under
//! `static_file_access:{network with / replaced by _}:{ua_hash}`. A request for such a
//! suffix that the path whitelist refused is allowed when that entry exists, or when
//! any path whitelist entry of the viewer's networks exists (a path-admitted viewer may
//! also fetch static files).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::compat;
use super::network::{admission_network, network_key_part, ua_hash};
use super::whitelist::{candidates_keyed, required_fields, AdmitError, Candidate};
use super::{ts, Policy};

/// `static_file_access:{network with / replaced by _}:{ua_hash}`.
pub fn static_key(net: &IpNet, ua_hash: &str) -> String {
    format!("static_file_access:{}:{}", network_key_part(net), ua_hash)
}

/// The static-admission keys a viewer may be found under, most specific first.
pub fn static_candidates(ip: IpAddr, ua_hash: &str, ipv6_prefixes: &[u8]) -> Vec<Candidate> {
    candidates_keyed(ip, ua_hash, ipv6_prefixes, static_key)
}

/// A static-file admission entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticEntry {
    /// The uid admitted.
    #[serde(default, deserialize_with = "compat::string")]
    pub uid: String,
    /// The admitted network.
    #[serde(default, deserialize_with = "compat::string")]
    pub ip_pattern: String,
    /// First 8 hex chars of MD5(User-Agent).
    #[serde(default, deserialize_with = "compat::string")]
    pub ua_hash: String,
    /// The admitted User-Agent.
    #[serde(default, deserialize_with = "compat::string")]
    pub user_agent: String,
    /// When it was written (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub created_at: i64,
    /// Process id of the writer.
    #[serde(default, deserialize_with = "compat::int")]
    pub worker_pid: i64,
    /// Fields we do not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StaticEntry {
    /// Parses a stored entry; `None` when it is not a JSON object.
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }
}

/// The validated body of `POST /api/static-whitelist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAdmission {
    /// The viewer's uid.
    pub uid: String,
    /// The admitted network (IPv4 `/24`, IPv6 as given).
    pub network: IpNet,
    /// The viewer's User-Agent.
    pub user_agent: String,
    /// Its hash.
    pub ua_hash: String,
}

/// Validates `{"uid", "clientIp", "UserAgent"}` (all required, non-empty; a numeric
/// uid is accepted).
pub fn parse_static_admission(body: &[u8]) -> Result<StaticAdmission, AdmitError> {
    let [uid, client_ip, user_agent] = required_fields(body, ["uid", "clientIp", "UserAgent"])?;
    let network = admission_network(&client_ip)?;
    Ok(StaticAdmission {
        uid,
        network,
        ua_hash: ua_hash(&user_agent),
        user_agent,
    })
}

impl Policy {
    /// `POST /api/static-whitelist` (SPEC §9): checks the bearer key, writes the
    /// static entry (TTL `auth.ip_access_ttl_s`), records the pair for the per-uid cap
    /// and returns the `200` JSON. Errors map like [`Policy::admit`]'s.
    pub async fn admit_static(
        &self,
        body: &[u8],
        authorization: Option<&str>,
        now: u64,
    ) -> Result<Value, AdmitError> {
        if !self.whitelist_key_ok(authorization) {
            return Err(AdmitError::Unauthorized);
        }
        let adm = parse_static_admission(body)?;
        let entry = StaticEntry {
            uid: adm.uid.clone(),
            ip_pattern: adm.network.to_string(),
            ua_hash: adm.ua_hash.clone(),
            user_agent: adm.user_agent.clone(),
            created_at: ts(now),
            worker_pid: i64::from(std::process::id()),
            extra: Map::new(),
        };
        let key = static_key(&adm.network, &adm.ua_hash);
        let raw = serde_json::to_string(&entry)
            .map_err(|e| AdmitError::Store(crate::store::StoreError::Malformed(e.to_string())))?;
        self.store
            .set(&key, &raw, self.ip_access_ttl)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "static admission failed: store"))?;
        let pairs = self
            .record_admitted_pair(&adm.uid, &adm.network, &adm.ua_hash, now)
            .await?;
        self.log_admission(
            "static",
            &adm.uid,
            &adm.network,
            &adm.ua_hash,
            "",
            &key,
            now,
        )
        .await;
        Ok(json!({
            "message": "Static file access granted",
            "uid": adm.uid,
            "ip_pattern": adm.network.to_string(),
            "ua_hash": adm.ua_hash,
            "ttl": self.ip_access_ttl.as_secs(),
            "static_suffixes": self.rules.static_suffix_list,
            "uid_pairs": pairs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_body_and_key() {
        let a = parse_static_admission(
            br#"{"uid": 5, "clientIp": "180.98.66.2", "UserAgent": "Mozilla/5.0"}"#,
        )
        .unwrap();
        assert_eq!(a.uid, "5");
        assert_eq!(
            static_key(&a.network, &a.ua_hash),
            "static_file_access:180.98.66.0_24:0e3c1d55"
        );
        let err = |b: &str| parse_static_admission(b.as_bytes()).unwrap_err();
        assert!(matches!(err("x"), AdmitError::BadJson));
        assert!(matches!(
            err(r#"{"clientIp": "1.2.3.4", "UserAgent": "x"}"#),
            AdmitError::MissingField("uid")
        ));
        assert!(matches!(
            err(r#"{"uid": "u", "UserAgent": "x"}"#),
            AdmitError::MissingField("clientIp")
        ));
        assert!(matches!(
            err(r#"{"uid": "u", "clientIp": "1.2.3.4"}"#),
            AdmitError::MissingField("UserAgent")
        ));
        assert!(matches!(
            err(r#"{"uid": "u", "clientIp": "nope", "UserAgent": "x"}"#),
            AdmitError::BadClientIp
        ));
        let c = static_candidates("2001:db8::1".parse().unwrap(), "abcd0123", &[64]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].key, "static_file_access:2001:db8::_64:abcd0123");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = parse_static_admission(s.as_bytes());
            let _ = StaticEntry::parse(&s);
        }
    }
}
