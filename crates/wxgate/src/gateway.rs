//! The gateway: accounts, the store, the handlers and the metrics, assembled once.
//!
//! [`GatewayBuilder`] turns a validated [`Config`] and a store into a [`Gateway`]; the
//! gateway gives an axum [`axum::Router`] (to serve, or to mount inside another app) and
//! shuts down gracefully. The per-request work lives in [`crate::pipeline`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wechat_proto::{AesKey, Endpoint, Inbound, Reply};

use crate::clock::{SystemClock, WallClock};
use crate::config::{AccountConfig, Config, Policy};
use crate::forward::{http_client, ForwardHandler};
use crate::handler::rules::router_from_rules;
use crate::handler::{Handler, HandlerContext, HandlerError, Router};
use crate::metrics::Metrics;
use crate::push::{CustomerServiceClient, PushAccount, Pusher, RetryPolicy, TokenCache};
use crate::store::{Store, StoreError};

/// One account, ready to serve: its config, its protocol endpoint and its handler.
pub struct Account {
    /// The validated configuration.
    pub config: AccountConfig,
    /// What authenticates its requests: token, mode, AppID, the current key (which also
    /// encrypts replies) and the previous one during a rotation, the timestamp window.
    pub endpoint: Endpoint,
    /// The rules, then the account's code handler (or its `forward` upstream) as the
    /// fallback, behind the account's handler cap.
    pub handler: Arc<dyn Handler>,
    /// The account's handler slots (`max_concurrent_handlers`). A handler task takes a
    /// slot inside its own task, after the claim, so a message past the cap is recorded
    /// and answered per the policy while its handler waits.
    pub handler_slots: Arc<Semaphore>,
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

/// What a request reads from the configuration, swapped whole on reload: a request loads
/// it once and keeps its `Arc<Account>` to the end, so it finishes with the config it
/// started with.
#[derive(Debug)]
pub struct Live {
    /// The accounts by path name.
    pub accounts: HashMap<String, Arc<Account>>,
    /// The configuration in force (for `--check`-style reports and reload diffs).
    pub config: Config,
}

/// Everything a request needs, shared by all requests.
pub struct Gateway {
    pub(crate) live: ArcSwap<Live>,
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
    /// The code handlers set on the builder, kept so that a reload rebuilds with them.
    code_handlers: HashMap<String, Arc<dyn Handler>>,
    /// The pooled HTTP client of upstreams and WeChat's API, shared across reloads.
    http: reqwest::Client,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "accounts",
                &self.live.load().accounts.keys().collect::<Vec<_>>(),
            )
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
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
        let accounts = build_accounts(&self.config, &http, &self.handlers, &HashMap::new());
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
            live: ArcSwap::from_pointee(Live {
                accounts,
                config: self.config.clone(),
            }),
            store: self.store,
            clock: self.clock,
            metrics: Arc::new(Metrics::new()),
            tasks,
            body_limit: self.config.body_limit,
            pusher,
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
            code_handlers: self.handlers,
            http,
        }
    }

    /// The delivery workers, when some account uses `push`.
    fn pusher(&mut self, http: &reqwest::Client, tasks: &TaskTracker) -> Option<Arc<Pusher>> {
        let accounts: HashMap<String, PushAccount> = self
            .config
            .accounts
            .iter()
            .filter_map(|config| Some((config.name.clone(), push_account(config, http)?)))
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

/// The protocol endpoint of an account's validated configuration.
fn endpoint(config: &AccountConfig) -> Endpoint {
    let mut endpoint = Endpoint::new(config.token.clone(), config.app_id.clone(), config.mode)
        .with_timestamp_window(config.timestamp_window);
    if let Some(key) = &config.aes_key {
        endpoint = endpoint.with_key(key);
    }
    if let Some(key) = &config.previous_aes_key {
        endpoint = endpoint.with_previous_key(key);
    }
    endpoint
}

/// The sender of a `push` account; `None` for other policies.
fn push_account(config: &AccountConfig, http: &reqwest::Client) -> Option<PushAccount> {
    if config.policy != Policy::Push {
        return None;
    }
    // Validation requires the AppSecret under push.
    let secret = config.app_secret.clone()?;
    let tokens = TokenCache::new(
        http.clone(),
        &config.api_base,
        config.app_id.as_str(),
        secret,
        config.token_endpoint,
    );
    Some(PushAccount {
        client: CustomerServiceClient::new(http.clone(), &config.api_base, tokens),
        wait_limit: config.handler_timeout + Duration::from_secs(5),
    })
}

/// Builds every account of `config`. An account whose handler cap is unchanged keeps its
/// slots from `previous` (a reload), so that handlers already running still count.
fn build_accounts(
    config: &Config,
    http: &reqwest::Client,
    code_handlers: &HashMap<String, Arc<dyn Handler>>,
    previous: &HashMap<String, Arc<Account>>,
) -> HashMap<String, Arc<Account>> {
    config
        .accounts
        .iter()
        .map(|config| {
            let endpoint = endpoint(config);
            let upstream: Option<Arc<dyn Handler>> = config
                .forward
                .as_ref()
                .map(|forward| Arc::new(ForwardHandler::new(http.clone(), forward.clone())) as _);
            let mut router: Router = router_from_rules(&config.rules, upstream.as_ref());
            // A handler set in code wins over the configured upstream.
            if let Some(handler) = code_handlers.get(&config.name).cloned().or(upstream) {
                router = router.fallback_arc(handler);
            }
            let handler_slots = previous
                .get(&config.name)
                .filter(|old| old.config.max_concurrent_handlers == config.max_concurrent_handlers)
                .map(|old| Arc::clone(&old.handler_slots))
                .unwrap_or_else(|| Arc::new(Semaphore::new(config.max_concurrent_handlers)));
            let account = Account {
                config: config.clone(),
                endpoint,
                handler: Arc::new(Capped {
                    inner: Arc::new(router),
                    slots: Arc::clone(&handler_slots),
                }),
                handler_slots,
            };
            (config.name.clone(), Arc::new(account))
        })
        .collect()
}

/// A handler behind the account's cap on concurrent handler tasks. The wait for a slot is
/// part of the handler's time, so `handler_timeout` bounds it too.
struct Capped {
    inner: Arc<dyn Handler>,
    slots: Arc<Semaphore>,
}

#[async_trait]
impl Handler for Capped {
    async fn handle(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, HandlerError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| HandlerError::new("the account's handler slots are closed"))?;
        self.inner.handle(context, inbound).await
    }
}

