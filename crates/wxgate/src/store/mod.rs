//! The store: atomic claims (single flight), completions, and the durable inbox.
//!
//! One small trait, [`Store`], held as `Arc<dyn Store>` and chosen by configuration. Every
//! backend runs the same conformance suite (`tests/store_conformance.rs`). The trait is shaped so that
//! it can be implemented on Redis as well as on SQLite and in memory:
//! - a claim is one atomic operation (`SET NX PX` on Redis, one statement on the SQLite
//!   writer, one lock in memory) that also records the message, so that the message is
//!   durable before any answer leaves;
//! - waiting for another attempt's work may use an in-process wake-up as a fast path, but
//!   must also observe a completion written by another process (polling or pub/sub), and no
//!   method may rely on a transaction spanning two calls;
//! - time is passed in (`now_ms`), so expiry is testable without sleeping.
//!
//! What the store must not do: run handlers, know about HTTP, or read the clock to decide
//! expiry (except Redis' own key TTLs, which follow the same `retention`).

pub mod memory;
pub mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wechat_proto::{DedupKey, Reply};

/// How long a claim and its reply stay live after the message was received. WeChat
/// retries within ~20 s; ten minutes leaves room for clock skew and slow handlers.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

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
    /// Whether the reply waits to be delivered with the sender's next message.
    pub deferred: bool,
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
            100
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
}

/// The store every backend implements. See the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Claims `message.key` atomically and counts this delivery attempt.
    ///
    /// When no live record exists (none, or one received more than `retention` before
    /// `message.received_at_ms`), the message is recorded, durably for persistent backends,
    /// before this returns [`Claim::First`].
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError>;

    /// Records the handler's result and wakes every waiter, in this process or another.
    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError>;

    /// Waits up to `timeout` for the completion of `key`; `None` if it is still running.
    /// Returns at once when the key is already complete.
    async fn wait(
        &self,
        key: &StoreKey,
        timeout: Duration,
    ) -> Result<Option<Completion>, StoreError>;

    /// Records what attempt `attempt` answered.
    async fn record_answer(
        &self,
        key: &StoreKey,
        answer: AnswerKind,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// Marks the completed reply of `key` to be delivered with the sender's next message.
    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError>;

    /// Takes (at most once) the oldest deferred reply for this sender on this account.
    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError>;

    /// Lists inbox entries, newest first.
    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        Ok(self.page(query).await?.entries)
    }

    /// Lists one page of inbox entries, newest first, with the cursor of the next page.
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError>;

    /// The latest entry of one message, by account and the dedup key's text form.
    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError>;

    /// How many messages the inbox holds (for the inbox-size metric).
    async fn count(&self) -> Result<u64, StoreError>;

    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything written so far durable (called on shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}
