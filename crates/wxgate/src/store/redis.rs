//! The Redis store: several gateway instances behind one load balancer share single
//! flight, replies, deferrals, push deliveries and the inbox on one Redis server.
//!
//! It exists because WeChat's retries of one message land on different instances. With
//! a file per instance every instance would run the handler and a reply made on one would
//! never reach a retry on another; here every instance claims, completes and waits on the
//! same keys.
//!
//! How it works (the key layout is in `scripts`):
//! - **Every read-then-write is one Lua script**, run atomically by Redis: the claim
//!   (`First` / `InFlight` / `Done` with the attempt count), the completion, a deferral,
//!   taking a deferred reply, taking over orphaned deliveries, pruning.
//! - **Completions wake waiters on every instance**: the completing script publishes the
//!   key on the prefix's `done` channel and each store's listener wakes its waiters (see
//!   `wake` for why no wake-up is lost). Nothing polls. Every instance receives every
//!   notice (a few dozen bytes per completed message), which is small next to the request.
//! - **Owner leases**: each store has a random instance id and refreshes
//!   `lease:<id>` five times per [`LEASE_TTL`], with that TTL. A first claim is
//!   recorded as running on its owner. An instance whose lease lapsed is dead: any live
//!   instance completes its running claims as failed with [`INTERRUPTED`] (as the SQLite
//!   backend settles a crashed process's claims at open), so a retry gets `Done` and the
//!   handler never runs a second time, and takes over its pending push deliveries.
//!   Neither happens until the settling instance itself has heartbeated without a break for
//!   a whole [`LEASE_TTL`], so that a Redis restart (which can lose or expire every lease at
//!   once) never makes live instances look dead.
//! - **Every call is bounded** by [`COMMAND_TIMEOUT`], so that a slow Redis fails a request
//!   with 503 (WeChat retries) instead of making an attempt miss WeChat's 5 s.
//! - **A completion that cannot be written** (Redis unreachable when a handler finishes)
//!   is kept in memory, answered to this instance's retries and waiters, written again
//!   every heartbeat until it is, and reported by [`Store::health`] meanwhile.
//! - **Retention**: records and deliveries carry a TTL of the inbox retention (a backstop),
//!   claims one of the claims' retention; [`Store::prune`] trims the sorted sets and
//!   removes expired history in batches, as for the other backends.
//!
//! What it must not do: log the URL's password or any key (keys name followers), poll for
//! completions, block a tokio worker, or panic when Redis fails: every failure is
//! [`StoreError::Backend`]. Durability is Redis's: run it with `appendonly yes` and
//! `appendfsync always` (or accept losing the last second with `everysec`).

mod scripts;
mod wake;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wechat_proto::{DedupKey, Reply};

use self::wake::Waiters;
use super::live::lock;
use super::memory::duration_ms;
use super::sqlite::INTERRUPTED;
use super::{
    AnswerKind, AnswerRecord, Claim, Claimed, Claims, Completion, Deferrals, Delivery,
    DeliveryState, Health, Inbox, InboxCursor, InboxEntry, InboxPage, InboxQuery, InboxStats,
    NewMessage, Outbox, Retention, Store, StoreError, StoreKey,
};

/// How long a lease lives without a heartbeat: after it, the instance counts as dead. The
/// heartbeat (which also retries unwritten completions) runs five times per lease.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// The longest one Redis command may take before it fails the call.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

/// The longest a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "wxgate:";

/// A Redis URL (`redis://` or `rediss://`, maybe with a password). Its `Debug` and
/// [`RedisUrl::masked`] hide the password; only [`RedisUrl::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the URL's form: a `redis://` or `rediss://` URL with a host.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let url = url::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!("scheme {:?} is not redis or rediss", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".to_owned());
        }
        Ok(RedisUrl(text.to_owned()))
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn masked(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                // Setting a password fails only for URLs without a host, refused in parse.
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            Err(_) => "<unparsable redis URL>".to_owned(),
        }
    }

    /// The URL as configured, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.masked())
    }
}

