//! systemd readiness notifications (`Type=notify`, `examples/fileproxy.service`):
//! `READY=1` once the listeners are bound, `RELOADING=1` … `READY=1` around a `SIGHUP`
//! reload, `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET` (not run by systemd)
//! each call does nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd the service is up (listeners bound, store and origin ready).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Tells systemd a configuration reload started.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the service is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
