//! The storage seam: single flight, deferred replies, the inbox and the push outbox, on one
//! backend opened in one place.
//!
//! [`open`] turns the `[store]` configuration into a [`Storage`]; nothing else in the
//! gateway names a backend. A backend implements four small traits, one per concern, and
//! each concern has one conformance suite that every backend runs unchanged
//! (`tests/store/`):
//! - [`Claims`] — the atomic claim that makes the handler run once per message, its
//!   completion, waiting for it, and the answer each attempt gave;
//! - [`Deferrals`] — replies kept for the follower's next message (`ride_retries`);
//! - [`Inbox`] — the history of messages, queried by `wxgate inbox` and the console;
//! - [`Outbox`] — durable `push` deliveries.
//!
//! [`Store`] joins them with what every backend shares: health, pruning and flushing.
//!
//! Backends: [`memory`] (one process, tests), [`sqlite`] (the default: one process, one
//! file) and [`redis`] (several instances behind a load balancer share everything).
//!
//! Two horizons bound what a backend holds ([`Retention`]): claims stay live for
//! `retention` (WeChat retries within about 20 s; ten minutes leaves room), and history
//! (inbox rows, replies, deliveries) is pruned after `inbox_retention` by [`housekeeping`].
//!
//! The contract every backend keeps:
//! - [`Claims::claim`] returns [`Claim::First`] only once the message is recorded (durably,
//!   for persistent backends), so the message is on record before any answer leaves;
//! - a completion wakes every waiter at once (no polling) and is answered to later
//!   retries in this process even while its durable write is still being retried; a
//!   backend whose writes fail reports [`Health::Degraded`] until they are durable;
//! - time is passed in (`received_at_ms`, `now_ms`), so expiry and pruning are testable
//!   without sleeping; a backend never reads the wall clock to decide either.
//!
//! What the store must not do: run handlers, know about HTTP, or block a tokio worker.

pub mod housekeeping;
pub(crate) mod live;
pub mod memory;
pub mod redis;
pub mod sqlite;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wechat_proto::{DedupKey, Reply};

use crate::config::StoreConfig;

/// How long a claim and its reply stay live after the message was received. WeChat
/// retries within ~20 s; ten minutes leaves room for clock skew and slow handlers.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

/// How long inbox history is kept by default: seven days.
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The two horizons of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// How long a claim stays live after its message was first received: a retry inside
    /// it is coalesced, one after it starts over.
    pub claims: Duration,
    /// How long history (inbox rows, replies, deliveries) is kept; `None` keeps it forever.
    pub inbox: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            claims: DEFAULT_RETENTION,
            inbox: Some(DEFAULT_INBOX_RETENTION),
        }
    }
}

/// The key of one message in the store: the account it arrived on and its dedup key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreKey {
    /// The account name (the `{account}` of `/wx/{account}`).
    pub account: String,
    /// The protocol's dedup key (message id, or event hash).
    pub dedup: DedupKey,
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.dedup)
    }
}

/// What is recorded about a message when it is first claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// Where the message lives in the store.
    pub key: StoreKey,
    /// The sender's OpenID, to find a reply deferred to their next message.
    pub from_user_name: String,
    /// The wire `MsgType` (and `Event` for events, as `event:subscribe`), for listing.
    pub kind: String,
    /// The message in its documented JSON form, so the inbox can show and replay it.
    pub inbound_json: String,
    /// When this attempt arrived, in Unix milliseconds. Decides expiry of older claims.
    pub received_at_ms: i64,
}

/// The result of claiming a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// Nobody had the key: the message is now recorded and this attempt runs the handler.
    First,
    /// Another attempt is running the handler; wait for its completion.
    InFlight,
    /// The handler already finished; answer its result again.
    Done(Completion),
}

/// A claim together with the delivery attempt it counts (1 for the first delivery).
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// What the caller must do.
    pub claim: Claim,
    /// How many deliveries of this key have arrived, this one included.
    pub attempt: u32,
}

/// The result of running the handler once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The reply to answer, or `None` for the bare `success`.
    pub reply: Option<Reply>,
    /// Why the handler failed, when it did (the follower then gets `success`).
    pub error: Option<String>,
    /// How long the handler ran, in milliseconds.
    pub handler_ms: u64,
}

/// What one attempt answered to WeChat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// The handler's reply, passively.
    Replied,
    /// `success` because the handler produced no reply or failed.
    Success,
    /// `success` at the budget while the handler kept working (policy `ack` / `push`).
    Acked,
    /// Nothing useful: the attempt was held open so that WeChat retries (`ride_retries`).
    Held,
    /// The "still working" text on the last attempt; the reply waits for the next message.
    StillWorking,
    /// A reply deferred from an earlier message, delivered with this one.
    DeliveredDeferred,
}

