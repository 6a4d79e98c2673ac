//! The `push` answer policy: late replies through the customer-service API.
//!
//! When the reply is not ready within the budget, the attempt writes a [`Delivery`] to the
//! store's [`Outbox`](crate::store::Outbox) and only then answers `success`. A worker ([`Pusher`]) waits for the
//! handler's completion through [`Store::wait`], sends the reply with the account's
//! [`CustomerServiceClient`], retries transient failures with backoff, and records the
//! outcome: sent, nothing to send, or given up with a reason (WeChat's final errors such
//! as 45015 out of the 48-hour window, 45047 quota, 43004 unsubscribed; a reply type the
//! API cannot carry). On start, pending deliveries are resumed, and again every
//! [`RESUME_INTERVAL`], so that with a shared store the deliveries of a dead instance are
//! finished by a live one.
//!
//! At most one worker runs per delivery in a process (a set of active keys), and a
//! delivery is marked sent right after WeChat accepted it.
//!
//! What this module must not do: log tokens, the AppSecret, message contents or OpenIDs.

pub mod client;
pub mod token;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::client::CustomerServiceClient;
pub use self::token::{AccessToken, TokenCache};
use crate::store::{Completion, Store, StoreError, StoreKey};
pub use crate::store::{Delivery, DeliveryState};

/// WeChat error codes after which a send is not retried: the message can never go out
/// (out of the 48-hour window, quota, unsubscribed, bad OpenID, bad media, no permission,
/// bad credentials).
pub const FINAL_ERRCODES: [i64; 12] = [
    45015, 45047, 43004, 40003, 40007, 40013, 40125, 40164, 41001, 43019, 48001, 45002,
];

/// The error codes meaning the access token was rejected: refresh it and try again.
pub const TOKEN_ERRCODES: [i64; 3] = [40001, 42001, 40014];

/// How often a gateway looks again for pending deliveries nobody works on: those of an
/// instance that died while sharing the store (see [`Pusher::keep_resuming_on`]).
pub const RESUME_INTERVAL: Duration = Duration::from_secs(5);

/// How many sends a delivery gets before it is given up on.
pub const MAX_SEND_TRIES: u32 = 8;

/// A failure talking to WeChat's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The API could not be reached or the request failed.
    #[error("WeChat API unreachable: {0}")]
    Network(String),
    /// The API answered an HTTP status other than 200.
    #[error("WeChat API answered HTTP {0}")]
    Status(u16),
    /// The API's answer is not the expected JSON.
    #[error("WeChat API answer unreadable: {0}")]
    BadAnswer(String),
    /// The API answered an `errcode`.
    #[error("WeChat API error {code}: {message}")]
    Api {
        /// WeChat's `errcode`.
        code: i64,
        /// WeChat's `errmsg`.
        message: String,
    },
    /// The reply type has no customer-service form.
    #[error("reply type {0} cannot be sent through the customer-service API")]
    Undeliverable(&'static str),
}

impl PushError {
    /// Whether WeChat rejected the access token (refresh and try again).
    pub fn is_token_rejected(&self) -> bool {
        matches!(self, PushError::Api { code, .. } if TOKEN_ERRCODES.contains(code))
    }

    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            PushError::Network(_) | PushError::BadAnswer(_) => true,
            PushError::Status(status) => *status >= 500 || *status == 429,
            PushError::Api { code, .. } => !FINAL_ERRCODES.contains(code),
            PushError::Undeliverable(_) => false,
        }
    }
}

/// Why a worker stopped before recording an outcome.
enum Stop {
    /// Shutdown: the delivery stays pending.
    Cancelled,
    /// Given up, with the reason to record.
    Failed(String),
}

/// The timing of a worker's retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The pause after the first transient failure; doubled after each further one.
    pub first_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// How many sends before giving up.
    pub max_tries: u32,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_tries: MAX_SEND_TRIES,
        }
    }
}