/// How to open a [`RedisStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// The server.
    pub url: RedisUrl,
    /// Put before every key, so that several gateways (or tests) share one server.
    pub key_prefix: String,
    /// How long claims stay live and history is kept.
    pub retention: Retention,
    /// How long this instance's lease lives without a heartbeat ([`LEASE_TTL`]); the
    /// heartbeat runs five times per lease.
    pub lease_ttl: Duration,
}

impl RedisOptions {
    /// Options with the default prefix, retention and lease.
    pub fn new(url: RedisUrl) -> RedisOptions {
        RedisOptions {
            url,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            retention: Retention::default(),
            lease_ttl: LEASE_TTL,
        }
    }
}

/// A store on a Redis server, shared by every instance configured with the same URL and
/// prefix. See the module docs.
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Stops the heartbeat and the listener when the store is dropped.
    stop: CancellationToken,
}

/// What the store's calls and its background tasks share.
struct Inner {
    conn: ConnectionManager,
    prefix: String,
    /// The URL with its password masked, for errors and `Debug`.
    url: String,
    retention: Retention,
    lease_ttl: Duration,
    /// This instance's id, the owner of its claims and deliveries.
    owner: String,
    waiters: Arc<Waiters>,
    /// Completions Redis did not take yet, by suffix, with the last error.
    unwritten: Mutex<(HashMap<String, Completion>, String)>,
    /// Since when the heartbeat has succeeded without a break (`None` after a failure).
    steady_since: Mutex<Option<Instant>>,
    messages: AtomicU64,
    live_claims: AtomicU64,
    pruned: AtomicU64,
}

