//! The runtime side of the viewer controls of SPEC §13 (the decisions are
//! [`crate::access::controls`]): cutting live transfers of revoked uids (right after
//! `POST /api/revoke` of the api module, and from a poller that keeps this instance's
//! copy of the revocation feed fresh), and a flusher that adds this instance's delivered bytes to the per-uid
//! quota counters in the store.

use std::sync::{Arc, Weak};

use crate::access::controls::{QUOTA_FLUSH, REVOCATION_POLL};
use crate::access::keypath::key_path;
use crate::app::App;
use crate::clock::unix_secs as unix_now;

/// Starts the revocation poller and (when a quota is set) the quota flusher. They
/// hold the app weakly and end when it is dropped.
pub fn spawn(app: &Arc<App>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(poll_revocations(weak));
    if app.policy.controls().quota_on() {
        tokio::spawn(flush_quota(Arc::downgrade(app)));
    }
}

/// Every [`REVOCATION_POLL`]: reload the feed when it moved, then cut any live
/// transfer whose uid is revoked for its key path (also catching transfers that
/// started just before the mark arrived).
async fn poll_revocations(app: Weak<App>) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { break };
        let rev = &app.policy.controls().revocations;
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        match rev.sync(&*app.store, now).await {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "revocation feed unreadable; keeping the last copy");
                }
                failing = true;
            }
        }
        if !rev.is_empty() {
            let n = cut_revoked(&app, now, None);
            if n > 0 {
                tracing::info!(transfers = n, "cut live transfers of revoked uids");
            }
        }
    }
}

/// Cuts live transfers of this instance whose uid (`only` that uid, when given) is
/// revoked for their key path.
pub fn cut_revoked(app: &App, now: i64, only: Option<&str>) -> usize {
    let rev = &app.policy.controls().revocations;
    app.protect.transfers.cut_where(|m| {
        m.uid.as_deref().is_some_and(|uid| {
            only.map_or(true, |o| o == uid) && rev.is_revoked(uid, key_path(&m.path), now)
        })
    })
}

/// Every [`QUOTA_FLUSH`]: send this instance's quota batches.
async fn flush_quota(app: Weak<App>) {
    let mut tick = tokio::time::interval(QUOTA_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { break };
        let c = app.policy.controls();
        let current = c.window_of(unix_now());
        c.quota.flush(&*app.store, current, c.window()).await;
    }
}

/// Sends the quota batches still held (at shutdown), bounded by 5 s.
pub async fn flush_quota_now(app: &App) {
    let c = app.policy.controls();
    if !c.quota_on() {
        return;
    }
    let current = c.window_of(unix_now());
    let flush = c.quota.flush(&*app.store, current, c.window());
    match tokio::time::timeout(std::time::Duration::from_secs(5), flush).await {
        Ok((_, 0)) => {}
        Ok((_, kept)) => tracing::warn!(batches = kept, "quota batches not counted at shutdown"),
        Err(_) => tracing::warn!("quota batches not flushed within 5 s at shutdown"),
    }
}