impl AnswerKind {
    /// Every answer kind, in the order of [`AnswerKind::as_str`]'s table.
    pub const ALL: [AnswerKind; 6] = [
        AnswerKind::Replied,
        AnswerKind::Success,
        AnswerKind::Acked,
        AnswerKind::Held,
        AnswerKind::StillWorking,
        AnswerKind::DeliveredDeferred,
    ];

    /// The snake_case name used in metrics and the inbox.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Replied => "replied",
            AnswerKind::Success => "success",
            AnswerKind::Acked => "acked",
            AnswerKind::Held => "held",
            AnswerKind::StillWorking => "still_working",
            AnswerKind::DeliveredDeferred => "delivered_deferred",
        }
    }

    /// The inverse of [`AnswerKind::as_str`].
    pub fn parse(text: &str) -> Option<AnswerKind> {
        AnswerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Where a message stands, as recorded in the inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The message's key.
    pub account: String,
    /// The dedup key's text form.
    pub dedup_key: String,
    /// The sender's OpenID.
    pub from_user_name: String,
    /// The wire kind, e.g. `text` or `event:subscribe`.
    pub kind: String,
    /// The message in its JSON form.
    pub inbound_json: String,
    /// First arrival, Unix milliseconds.
    pub received_at_ms: i64,
    /// Deliveries seen, the first one included.
    pub attempts: u32,
    /// The handler's result, once it finished.
    pub completion: Option<Completion>,
    /// The last answer given and on which attempt.
    pub last_answer: Option<(AnswerKind, u32)>,
    /// Every attempt's answer, with its time, oldest first (at most [`MAX_ANSWER_RECORDS`]).
    #[serde(default)]
    pub answers: Vec<AnswerRecord>,
    /// Whether the reply waits to be delivered with the sender's next message.
    pub deferred: bool,
}

/// The most answers an inbox entry keeps: WeChat delivers a message at most four times,
/// so this only bounds what a misbehaving sender could make it store.
pub const MAX_ANSWER_RECORDS: usize = 16;

/// What one attempt answered, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// Which delivery of the message (1 for the first).
    pub attempt: u32,
    /// What it answered.
    pub answer: AnswerKind,
    /// When the answer left, Unix milliseconds.
    pub at_ms: i64,
}

impl AnswerRecord {
    /// The record in the compact text form backends append to a message's answer log:
    /// `attempt:answer:at_ms;`.
    pub fn log_text(&self) -> String {
        format!("{}:{}:{};", self.attempt, self.answer.as_str(), self.at_ms)
    }

    /// Reads an answer log written with [`AnswerRecord::log_text`], keeping the newest
    /// [`MAX_ANSWER_RECORDS`]. Unreadable parts are skipped: the log is for showing.
    pub fn parse_log(log: &str) -> Vec<AnswerRecord> {
        let records: Vec<AnswerRecord> = log
            .split(';')
            .filter_map(|part| {
                let mut fields = part.split(':');
                let attempt = fields.next()?.parse().ok()?;
                let answer = AnswerKind::parse(fields.next()?)?;
                let at_ms = fields.next()?.parse().ok()?;
                Some(AnswerRecord {
                    attempt,
                    answer,
                    at_ms,
                })
            })
            .collect();
        let skip = records.len().saturating_sub(MAX_ANSWER_RECORDS);
        records.into_iter().skip(skip).collect()
    }
}

/// Which inbox entries to list. Every filter that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxQuery {
    /// Only this account.
    pub account: Option<String>,
    /// Only messages received at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only messages received at or before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only this kind: the exact label (`text`, `event:click`), or a family before its
    /// colon (`event` matches every `event:…`).
    pub kind: Option<String>,
    /// Only messages whose last answer is this [`AnswerKind`] name; also `failed` (the
    /// handler failed) and `pending` (the handler has not finished).
    pub answer: Option<String>,
    /// Only messages from this OpenID.
    pub sender: Option<String>,
    /// Only messages whose JSON form contains this text (case-sensitive).
    pub text: Option<String>,
    /// Only entries older than this position: the `next` of the previous page.
    pub before: Option<InboxCursor>,
    /// At most this many, newest first (0 means a default of 100).
    pub limit: usize,
}

/// The number of entries a listing returns when the query asks for 0.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// A position in the inbox's newest-first order, for paging: the receive time of an
/// entry and the backend's sequence number that breaks ties within one millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxCursor {
    /// The entry's `received_at_ms`.
    pub received_at_ms: i64,
    /// The backend's insertion order of the entry (row id, record index).
    pub seq: i64,
}

impl fmt::Display for InboxCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.received_at_ms, self.seq)
    }
}