impl RedisStore {
    /// Connects, subscribes to completions, takes this instance's lease and starts its
    /// heartbeat. Fails with the (masked) URL when Redis cannot be reached.
    pub async fn open(options: RedisOptions) -> Result<RedisStore, StoreError> {
        let masked = options.url.masked();
        let unreachable =
            |error: String| StoreError::Backend(format!("cannot reach redis at {masked}: {error}"));
        let client =
            redis::Client::open(options.url.expose()).map_err(|e| unreachable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unreachable("no answer in time".to_owned()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let owner = format!("{:016x}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            conn,
            prefix: options.key_prefix.clone(),
            url: masked.clone(),
            retention: options.retention,
            lease_ttl: options.lease_ttl,
            owner,
            waiters: Arc::new(Waiters::default()),
            unwritten: Mutex::new((HashMap::new(), String::new())),
            steady_since: Mutex::new(None),
            messages: AtomicU64::new(0),
            live_claims: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
        });
        inner
            .heartbeat()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        inner.refresh_counters().await?;
        let stop = CancellationToken::new();
        wake::listen(
            client,
            format!("{}done", inner.prefix),
            Arc::clone(&inner.waiters),
            CONNECT_TIMEOUT,
            stop.clone(),
        )
        .await
        .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(maintain(Arc::clone(&inner), stop.clone()));
        tracing::info!(redis = %masked, instance = %inner.owner, "redis store open");
        Ok(RedisStore { inner, stop })
    }

    /// This instance's id, as its lease and its claims name it.
    pub fn instance_id(&self) -> &str {
        &self.inner.owner
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("instance", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

/// The heartbeat: refreshes the lease, writes unwritten completions, and settles the
/// claims of dead instances, until `stop`.
async fn maintain(inner: Arc<Inner>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(inner.lease_ttl / 5);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last heartbeat failed: a failure is logged once, not every tick.
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match inner.heartbeat().await {
            Err(error) if !failing => {
                tracing::warn!(%error, "redis heartbeat failed; retrying every tick");
                failing = true;
                continue;
            }
            Err(_) => continue,
            Ok(()) if failing => {
                tracing::info!("redis heartbeat restored");
                failing = false;
            }
            Ok(()) => {}
        }
        inner.write_unwritten().await;
        if inner.steady() {
            match inner.settle_dead().await {
                Ok(0) => {}
                Ok(settled) => tracing::warn!(
                    settled,
                    "recorded as interrupted the running claims of instances whose lease lapsed"
                ),
                Err(error) => {
                    tracing::warn!(%error, "settling the claims of dead instances failed")
                }
            }
        }
    }
}

impl Inner {
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let lease = format!("{}lease:{}", self.prefix, self.owner);
        let result: Result<(), StoreError> = redis::pipe()
            .atomic()
            .pset_ex(&lease, "1", duration_ms(self.lease_ttl).max(1) as u64)
            .ignore()
            .sadd(format!("{}owners", self.prefix), &self.owner)
            .ignore()
            .pexpire(
                format!("{}owners", self.prefix),
                duration_ms(self.retention.claims) + 60_000,
            )
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(backend);
        let mut steady = lock(&self.steady_since);
        match &result {
            Ok(()) => {
                steady.get_or_insert_with(Instant::now);
            }
            Err(_) => *steady = None,
        }
        result
    }

    /// Whether the heartbeat has held for a whole lease: only then may another instance's
    /// missing lease mean that it is dead.
    fn steady(&self) -> bool {
        lock(&self.steady_since).is_some_and(|since| since.elapsed() >= self.lease_ttl)
    }

    async fn settle_dead(&self) -> Result<u64, StoreError> {
        let interrupted = encode(&Completion {
            reply: None,
            error: Some(INTERRUPTED.to_owned()),
            handler_ms: 0,
        })?;
        scripts::SETTLE_DEAD
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(interrupted)
            .arg(&self.owner)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn complete_in_redis(
        &self,
        suffix: &str,
        completion: &Completion,
    ) -> Result<bool, StoreError> {
        let has_reply = if completion.reply.is_some() { "1" } else { "0" };
        let written: i64 = scripts::COMPLETE
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(suffix)
            .arg(encode(completion)?)
            .arg(has_reply)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(written == 1)
    }

    /// Writes the completions Redis did not take; keeps those that still fail.
    async fn write_unwritten(&self) {
        let pending: Vec<(String, Completion)> = lock(&self.unwritten)
            .0
            .iter()
            .map(|(suffix, completion)| (suffix.clone(), completion.clone()))
            .collect();
        for (suffix, completion) in pending {
            match self.complete_in_redis(&suffix, &completion).await {
                // Written, or its claim is gone (pruned): either way nothing is left to do.
                Ok(_) => {
                    lock(&self.unwritten).0.remove(&suffix);
                }
                Err(error) => {
                    lock(&self.unwritten).1 = error.to_string();
                    return;
                }
            }
        }
    }

    fn unwritten(&self, suffix: &str) -> Option<Completion> {
        lock(&self.unwritten).0.get(suffix).cloned()
    }

    async fn refresh_counters(&self) -> Result<(), StoreError> {
        let (messages, pruned, live): (Option<i64>, Option<i64>, u64) = redis::pipe()
            .get(format!("{}n:messages", self.prefix))
            .get(format!("{}n:pruned", self.prefix))
            .zcard(format!("{}claims", self.prefix))
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        self.set_counters(messages.unwrap_or(0), pruned.unwrap_or(0), live);
        Ok(())
    }

    fn set_counters(&self, messages: i64, pruned: i64, live: u64) {
        self.messages
            .store(u64::try_from(messages).unwrap_or(0), Ordering::Relaxed);
        self.pruned
            .store(u64::try_from(pruned).unwrap_or(0), Ordering::Relaxed);
        self.live_claims.store(live, Ordering::Relaxed);
    }

    /// Where the claim of `suffix` stands: `None` when there is none, `Some(None)` while
    /// it runs.
    async fn status(&self, suffix: &str) -> Result<Option<Option<Completion>>, StoreError> {
        let status: Vec<String> = scripts::STATUS
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(suffix)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match status.first().map(String::as_str) {
            Some("running") => Ok(Some(None)),
            Some("done") => Ok(Some(Some(decode_completion(field(&status, 1)?)?))),
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl Claims for RedisStore {
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError> {
        let inner = &*self.inner;
        let suffix = suffix(&message.key);
        let record_ttl = inner
            .retention
            .inbox
            .map_or(0, |inbox| duration_ms(inbox) + 86_400_000);
        let reply: Vec<String> = scripts::CLAIM
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(&suffix)
            .arg(message.received_at_ms)
            .arg(duration_ms(inner.retention.claims))
            .arg(record_ttl)
            .arg(&inner.owner)
            .arg(&message.key.account)
            .arg(message.key.dedup.stable_text())
            .arg(&message.from_user_name)
            .arg(&message.kind)
            .arg(&message.inbound_json)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        let attempt: u32 = field(&reply, 1)?
            .parse()
            .map_err(|_| StoreError::Corrupt("a claim's attempt count".to_owned()))?;
        let claim = match field(&reply, 0)? {
            "first" => {
                let messages = field(&reply, 3)?.parse().unwrap_or(0);
                let live = field(&reply, 4)?.parse().unwrap_or(0);
                inner.messages.store(messages, Ordering::Relaxed);
                inner.live_claims.store(live, Ordering::Relaxed);
                Claim::First
            }
            "done" => Claim::Done(decode_completion(field(&reply, 2)?)?),
            // A completion this instance could not write yet is still this key's answer.
            _ => match inner.unwritten(&suffix) {
                Some(completion) => Claim::Done(completion),
                None => Claim::InFlight,
            },
        };
        Ok(Claimed { claim, attempt })
    }

    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let suffix = suffix(key);
        match inner.complete_in_redis(&suffix, completion).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(no_claim("complete", key)),
            Err(error) => {
                // Kept and written with the next heartbeat; this instance's waiters and
                // retries are answered from memory meanwhile.
                tracing::warn!(%error, account = %key.account, "a completion waits for redis");
                {
                    let mut unwritten = lock(&inner.unwritten);
                    unwritten.0.insert(suffix.clone(), completion.clone());
                    unwritten.1 = error.to_string();
                }
                inner.waiters.wake(&suffix);
                Ok(())
            }
        }
    }

    async fn wait(
        &self,
        key: &StoreKey,
        timeout: Duration,
    ) -> Result<Option<Completion>, StoreError> {
        let inner = &*self.inner;
        let suffix = suffix(key);
        // Registered once, before the first read, and enabled before every read: a
        // completion published after a read always wakes this waiter (see `wake`).
        let registration = inner.waiters.register(&suffix);
        let waiting = async {
            loop {
                let notified = registration.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(completion) = inner.unwritten(&suffix) {
                    return Ok(Some(completion));
                }
                match inner.status(&suffix).await? {
                    None => return Ok(None),
                    Some(Some(completion)) => return Ok(Some(completion)),
                    Some(None) => {}
                }
                notified.await;
            }
        };
        // No last look after the deadline: the caller's budget is already spent.
        tokio::time::timeout(timeout, waiting)
            .await
            .unwrap_or(Ok(None))
    }

    async fn record_answer(
        &self,
        key: &StoreKey,
        answer: AnswerKind,
        attempt: u32,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let logged = AnswerRecord {
            attempt,
            answer,
            at_ms,
        };
        let written: i64 = scripts::ANSWER
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(suffix(key))
            .arg(answer.as_str())
            .arg(attempt)
            .arg(logged.log_text())
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        if written == 1 {
            Ok(())
        } else {
            Err(no_claim("record_answer", key))
        }
    }
}

#[async_trait]
impl Deferrals for RedisStore {
    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let written: i64 = scripts::DEFER
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(suffix(key))
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        if written == 1 {
            Ok(())
        } else {
            Err(no_claim("defer_reply", key))
        }
    }

    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError> {
        let inner = &*self.inner;
        let taken: Option<(String, String)> = scripts::TAKE_DEFERRED
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(account)
            .arg(from_user_name)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        let Some((dedup, completion)) = taken else {
            return Ok(None);
        };
        let key = StoreKey {
            account: account.to_owned(),
            dedup: parse_dedup(&dedup)?,
        };
        match decode_completion(&completion)?.reply {
            Some(reply) => Ok(Some((key, reply))),
            None => Err(StoreError::Corrupt(
                "a deferred record without reply".to_owned(),
            )),
        }
    }
}

#[async_trait]
impl Inbox for RedisStore {
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError> {
        page_entries(&mut self.inner.conn(), &self.inner.prefix, query).await
    }

    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError> {
        get_entry(
            &mut self.inner.conn(),
            &self.inner.prefix,
            account,
            dedup_key,
        )
        .await
    }
}

#[async_trait]
impl Outbox for RedisStore {
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let ttl = inner
            .retention
            .inbox
            .map_or(0, |inbox| duration_ms(inbox) + 86_400_000);
        let written: i64 = scripts::ENQUEUE
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(suffix(&delivery.key))
            .arg(&delivery.to_user)
            .arg(delivery.created_at_ms)
            .arg(&inner.owner)
            .arg(ttl)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        Ok(written == 1)
    }

    async fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        let inner = &*self.inner;
        let takeover = if inner.steady() { "1" } else { "0" };
        let flat: Vec<String> = scripts::TAKE_PENDING
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(&inner.owner)
            .arg(takeover)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        flat.chunks_exact(3)
            .map(|triple| {
                Ok(Delivery {
                    key: parse_suffix(&triple[0])?,
                    to_user: triple[1].clone(),
                    created_at_ms: triple[2].parse().map_err(|_| {
                        StoreError::Corrupt("a delivery's creation time".to_owned())
                    })?,
                })
            })
            .collect()
    }

    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let (state, reason) = state.columns();
        let finished_at_ms = crate::clock::WallClock::now_ms(&crate::clock::SystemClock);
        let _: i64 = scripts::FINISH
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(suffix(key))
            .arg(state)
            .arg(reason.unwrap_or(""))
            .arg(finished_at_ms)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, StoreError> {
        let inner = &*self.inner;
        let (state, reason): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(format!("{}o:{}", inner.prefix, suffix(key)))
            .arg("state")
            .arg("reason")
            .query_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        Ok(state.map(|state| {
            DeliveryState::from_columns(&state, reason.filter(|reason| !reason.is_empty()))
        }))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn prune(&self, now_ms: i64, batch: usize) -> Result<usize, StoreError> {
        let inner = &*self.inner;
        let claims_horizon = now_ms.saturating_sub(duration_ms(inner.retention.claims));
        let history_horizon = inner
            .retention
            .inbox
            .map(|inbox| now_ms.saturating_sub(duration_ms(inbox)).to_string())
            .unwrap_or_default();
        let (removed, messages, pruned, live): (usize, i64, i64, u64) = scripts::PRUNE
            .prepare_invoke()
            .arg(&inner.prefix)
            .arg(claims_horizon)
            .arg(history_horizon)
            .arg(batch)
            .invoke_async(&mut inner.conn())
            .await
            .map_err(backend)?;
        inner.set_counters(messages, pruned, live);
        Ok(removed)
    }

    fn retention(&self) -> Retention {
        self.inner.retention
    }

    fn stats(&self) -> InboxStats {
        InboxStats {
            messages: self.inner.messages.load(Ordering::Relaxed),
            live_claims: self.inner.live_claims.load(Ordering::Relaxed),
            pruned: self.inner.pruned.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> Health {
        let unwritten = lock(&self.inner.unwritten);
        if unwritten.0.is_empty() {
            Health::Ok
        } else {
            Health::Degraded {
                waiting: unwritten.0.len(),
                reason: unwritten.1.clone(),
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.inner.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.write_unwritten().await;
        self.inner.refresh_counters().await?;
        match self.health() {
            Health::Ok => Ok(()),
            Health::Degraded { waiting, reason } => Err(StoreError::Backend(format!(
                "{waiting} completions wait for redis: {reason}"
            ))),
        }
    }
}

/// The inbox on a Redis server, read-only: for `wxgate inbox` beside running gateways. It
/// takes no lease and writes nothing.
pub struct RedisReader {
    conn: ConnectionManager,
    prefix: String,
    url: String,
}

impl RedisReader {
    /// Connects; fails with the (masked) URL when Redis cannot be reached.
    pub async fn open(url: &RedisUrl, key_prefix: &str) -> Result<RedisReader, StoreError> {
        let masked = url.masked();
        let unreachable =
            |error: String| StoreError::Backend(format!("cannot reach redis at {masked}: {error}"));
        let client = redis::Client::open(url.expose()).map_err(|e| unreachable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(CONNECT_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unreachable("no answer in time".to_owned()))?
        .map_err(|e| unreachable(e.to_string()))?;
        Ok(RedisReader {
            conn,
            prefix: key_prefix.to_owned(),
            url: masked,
        })
    }
}

impl fmt::Debug for RedisReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReader")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Inbox for RedisReader {
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError> {
        page_entries(&mut self.conn.clone(), &self.prefix, query).await
    }

    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError> {
        get_entry(&mut self.conn.clone(), &self.prefix, account, dedup_key).await
    }
}

/// The record fields a listing reads, in the order [`entry_from_fields`] decodes them.
const LIST_FIELDS: [&str; 12] = [
    "account", "dedup", "from", "kind", "json", "at", "n", "done", "ans", "ansn", "def", "anss",
];

/// How many index members a page reads per round trip, at least.
const PAGE_CHUNK: usize = 128;

/// One page of the inbox, newest first: members of the arrival index (narrowed by the
/// time range and the cursor) are read in chunks, their records fetched in one pipeline
/// per chunk and filtered with [`InboxQuery::matches`], until the page is full and one
/// more match shows that a next page exists.
async fn page_entries(
    conn: &mut ConnectionManager,
    prefix: &str,
    query: &InboxQuery,
) -> Result<InboxPage, StoreError> {
    let index = match &query.account {
        Some(account) => format!("{prefix}inbox:{account}"),
        None => format!("{prefix}inbox"),
    };
    let newest = match (query.until_ms, query.before) {
        (Some(until), Some(before)) => Some(until.min(before.received_at_ms)),
        (until, before) => until.or(before.map(|before| before.received_at_ms)),
    };
    let max = newest.map_or_else(|| "+inf".to_owned(), |newest| newest.to_string());
    let min = query
        .since_ms
        .map_or_else(|| "-inf".to_owned(), |since| since.to_string());
    let limit = query.effective_limit();
    let chunk = (limit + 1).max(PAGE_CHUNK);
    let mut entries: Vec<(InboxCursor, InboxEntry)> = Vec::new();
    let mut offset = 0;
    loop {
        let members: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&index)
            .arg(&max)
            .arg(&min)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(offset)
            .arg(chunk)
            .query_async(conn)
            .await
            .map_err(backend)?;
        offset += members.len();
        let candidates: Vec<InboxCursor> = members
            .iter()
            .filter_map(|(member, score)| {
                Some(InboxCursor {
                    // Scores are whole milliseconds, exact in an f64.
                    received_at_ms: *score as i64,
                    seq: member.parse().ok()?,
                })
            })
            // Only what is strictly older than the cursor.
            .filter(|cursor| {
                query.before.is_none_or(|before| {
                    (cursor.received_at_ms, cursor.seq) < (before.received_at_ms, before.seq)
                })
            })
            .collect();
        let records =
            read_records(conn, prefix, candidates.iter().map(|cursor| cursor.seq)).await?;
        for (cursor, record) in candidates.into_iter().zip(records) {
            let Some(entry) = record else { continue };
            if query.matches(&entry) {
                entries.push((cursor, entry));
                if entries.len() > limit {
                    break;
                }
            }
        }
        if entries.len() > limit || members.len() < chunk {
            break;
        }
    }
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|(cursor, _)| *cursor)
    } else {
        None
    };
    Ok(InboxPage {
        entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        next,
    })
}

/// The latest record of one message, through its `k:` pointer.
async fn get_entry(
    conn: &mut ConnectionManager,
    prefix: &str,
    account: &str,
    dedup_key: &str,
) -> Result<Option<InboxEntry>, StoreError> {
    let id: Option<i64> = redis::cmd("GET")
        .arg(format!("{prefix}k:{account}|{dedup_key}"))
        .query_async(conn)
        .await
        .map_err(backend)?;
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(read_records(conn, prefix, [id]).await?.pop().flatten())
}

/// Reads records by id in one pipeline; a record whose TTL ran out is `None`.
async fn read_records(
    conn: &mut ConnectionManager,
    prefix: &str,
    ids: impl IntoIterator<Item = i64>,
) -> Result<Vec<Option<InboxEntry>>, StoreError> {
    let mut pipe = redis::pipe();
    let mut count = 0;
    for id in ids {
        pipe.cmd("HMGET")
            .arg(format!("{prefix}r:{id}"))
            .arg(&LIST_FIELDS[..]);
        count += 1;
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let records: Vec<Vec<Option<String>>> = pipe.query_async(conn).await.map_err(backend)?;
    records
        .into_iter()
        .map(|fields| {
            if fields.first().is_some_and(Option::is_some) {
                entry_from_fields(fields).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect()
}

fn entry_from_fields(fields: Vec<Option<String>>) -> Result<InboxEntry, StoreError> {
    let mut fields = fields.into_iter();
    let mut next = || fields.next().flatten();
    let corrupt = |what: &str| StoreError::Corrupt(format!("a redis record's {what}"));
    let account = next().ok_or_else(|| corrupt("account"))?;
    let dedup_key = next().ok_or_else(|| corrupt("dedup key"))?;
    let from_user_name = next().unwrap_or_default();
    let kind = next().unwrap_or_default();
    let inbound_json = next().unwrap_or_default();
    let received_at_ms = next()
        .and_then(|at| at.parse().ok())
        .ok_or_else(|| corrupt("arrival time"))?;
    let attempts = next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let completion = next().as_deref().map(decode_completion).transpose()?;
    let answer = next();
    let answer_attempt = next();
    let last_answer = match (answer, answer_attempt) {
        (Some(kind), Some(attempt)) => Some((
            AnswerKind::parse(&kind).ok_or_else(|| corrupt("answer kind"))?,
            attempt.parse().map_err(|_| corrupt("answer attempt"))?,
        )),
        _ => None,
    };
    let deferred = next().as_deref() == Some("1");
    let answers = next()
        .as_deref()
        .map(AnswerRecord::parse_log)
        .unwrap_or_default();
    Ok(InboxEntry {
        account,
        dedup_key,
        from_user_name,
        kind,
        inbound_json,
        received_at_ms,
        attempts,
        completion,
        last_answer,
        answers,
        deferred,
    })
}

/// A key's suffix: `account|dedup key` (account names contain no `|`). The dedup key's
/// stable text, never its `Display`, which masks the OpenID.
fn suffix(key: &StoreKey) -> String {
    format!("{}|{}", key.account, key.dedup.stable_text())
}

fn parse_suffix(suffix: &str) -> Result<StoreKey, StoreError> {
    let (account, dedup) = suffix
        .split_once('|')
        .ok_or_else(|| StoreError::Corrupt("a redis key suffix".to_owned()))?;
    Ok(StoreKey {
        account: account.to_owned(),
        dedup: parse_dedup(dedup)?,
    })
}

fn parse_dedup(text: &str) -> Result<DedupKey, StoreError> {
    text.parse()
        .map_err(|error| StoreError::Corrupt(format!("a stored dedup key: {error}")))
}

fn field(reply: &[String], index: usize) -> Result<&str, StoreError> {
    reply
        .get(index)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt("a short answer from a redis script".to_owned()))
}

fn encode(completion: &Completion) -> Result<String, StoreError> {
    serde_json::to_string(completion)
        .map_err(|error| StoreError::Backend(format!("cannot encode a completion: {error}")))
}

fn decode_completion(json: &str) -> Result<Completion, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::Corrupt(format!("a stored completion: {error}")))
}

fn no_claim(operation: &'static str, key: &StoreKey) -> StoreError {
    super::live::no_claim(operation, key)
}

fn backend(error: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}