/// What a reload changed, and what it could not change live.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Accounts that are new.
    pub added: Vec<String>,
    /// Accounts that are gone (their path now answers 404).
    pub removed: Vec<String>,
    /// Accounts whose settings (keys, rules, policy, …) changed.
    pub changed: Vec<String>,
    /// Settings that differ from the running ones but only take effect after a restart.
    pub needs_restart: Vec<String>,
}

/// Why a new config was not applied (the old one stays in force).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config adds the first `push` account: the delivery workers and their outbox
    /// are only set up at start.
    #[error("account {0} uses push, but no account did at start: the push outbox needs a restart")]
    PushNeedsRestart(String),
}

/// Whether two account configs are the same, secrets included.
fn same_account(a: &AccountConfig, b: &AccountConfig) -> bool {
    let secret = |s: Option<&crate::config::Secret>| s.map(|s| s.expose().to_owned());
    // Configs hold regexes and secrets without `PartialEq`: the debug form (secrets
    // redacted) plus the secrets' own comparison tell a change.
    format!("{a:?}") == format!("{b:?}")
        && a.token.expose() == b.token.expose()
        && a.aes_key.as_ref().map(AesKey::to_encoding_aes_key)
            == b.aes_key.as_ref().map(AesKey::to_encoding_aes_key)
        && a.previous_aes_key.as_ref().map(AesKey::to_encoding_aes_key)
            == b.previous_aes_key.as_ref().map(AesKey::to_encoding_aes_key)
        && secret(a.app_secret.as_ref()) == secret(b.app_secret.as_ref())
        && secret(a.forward.as_ref().and_then(|f| f.secret.as_ref()))
            == secret(b.forward.as_ref().and_then(|f| f.secret.as_ref()))
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

    /// An account by name, as currently configured.
    pub fn account(&self, name: &str) -> Option<Arc<Account>> {
        self.live.load().accounts.get(name).cloned()
    }

    /// The configuration in force (the last one loaded successfully).
    pub fn config(&self) -> Config {
        self.live.load().config.clone()
    }

    /// Applies a new, validated config: accounts are added, removed and replaced (keys,
    /// rules, policies, handler caps) in one atomic swap. Requests already running finish
    /// with the account they started with. Settings read only at start (listen address,
    /// store, body limit, log format, `[limits]`) keep their running values and are listed
    /// in `needs_restart`.
    pub fn reload(&self, new: Config) -> Result<ReloadReport, ReloadError> {
        let live = self.live.load_full();
        let old = &live.config;
        if self.pusher.is_none() {
            if let Some(account) = new.accounts.iter().find(|a| a.policy == Policy::Push) {
                return Err(ReloadError::PushNeedsRestart(account.name.clone()));
            }
        }
        let mut report = ReloadReport::default();
        let restart_only = [
            ("listen", old.listen != new.listen),
            ("store", old.store != new.store),
            ("body_limit_bytes", old.body_limit != new.body_limit),
            ("log_format", old.log_json != new.log_json),
            ("limits", old.limits != new.limits),
        ];
        report.needs_restart = restart_only
            .iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| (*name).to_owned())
            .collect();
        for account in &new.accounts {
            match old.accounts.iter().find(|a| a.name == account.name) {
                None => report.added.push(account.name.clone()),
                Some(previous) if !same_account(previous, account) => {
                    report.changed.push(account.name.clone())
                }
                Some(_) => {}
            }
        }
        report.removed = old
            .accounts
            .iter()
            .filter(|a| !new.accounts.iter().any(|n| n.name == a.name))
            .map(|a| a.name.clone())
            .collect();
        let accounts = build_accounts(&new, &self.http, &self.code_handlers, &live.accounts);
        if let Some(pusher) = &self.pusher {
            let running = pusher.accounts();
            let senders = new
                .accounts
                .iter()
                .filter_map(|config| {
                    // An unchanged push account keeps its sender and its cached token.
                    let unchanged = old
                        .accounts
                        .iter()
                        .any(|a| a.name == config.name && same_account(a, config));
                    let kept = running.get(&config.name).filter(|_| unchanged).cloned();
                    let sender = kept.or_else(|| push_account(config, &self.http).map(Arc::new))?;
                    Some((config.name.clone(), sender))
                })
                .collect();
            pusher.replace_accounts(senders);
        }
        // Settings read at start keep their running values, so that the config in force
        // says what is really in force.
        let mut in_force = new;
        in_force.listen = old.listen;
        in_force.store = old.store.clone();
        in_force.body_limit = old.body_limit;
        in_force.log_json = old.log_json;
        in_force.limits = old.limits;
        self.live.store(Arc::new(Live {
            accounts,
            config: in_force,
        }));
        Ok(report)
    }

    /// Waits until no handler or push delivery is running, or until `deadline`; new
    /// tasks may still start meanwhile (the drain keeps answering). Returns whether all
    /// finished.
    pub async fn wait_for_tasks(&self, deadline: tokio::time::Instant) -> bool {
        self.tasks.close();
        tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Every account in force now (a snapshot: a reload may swap them later).
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        self.live.load().accounts.values().cloned().collect()
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