impl std::str::FromStr for InboxCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<InboxCursor, String> {
        let bad = || format!("{text:?} is not a cursor (a `next` value of an earlier page)");
        let (time, seq) = text.split_once('.').ok_or_else(bad)?;
        Ok(InboxCursor {
            received_at_ms: time.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxPage {
    /// The entries, newest first.
    pub entries: Vec<InboxEntry>,
    /// Where the next page starts, when the limit cut this one short.
    pub next: Option<InboxCursor>,
}

impl InboxQuery {
    /// The page size this query asks for (0 means the default of 100).
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            self.limit
        }
    }

    /// Whether `entry` passes every filter except the time range and the cursor, which
    /// backends apply with their own indexes. Shared so that backends agree exactly.
    pub fn matches(&self, entry: &InboxEntry) -> bool {
        let kind_matches = |wanted: &str| {
            entry.kind == wanted
                || entry
                    .kind
                    .split_once(':')
                    .is_some_and(|(family, _)| family == wanted)
        };
        let answer_matches = |wanted: &str| match wanted {
            "failed" => entry
                .completion
                .as_ref()
                .is_some_and(|completion| completion.error.is_some()),
            "pending" => entry.completion.is_none(),
            name => entry
                .last_answer
                .is_some_and(|(answer, _)| answer.as_str() == name),
        };
        self.account
            .as_deref()
            .is_none_or(|account| entry.account == account)
            && self.kind.as_deref().is_none_or(kind_matches)
            && self.answer.as_deref().is_none_or(answer_matches)
            && self
                .sender
                .as_deref()
                .is_none_or(|sender| entry.from_user_name == sender)
            && self
                .text
                .as_deref()
                .is_none_or(|text| entry.inbound_json.contains(text))
    }
}

/// Counters a backend maintains as it writes, so that metrics never scan the inbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Messages the inbox holds.
    pub messages: u64,
    /// Live claims held in memory for single flight.
    pub live_claims: u64,
    /// Messages pruned since the store opened.
    pub pruned: u64,
}

/// A reply owed to a follower through the customer-service API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message whose reply is owed (its completion is read from the store).
    pub key: StoreKey,
    /// The follower's OpenID (`touser`).
    pub to_user: String,
    /// When the delivery was written, Unix milliseconds.
    pub created_at_ms: i64,
}

/// Where a delivery stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet; a worker is on it or will resume it on start.
    Pending,
    /// WeChat accepted the message.
    Sent,
    /// Nothing to send: the handler answered no reply (or `success`).
    NothingToSend,
    /// Given up, with the reason (a final WeChat error, an undeliverable reply type, a
    /// failed handler, or too many transient errors).
    Failed(String),
}

impl DeliveryState {
    /// The state's name and reason, as stored.
    pub fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            DeliveryState::Pending => ("pending", None),
            DeliveryState::Sent => ("sent", None),
            DeliveryState::NothingToSend => ("nothing_to_send", None),
            DeliveryState::Failed(reason) => ("failed", Some(reason)),
        }
    }

    /// The inverse of [`DeliveryState::columns`].
    pub fn from_columns(state: &str, reason: Option<String>) -> DeliveryState {
        match state {
            "pending" => DeliveryState::Pending,
            "sent" => DeliveryState::Sent,
            "nothing_to_send" => DeliveryState::NothingToSend,
            _ => DeliveryState::Failed(reason.unwrap_or_else(|| format!("state {state}"))),
        }
    }
}

/// Whether the backend's writes are keeping up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Everything acknowledged is durable.
    Ok,
    /// Some acknowledged writes are held in memory and retried until they are durable
    /// (say, the disk is full); the reason is the last failure.
    Degraded {
        /// How many writes wait.
        waiting: usize,
        /// The last failure.
        reason: String,
    },
}

/// A store failure. The gateway answers such a request with HTTP 503, so that WeChat
/// retries instead of the message being lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or failed.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// A write named a key that was never claimed (or whose claim expired).
    #[error("{operation}: no claim recorded for this key on account {account}")]
    NoClaim {
        /// The operation that was refused.
        operation: &'static str,
        /// The account (the key itself names a follower, whose OpenID stays out of logs).
        account: String,
    },
}

/// Single flight: the claim, its completion, waiting for it, and each attempt's answer.
#[async_trait]
pub trait Claims: Send + Sync + fmt::Debug + 'static {
    /// Claims `message.key` atomically and counts this delivery attempt.
    ///
    /// When no live record exists (none, or one received more than the claims' retention
    /// before `message.received_at_ms`), the message is recorded, durably for persistent
    /// backends, before this returns [`Claim::First`].
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError>;

    /// Records the handler's result and wakes every waiter. Retries are answered from it
    /// at once; a persistent backend makes it durable in the background and keeps retrying
    /// the write until it is (see [`Health`]).
    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError>;

    /// Waits up to `timeout` for the completion of `key`; `None` if it is still running.
    /// Returns at once when the key is already complete or was never claimed.
    async fn wait(
        &self,
        key: &StoreKey,
        timeout: Duration,
    ) -> Result<Option<Completion>, StoreError>;

    /// Records what attempt `attempt` answered, at `at_ms` (Unix ms).
    async fn record_answer(
        &self,
        key: &StoreKey,
        answer: AnswerKind,
        attempt: u32,
        at_ms: i64,
    ) -> Result<(), StoreError>;
}

