//! The gateway: accounts, the store, the handlers and the metrics, assembled once.
//!
//! [`GatewayBuilder`] turns a validated [`Config`] and a store into a [`Gateway`]; the
//! gateway gives an axum [`axum::Router`] (to serve, or to mount inside another app) and
//! shuts down gracefully. The per-request work lives in [`crate::pipeline`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wechat_proto::MessageCipher;

use crate::clock::{SystemClock, WallClock};
use crate::config::{AccountConfig, Config, Policy};
use crate::forward::{http_client, ForwardHandler};
use crate::handler::rules::router_from_rules;
use crate::handler::{Handler, Router};
use crate::metrics::Metrics;
use crate::push::{CustomerServiceClient, PushAccount, Pusher, RetryPolicy, TokenCache};
use crate::store::{Store, StoreError};

/// One account, ready to serve: its config, its ciphers and its handler.
pub struct Account {
    /// The validated configuration.
    pub config: AccountConfig,
    /// The current key's cipher first, then the previous key's during a rotation.
    pub ciphers: Vec<MessageCipher>,
    /// The rules, then the account's code handler (or its `forward` upstream) as the
    /// fallback.
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
    /// The wall clock for timestamps (received_at, the timestamp window).
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) metrics: Arc<Metrics>,
    /// Every handler task, so that shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) body_limit: usize,
    /// The delivery workers of `push` accounts; `None` when no account uses `push`.
    pub(crate) pusher: Option<Arc<Pusher>>,
    /// One event per answered webhook request, for the console's live inbox and charts.
    pub(crate) events: tokio::sync::broadcast::Sender<WebhookEvent>,
}

/// How many webhook events wait for a slow listener before it starts missing some (it is
/// told how many it missed, and the console then re-reads the inbox).
pub const EVENT_BACKLOG: usize = 1024;

/// One webhook POST, as it ended: sent to [`Gateway::subscribe`]rs after the answer.
///
/// It names no message (no OpenID, no key): listeners re-read the store, which is the one
/// record of what arrived.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WebhookEvent {
    /// The account name, or `unknown` for a 404.
    pub account: String,
    /// The answer kind (`replied`, `success`, …) or the rejection (`rejected_401`, …).
    pub outcome: String,
    /// When the answer left, Unix milliseconds.
    pub at_ms: i64,
    /// How long the request took, in milliseconds.
    pub latency_ms: f64,
    /// The official WXBizMsgCrypt code of a signature or crypto failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crypto_code: Option<i32>,
}

/// Assembles a [`Gateway`].
pub struct GatewayBuilder {
    config: Config,
    store: Arc<dyn Store>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    clock: Arc<dyn WallClock>,
    push_retry: RetryPolicy,
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
            clock: Arc::new(SystemClock),
            push_retry: RetryPolicy::default(),
        }
    }

    /// Sets the wall clock (tests use a [`crate::clock::ManualClock`]). Deadlines always
    /// follow tokio's clock.
    pub fn clock(mut self, clock: Arc<dyn WallClock>) -> GatewayBuilder {
        self.clock = clock;
        self
    }

    /// Sets the retry timing of `push` deliveries (tests shorten it).
    pub fn push_retry(mut self, retry: RetryPolicy) -> GatewayBuilder {
        self.push_retry = retry;
        self
    }

    /// Sets the code handler of an account; it runs for messages no config rule matches.
    pub fn handler(mut self, account: &str, handler: impl Handler) -> GatewayBuilder {
        self.handlers.insert(account.to_owned(), Arc::new(handler));
        self
    }

    /// Builds the gateway. Under a tokio runtime, the pending `push` deliveries of an
    /// earlier run are resumed in the background.
    pub fn build(mut self) -> Gateway {
        // One pooled client for every upstream and WeChat API call.
        let http = http_client();
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
                let upstream: Option<Arc<dyn Handler>> = config.forward.as_ref().map(|forward| {
                    Arc::new(ForwardHandler::new(http.clone(), forward.clone())) as _
                });
                let mut router: Router = router_from_rules(&config.rules, upstream.as_ref());
                // A handler set in code wins over the configured upstream.
                if let Some(handler) = self.handlers.remove(&config.name).or(upstream) {
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
        let tasks = TaskTracker::new();
        let pusher = self.pusher(&http, &tasks);
        if let (Some(pusher), Ok(runtime)) = (&pusher, tokio::runtime::Handle::try_current()) {
            pusher.keep_resuming_on(&runtime, crate::push::RESUME_INTERVAL);
            let pusher = Arc::clone(pusher);
            tasks.spawn_on(
                async move {
                    if let Err(e) = pusher.resume().await {
                        tracing::error!(error = %e, "could not resume pending push deliveries");
                    }
                },
                &runtime,
            );
        }
        Gateway {
            accounts,
            store: self.store,
            clock: self.clock,
            metrics: Arc::new(Metrics::new()),
            tasks,
            body_limit: self.config.body_limit,
            pusher,
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
        }
    }

    /// The delivery workers, when some account uses `push`.
    fn pusher(&mut self, http: &reqwest::Client, tasks: &TaskTracker) -> Option<Arc<Pusher>> {
        let accounts: HashMap<String, PushAccount> = self
            .config
            .accounts
            .iter()
            .filter(|config| config.policy == Policy::Push)
            .filter_map(|config| {
                // Validation requires the AppSecret under push.
                let secret = config.app_secret.clone()?;
                let tokens = TokenCache::new(
                    http.clone(),
                    &config.api_base,
                    config.app_id.as_str(),
                    secret,
                    config.token_endpoint,
                );
                let push = PushAccount {
                    client: CustomerServiceClient::new(http.clone(), &config.api_base, tokens),
                    wait_limit: config.handler_timeout + Duration::from_secs(5),
                };
                Some((config.name.clone(), push))
            })
            .collect();
        if accounts.is_empty() {
            return None;
        }
        let pusher = Pusher::new(
            Arc::clone(&self.store),
            accounts,
            tasks.clone(),
            CancellationToken::new(),
        )
        .with_retry(self.push_retry);
        Some(Arc::new(pusher))
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

    /// The `push` delivery workers, when some account uses `push`.
    pub fn pusher(&self) -> Option<&Arc<Pusher>> {
        self.pusher.as_ref()
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&Arc<Account>> {
        self.accounts.get(name)
    }

    /// Every account, by name.
    pub fn accounts(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.accounts.values()
    }

    /// Listens to the end of every webhook POST from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<WebhookEvent> {
        self.events.subscribe()
    }

    /// Tells listeners that a webhook POST ended; nobody listening is not an error.
    pub(crate) fn publish(&self, event: WebhookEvent) {
        let _ = self.events.send(event);
    }

    /// Waits (up to `grace`) for every running handler and push delivery, then flushes
    /// the store.
    ///
    /// Call after the HTTP server stopped accepting. Returns how many tasks were still
    /// running when the grace period ended (handlers are recorded as interrupted on the
    /// next start by persistent stores; push deliveries stay pending and are resumed).
    pub async fn shutdown(&self, grace: Duration) -> Result<usize, StoreError> {
        self.tasks.close();
        let unfinished = match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => {
                let unfinished = self.tasks.len();
                if let Some(pusher) = &self.pusher {
                    // Workers stop at their next wait; a send in progress is recorded.
                    pusher.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(11), self.tasks.wait()).await;
                }
                unfinished
            }
        };
        self.store.flush().await?;
        Ok(unfinished)
    }
}
