//! The §9 fallbacks of the whitelist check: a request the path whitelist refused is
//! still allowed by a static-file admission (static suffixes only) or a front-end (JS)
//! admission. Their keys ride along in the whitelist's first `get_many`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::js::{js_key, JsEntry};
use super::static_file::{static_candidates, StaticEntry};
use super::whitelist::{Candidate, WhitelistEntry, WhitelistHit};
use super::{ts, AccessRequest, Policy};

/// The extra keys read with the whitelist candidates.
#[derive(Debug, Clone, Default)]
pub(super) struct FallbackKeys {
    /// Static-admission candidates (only for static-suffix paths).
    statics: Vec<Candidate>,
    /// The front-end admission key (only when enabled).
    js: Option<String>,
}

/// A fallback that let a request through.
#[derive(Debug, Clone)]
pub(super) enum Fallback {
    /// Static suffix: a static admission or any path entry of this network.
    Static {
        /// The matching network.
        network: IpNet,
        /// The entry's uid.
        uid: Option<String>,
    },
    /// A front-end admission admits the key path.
    Js(WhitelistHit),
}

impl FallbackKeys {
    /// The keys, in the order their values are expected by [`FallbackKeys::resolve`].
    pub(super) fn keys(&self) -> Vec<String> {
        self.statics
            .iter()
            .map(|c| c.key.clone())
            .chain(self.js.clone())
            .collect()
    }

    /// How many keys [`FallbackKeys::keys`] returns.
    pub(super) fn len(&self) -> usize {
        self.statics.len() + usize::from(self.js.is_some())
    }

    /// Applies the fallbacks after a whitelist miss; `wl_values` are the whitelist
    /// candidates' values, `values` this struct's.
    pub(super) fn resolve(
        &self,
        policy: &Policy,
        cands: &[Candidate],
        wl_values: &[Option<String>],
        values: &[Option<String>],
        kp: &str,
        req: &AccessRequest<'_>,
    ) -> Option<Fallback> {
        let (static_values, js_value) = values.split_at(self.statics.len().min(values.len()));
        if !self.statics.is_empty() {
            // A path-whitelisted (network, UA) may also fetch static files.
            for (c, v) in cands.iter().zip(wl_values) {
                if let Some(e) = v.as_deref().and_then(WhitelistEntry::parse) {
                    return Some(Fallback::Static {
                        network: c.network,
                        uid: e.uid().map(str::to_string),
                    });
                }
            }
            for (c, v) in self.statics.iter().zip(static_values) {
                if let Some(e) = v.as_deref().and_then(StaticEntry::parse) {
                    return Some(Fallback::Static {
                        network: c.network,
                        uid: Some(e.uid).filter(|u| !u.is_empty()),
                    });
                }
            }
        }
        if self.js.is_some() && !kp.is_empty() {
            let entry = js_value.first()?.as_deref().and_then(JsEntry::parse)?;
            let ttl_s = ts(policy.rules.js_ttl.as_secs());
            let uid = entry.admitting(kp, req.uid, ts(req.now), ttl_s)?;
            return Some(Fallback::Js(WhitelistHit {
                network: IpNet::from(super::client_ip::canonical_ip(req.client_ip)),
                uid: Some(uid.to_string()),
            }));
        }
        None
    }
}

impl Policy {
    /// Whether `path` may be let through by a static-file admission.
    pub(super) fn static_admissible(&self, path: &str) -> bool {
        self.rules.static_whitelist && self.rules.static_suffixes.matches(path)
    }

    /// The fallback keys of a viewer request.
    pub(super) fn fallback_keys(&self, path: &str, ip: IpAddr, ua_hash: &str) -> FallbackKeys {
        FallbackKeys {
            statics: if self.static_admissible(path) {
                static_candidates(ip, ua_hash, &self.ipv6_prefixes)
            } else {
                Vec::new()
            },
            js: self.rules.js_whitelist.then(|| js_key(ip, ua_hash)),
        }
    }
}