/// Replies kept for the follower's next message (`ride_retries`).
#[async_trait]
pub trait Deferrals: Send + Sync + fmt::Debug + 'static {
    /// Marks the reply of `key` to be delivered with the sender's next message. A message
    /// whose handler finished without a reply has nothing to defer.
    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError>;

    /// Takes (at most once) the oldest deferred reply for this sender on this account.
    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError>;
}

/// The history of messages.
#[async_trait]
pub trait Inbox: Send + Sync + fmt::Debug + 'static {
    /// Lists inbox entries, newest first. Reflects every write acknowledged before it.
    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        Ok(self.page(query).await?.entries)
    }

    /// Lists one page of inbox entries, newest first, with the cursor of the next page.
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError>;

    /// The latest entry of one message, by account and the dedup key's text form.
    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError>;
}

/// Durable `push` deliveries: one record per message key.
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug + 'static {
    /// Records a pending delivery; `false` when one exists for the key already (in any
    /// state), so that a message is never owed twice.
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, StoreError>;

    /// Every pending delivery, oldest first (resumed on start).
    async fn pending(&self) -> Result<Vec<Delivery>, StoreError>;

    /// Records the final state of a delivery.
    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), StoreError>;

    /// The state of the delivery of `key`, if one was written.
    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, StoreError>;
}

/// One backend: every concern, plus what they share.
#[async_trait]
pub trait Store: Claims + Deferrals + Inbox + Outbox {
    /// Removes history older than the inbox retention (at most about `batch` records per
    /// call, so that each call holds the backend only briefly) and forgets expired claims.
    /// Returns how much it removed (messages, or expired claims, whichever is more); the
    /// caller repeats while that reaches `batch`.
    async fn prune(&self, now_ms: i64, batch: usize) -> Result<usize, StoreError>;

    /// The retention the store was opened with.
    fn retention(&self) -> Retention;

    /// The maintained counters (no scan).
    fn stats(&self) -> InboxStats;

    /// Whether acknowledged writes are durable (for `/readyz`).
    fn health(&self) -> Health;

    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything written so far durable (called on shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// Opens the configured store: the one place that turns `[store]` into a backend.
///
/// `now_ms` (from the gateway's wall clock) is when the SQLite backend settles the claims
/// a process that died left running. Pruning runs in [`housekeeping::spawn`].
pub async fn open(config: &StoreConfig, now_ms: i64) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Memory { retention } => {
            Arc::new(memory::MemoryStore::with_retention(*retention))
        }
        StoreConfig::Sqlite {
            path,
            retention,
            synchronous_full,
        } => {
            let options = sqlite::SqliteOptions {
                retention: *retention,
                synchronous: if *synchronous_full {
                    sqlite::Synchronous::Full
                } else {
                    sqlite::Synchronous::Normal
                },
                ..sqlite::SqliteOptions::default()
            };
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || {
                sqlite::SqliteStore::open(&path, options, now_ms)
            })
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??;
            Arc::new(store)
        }
        StoreConfig::Redis {
            url,
            key_prefix,
            retention,
        } => Arc::new(
            self::redis::RedisStore::open(self::redis::RedisOptions {
                url: url.clone(),
                key_prefix: key_prefix.clone(),
                retention: *retention,
                lease_ttl: self::redis::LEASE_TTL,
            })
            .await?,
        ),
    })
}

/// Opens the configured store's inbox for reading only, beside a gateway that may be
/// serving from it (for `wxgate inbox`). The memory backend has nothing to read from
/// outside its process.
pub async fn open_read_only(config: &StoreConfig) -> Result<Arc<dyn Inbox>, StoreError> {
    match config {
        StoreConfig::Memory { .. } => Err(StoreError::Backend(
            "the memory store lives inside the serving process; there is no inbox to read \
             from outside (use the sqlite backend)"
                .to_owned(),
        )),
        StoreConfig::Sqlite { path, .. } => {
            let path = path.clone();
            let reader = tokio::task::spawn_blocking(move || sqlite::SqliteReader::open(&path))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??;
            Ok(Arc::new(reader))
        }
        StoreConfig::Redis {
            url, key_prefix, ..
        } => Ok(Arc::new(
            self::redis::RedisReader::open(url, key_prefix).await?,
        )),
    }
}
