//! Reloading the config on SIGHUP.
//!
//! The file is read and validated again; a valid config is swapped in whole
//! ([`Gateway::reload`]), an invalid one is logged and the running config kept. Requests
//! in flight finish with the accounts they started with. Settings read only at start are
//! reported as needing a restart.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;

/// Applies a freshly loaded config (or logs why it could not be loaded). Returns whether
/// the new config is now in force.
pub fn apply(gateway: &Gateway, loaded: Result<Config, ConfigError>) -> bool {
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "config reload failed; the running config is kept");
            return false;
        }
    };
    let warnings = crate::check::warnings(&config);
    match gateway.reload(config) {
        Ok(report) => {
            tracing::info!(
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed,
                "config reloaded"
            );
            if !report.needs_restart.is_empty() {
                tracing::warn!(
                    settings = ?report.needs_restart,
                    "these settings changed but only take effect after a restart"
                );
            }
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            true
        }
        Err(error) => {
            tracing::error!(%error, "config reload refused; the running config is kept");
            false
        }
    }
}

/// Reloads with `load` on every SIGHUP, until the process ends. `load` re-reads the same
/// file with the same overrides the process started with.
#[cfg(unix)]
pub async fn on_sighup(
    gateway: Arc<Gateway>,
    load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let load = Arc::new(load);
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reload is off");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        // Reading the file blocks; it is small and rare, but keep it off the workers.
        let load = Arc::clone(&load);
        match tokio::task::spawn_blocking(move || load()).await {
            Ok(loaded) => {
                apply(&gateway, loaded);
            }
            Err(error) => tracing::error!(%error, "config reload failed"),
        }
    }
}

/// Reload on a signal is a Unix feature.
#[cfg(not(unix))]
pub async fn on_sighup(
    _gateway: Arc<Gateway>,
    _load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) {
}
