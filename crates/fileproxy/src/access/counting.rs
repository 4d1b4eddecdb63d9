//! Store-backed counters shared by the playlist count (§4), key uses and token
//! replay (§9): the text of a count the store could not answer, and a read of a
//! window counter that spends nothing (`HEAD`, SPEC §4 and §10).

use std::time::Duration;

use crate::store::{Store, StoreError, WindowCount};

/// `503` text: the access counter could not be reached (fail closed).
pub const COUNT_UNAVAILABLE_TEXT: &str = "Service Unavailable: access check failed, retry later";

/// What [`Store::incr_window`] would answer for `key` now, without incrementing: the
/// stored count plus one (the TTL is read only when that is past `max`, for the text).
pub(super) async fn peek_window(
    store: &dyn Store,
    key: &str,
    max: u64,
) -> Result<WindowCount, StoreError> {
    let current = match store.get(key).await? {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| StoreError::Malformed("counter is not an integer".into()))?,
    };
    let count = current.saturating_add(1);
    let ttl = if count > max {
        store.ttl(key).await?.unwrap_or_default()
    } else {
        Duration::ZERO
    };
    Ok(WindowCount { count, ttl })
}
