//! The gateway: accounts, the store, the handlers and the metrics, assembled once.
//!
//! [`GatewayBuilder`] turns a validated [`Config`] and a store into a [`Gateway`]; the
//! gateway gives an axum [`axum::Router`] (to serve, or to mount inside another app) and
//! shuts down gracefully. The per-request work lives in [`crate::pipeline`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;
use wechat_proto::MessageCipher;

use crate::config::{AccountConfig, Config};
use crate::handler::rules::router_from_rules;
use crate::handler::{Handler, Router};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// One account, ready to serve: its config, its ciphers and its handler.
pub struct Account {
    /// The validated configuration.
    pub config: AccountConfig,
    /// The current key's cipher first, then the previous key's during a rotation.
    pub ciphers: Vec<MessageCipher>,
    /// The rules, then the account's code handler (if any) as the fallback.
    pub handler: Arc<dyn Handler>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.config.name)
            .field("mode", &self.config.mode)
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

/// Everything a request needs, shared by all requests.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) accounts: HashMap<String, Arc<Account>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
    /// Every handler task, so that shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) body_limit: usize,
}

/// Assembles a [`Gateway`].
pub struct GatewayBuilder {
    config: Config,
    store: Arc<dyn Store>,
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("accounts", &self.config.accounts.len())
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Starts from a validated config and an opened store.
    pub fn new(config: Config, store: Arc<dyn Store>) -> GatewayBuilder {
        GatewayBuilder {
            config,
            store,
            handlers: HashMap::new(),
        }
    }

    /// Sets the code handler of an account; it runs for messages no config rule matches.
    pub fn handler(mut self, account: &str, handler: impl Handler) -> GatewayBuilder {
        self.handlers.insert(account.to_owned(), Arc::new(handler));
        self
    }

    /// Builds the gateway.
    pub fn build(mut self) -> Gateway {
        let accounts = self
            .config
            .accounts
            .iter()
            .map(|config| {
                let ciphers = [&config.aes_key, &config.previous_aes_key]
                    .into_iter()
                    .flatten()
                    .map(|key| MessageCipher::new(key, config.app_id.clone()))
                    .collect();
                let mut router: Router = router_from_rules(&config.rules);
                if let Some(handler) = self.handlers.remove(&config.name) {
                    router = router.fallback_arc(handler);
                }
                let account = Account {
                    config: config.clone(),
                    ciphers,
                    handler: Arc::new(router),
                };
                (config.name.clone(), Arc::new(account))
            })
            .collect();
        Gateway {
            accounts,
            store: self.store,
            metrics: Arc::new(Metrics::new()),
            tasks: TaskTracker::new(),
            body_limit: self.config.body_limit,
        }
    }
}

impl Gateway {
    /// The axum router serving `/wx/{account}`, `/healthz`, `/readyz` and `/metrics`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        crate::http::router(Arc::clone(self))
    }

    /// The store this gateway records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&Arc<Account>> {
        self.accounts.get(name)
    }

    /// Waits (up to `grace`) for every running handler, then flushes the store.
    ///
    /// Call after the HTTP server stopped accepting. Returns how many handler tasks were
    /// still running when the grace period ended (they are recorded as interrupted on the
    /// next start by persistent stores).
    pub async fn shutdown(&self, grace: Duration) -> Result<usize, StoreError> {
        self.tasks.close();
        let unfinished = match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        };
        self.store.flush().await?;
        Ok(unfinished)
    }
}