/// One account's sender and how long its handlers may run.
#[derive(Debug)]
pub struct PushAccount {
    /// The account's customer-service client.
    pub client: CustomerServiceClient,
    /// How long a worker waits for the handler's completion (its timeout plus a margin).
    pub wait_limit: Duration,
}

/// Runs the delivery workers of a gateway.
#[derive(Debug)]
pub struct Pusher {
    /// The store: completions are waited for there, and deliveries are its outbox.
    store: Arc<dyn Store>,
    /// The senders by account; swapped whole when the config is reloaded.
    accounts: ArcSwap<HashMap<String, Arc<PushAccount>>>,
    retry: RetryPolicy,
    /// The gateway's tracker, so shutdown waits for workers.
    tasks: TaskTracker,
    /// Cancelled at the end of shutdown's grace: workers stop, deliveries stay pending.
    cancel: CancellationToken,
    /// The deliveries with a running worker in this process.
    active: Mutex<HashSet<StoreKey>>,
}

impl Pusher {
    /// A pusher for `accounts`, recording deliveries in the store's outbox.
    pub fn new(
        store: Arc<dyn Store>,
        accounts: HashMap<String, PushAccount>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Pusher {
        Pusher {
            store,
            accounts: ArcSwap::from_pointee(
                accounts
                    .into_iter()
                    .map(|(name, account)| (name, Arc::new(account)))
                    .collect(),
            ),
            retry: RetryPolicy::default(),
            tasks,
            cancel,
            active: Mutex::new(HashSet::new()),
        }
    }

    /// Sets the retry timing.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Pusher {
        self.retry = retry;
        self
    }

    /// The sender of an account, if it uses `push`.
    pub fn account(&self, name: &str) -> Option<Arc<PushAccount>> {
        self.accounts.load().get(name).cloned()
    }

    /// The senders of every `push` account, by name (for a reload to keep the unchanged ones
    /// and their cached access tokens).
    pub fn accounts(&self) -> Arc<HashMap<String, Arc<PushAccount>>> {
        self.accounts.load_full()
    }

    /// Replaces the senders after a config reload; running workers keep the sender they
    /// started with.
    pub fn replace_accounts(&self, accounts: HashMap<String, Arc<PushAccount>>) {
        self.accounts.store(Arc::new(accounts));
    }

    /// Writes the delivery (durably, for persistent outboxes) and starts its worker.
    pub async fn enqueue(self: &Arc<Self>, delivery: Delivery) -> Result<(), StoreError> {
        if self.store.enqueue(&delivery).await? {
            self.spawn(delivery);
        }
        Ok(())
    }

