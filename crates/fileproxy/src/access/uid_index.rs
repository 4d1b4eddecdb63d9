//! Per-uid index keys that let `POST /api/revoke` find what a uid was admitted to
//! without a scan: `uid_sessions:{uid}` (session ids we created for it) and
//! `uid_js_admissions:{uid}` (its front-end admission keys), newest first, capped.

use std::time::Duration;

use crate::store::{Store, StoreError};

/// Entries read from each per-uid index.
pub const INDEX_CAP: usize = 64;

/// `uid_sessions:{uid}`: ids of the sessions created for the uid, newest first.
pub fn uid_sessions_key(uid: &str) -> String {
    format!("uid_sessions:{uid}")
}

/// `uid_js_admissions:{uid}`: the uid's front-end admission keys, newest first.
pub fn uid_js_key(uid: &str) -> String {
    format!("uid_js_admissions:{uid}")
}

/// Records a created session in its uid's index.
pub async fn index_session(
    store: &dyn Store,
    uid: &str,
    id: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    store
        .push_capped(&uid_sessions_key(uid), id, INDEX_CAP, ttl)
        .await
}

/// Records a front-end admission key in its uid's index.
pub async fn index_js(
    store: &dyn Store,
    uid: &str,
    js_key: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    store
        .push_capped(&uid_js_key(uid), js_key, INDEX_CAP, ttl)
        .await
}