    /// Starts a worker for every pending delivery (on start). Returns how many.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        let pending = self.store.pending().await?;
        let mut count = 0;
        for delivery in pending {
            // Deliveries with a worker here already are not counted (nor started again).
            if self.spawn(delivery) {
                count += 1;
            }
        }
        if count > 0 {
            tracing::info!(count, "resuming pending push deliveries");
        }
        Ok(count)
    }

    /// Resumes pending deliveries every `every`, until the pusher is cancelled
    /// or dropped. With a store shared by several instances, the outbox hands out the
    /// deliveries of an instance whose lease lapsed, so another instance finishes them;
    /// deliveries already worked on here are skipped. The loop is not tracked by the
    /// gateway's task tracker, so that shutdown does not wait for it.
    pub fn keep_resuming_on(self: &Arc<Self>, runtime: &tokio::runtime::Handle, every: Duration) {
        let pusher = Arc::downgrade(self);
        let cancel = self.cancel.clone();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(strong) = pusher.upgrade() else {
                    return;
                };
                if let Err(e) = strong.resume().await {
                    tracing::warn!(error = %e, "could not look for pending push deliveries");
                }
            }
        });
    }

    /// Stops the workers; their deliveries stay pending for the next start.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Starts a worker for `delivery` unless one runs; whether it started one.
    fn spawn(self: &Arc<Self>, delivery: Delivery) -> bool {
        let fresh = self
            .active
            .lock()
            .map(|mut active| active.insert(delivery.key.clone()))
            .unwrap_or(false);
        if !fresh {
            return false;
        }
        let pusher = Arc::clone(self);
        self.tasks.spawn(async move {
            let key = delivery.key.clone();
            pusher.run(&delivery).await;
            if let Ok(mut active) = pusher.active.lock() {
                active.remove(&key);
            }
        });
        true
    }

    /// One delivery, to its end, or until cancelled while waiting (never between a send
    /// and its record).
    async fn run(&self, delivery: &Delivery) {
        let account = &delivery.key.account;
        let state = match self.account(account) {
            None => DeliveryState::Failed("the account no longer uses push".to_owned()),
            Some(push) => match self.completion(delivery, push.wait_limit).await {
                Err(Stop::Cancelled) => return,
                Err(Stop::Failed(reason)) => DeliveryState::Failed(reason),
                Ok(Completion {
                    error: Some(error), ..
                }) => DeliveryState::Failed(error),
                Ok(Completion {
                    reply: None | Some(wechat_proto::Reply::Success),
                    ..
                }) => DeliveryState::NothingToSend,
                Ok(Completion {
                    reply: Some(reply), ..
                }) => match self.send(&push, delivery, &reply).await {
                    Some(state) => state,
                    None => return,
                },
            },
        };
        match &state {
            DeliveryState::Failed(reason) => {
                tracing::warn!(%account, %reason, "push delivery given up");
            }
            DeliveryState::Sent => tracing::debug!(%account, "push delivery sent"),
            _ => {}
        }
        self.record(&delivery.key, &state).await;
    }

    /// Sleeps, unless cancelled first; `false` when cancelled.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }

    /// Waits for the handler's completion, retrying store errors.
    async fn completion(&self, delivery: &Delivery, limit: Duration) -> Result<Completion, Stop> {
        let mut backoff = self.retry.first_backoff;
        for _ in 0..self.retry.max_tries {
            let waited = tokio::select! {
                () = self.cancel.cancelled() => return Err(Stop::Cancelled),
                waited = self.store.wait(&delivery.key, limit) => waited,
            };
            match waited {
                Ok(Some(completion)) => return Ok(completion),
                Ok(None) => return Err(Stop::Failed("the handler did not finish".to_owned())),
                Err(e) => {
                    tracing::warn!(error = %e, "push worker could not read the store");
                    if !self.pause(backoff).await {
                        return Err(Stop::Cancelled);
                    }
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
            }
        }
        Err(Stop::Failed("the store could not be read".to_owned()))
    }

    async fn send(
        &self,
        push: &PushAccount,
        delivery: &Delivery,
        reply: &wechat_proto::Reply,
    ) -> Option<DeliveryState> {
        let mut backoff = self.retry.first_backoff;
        let mut tries = 0;
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            tries += 1;
            match push.client.send(&delivery.to_user, reply).await {
                Ok(()) => return Some(DeliveryState::Sent),
                Err(e) if !e.is_transient() => return Some(DeliveryState::Failed(e.to_string())),
                Err(e) if tries >= self.retry.max_tries => {
                    return Some(DeliveryState::Failed(format!(
                        "gave up after {tries} tries: {e}"
                    )))
                }
                Err(e) => {
                    tracing::info!(account = %delivery.key.account, error = %e, tries, "push send failed; retrying");
                    if !self.pause(backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
            }
        }
    }

    /// Records the outcome, retrying briefly: a sent delivery left pending would be sent
    /// again on the next start.
    async fn record(&self, key: &StoreKey, state: &DeliveryState) {
        let mut delay = Duration::from_millis(20);
        for attempt in 1..=5 {
            match self.store.finish(key, state).await {
                Ok(()) => return,
                Err(e) if attempt == 5 => {
                    tracing::error!(error = %e, "could not record a push delivery's outcome");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}
