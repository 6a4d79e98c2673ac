//! The POST pipeline: authenticate, decrypt, parse, claim, answer within the budget.
//!
//! The order is the security argument (DESIGN.md, "The pipeline"): nothing reaches a
//! handler before the signature, the timestamp window, the account's configured mode, the
//! `msg_signature`, the decryption and the AppID have all been checked; the message is
//! recorded by the store's atomic claim before any answer leaves; and the handler runs
//! only for the attempt that won the claim, in its own task, so WeChat's retries wait for
//! that same work instead of starting it again. The claim and the spawn of that handler
//! happen in one admission task the request only awaits, so a client that goes away
//! cannot separate them (cancel safety, see ARCHITECTURE.md).
//!
//! The per-attempt deadline is the one clock of the gateway: `tokio::time::Instant`
//! (pausable in tests) plus the account's budget.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};
use wechat_proto::{Authenticated, EncryptedReply, Inbound, Kind, Query, Reply, ReplyTarget};

use crate::clock::WallClock;
use crate::config::Policy;
use crate::error::GatewayError;
use crate::gateway::{Account, Gateway};
use crate::handler::HandlerContext;
use crate::metrics::{AccountLabels, AnswerLabels};
use crate::push::{Delivery, DeliveryState};
use crate::store::{AnswerKind, Claim, Claimed, Completion, NewMessage, StoreError, StoreKey};

/// How long past the attempt's start a held attempt (`ride_retries`) stays open: past
/// WeChat's 5-second timeout, so that WeChat retries, with a margin for its clock.
pub const HOLD_FOR: Duration = Duration::from_millis(5500);

/// What goes back to WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A reply XML (plain or encrypted envelope).
    Xml(String),
    /// The bare acknowledgement.
    Success,
    /// An empty body (a held attempt whose answer nobody waits for any more).
    Empty,
}

/// What one attempt came to: the answer for WeChat and what the per-message log line says
/// about it (http.rs writes the line; nothing here is content or an OpenID).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What goes back to WeChat.
    pub answer: Answer,
    /// How the attempt was answered (`replied`, `acked`, `held`, …).
    pub answer_kind: AnswerKind,
    /// What the store's claim said: `first`, `in_flight` or `done`.
    pub claim: &'static str,
    /// Which delivery of the message this was (1 for the first).
    pub attempt: u32,
    /// The handler's own time, when this attempt saw its completion.
    pub handler_ms: Option<u64>,
    /// The message kind: `text`, `event:subscribe`, …
    pub kind: String,
    /// A short hex hash of the dedup key's text, to follow one message across attempts
    /// without logging its sender.
    pub dedup_hash: String,
}

/// The first 8 hex digits of the SHA-256 of the dedup key's text form: enough to tell
/// messages apart in a log, too short to recover the OpenID inside the key.
pub fn dedup_hash(key: &wechat_proto::DedupKey) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.stable_text().as_bytes());
    hex::encode(&digest[..4])
}

/// Current Unix time in seconds, from the system's clock (see [`crate::clock`]).
pub fn unix_now() -> i64 {
    crate::clock::SystemClock.now_secs()
}

/// Steps 2 and 3: every protocol rule (signature, window, configured mode,
/// `msg_signature`, decryption with key rotation, AppID) is `wechat-proto`'s
/// [`Endpoint::authenticate`](wechat_proto::Endpoint::authenticate); the gateway brings
/// the wall clock (`now`, Unix seconds).
fn authenticate(
    account: &Account,
    query: &Query,
    body: &[u8],
    now: i64,
) -> Result<Authenticated, GatewayError> {
    Ok(account.endpoint.authenticate(query, body, now)?)
}

/// The whole POST pipeline for one attempt.
pub async fn handle_post(
    gateway: &Arc<Gateway>,
    account: &Arc<Account>,
    query: &Query,
    body: &[u8],
    started: Instant,
) -> Result<Outcome, GatewayError> {
    let request =
        authenticate(account, query, body, gateway.clock.now_secs()).inspect_err(|e| {
            if let Some(code) = e.code() {
                gateway
                    .metrics
                    .crypto_failure(&account.config.name, code.as_i32());
            }
        })?;
    let inbound = Inbound::parse(&request.xml)
        .map_err(|e| GatewayError::bad_request(format!("message: {e}"), Some(e.code())))?;
    let key = StoreKey {
        account: account.config.name.clone(),
        dedup: inbound.dedup_key(&request.xml),
    };
    let message = NewMessage {
        key: key.clone(),
        from_user_name: inbound.header.from_user_name.clone(),
        kind: kind_label(&inbound),
        inbound_json: serde_json::to_string(&inbound).unwrap_or_default(),
        received_at_ms: gateway.clock.now_ms(),
    };
    let inbound = Arc::new(inbound);
    // Cancel safety: the claim and the handler task it promises are made together in a
    // task of their own, which this request only awaits. If the client goes away (the
    // request future is dropped here), the admission still runs to its end: a message
    // whose claim committed always gets its handler.
    let kind_text = message.kind.clone();
    let admission = admit(gateway, account, &key, &inbound, message);
    let mut admitted = admission
        .await
        .map_err(|e| GatewayError::Unavailable(format!("the admission task failed: {e}")))?
        .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    // The handler's time, when this attempt saw its completion (for the log line).
    let mut handler_ms = None;
    let (reply, kind) = decide(
        gateway,
        account,
        &key,
        &inbound,
        &mut admitted,
        started,
        &mut handler_ms,
    )
    .await?;
    let claimed = admitted.claimed;
    gateway
        .metrics
        .answers
        .get_or_create(&AnswerLabels {
            account: account.config.name.clone(),
            policy: account.config.policy.as_str().to_owned(),
            answer: kind.as_str().to_owned(),
        })
        .inc();
    if let Err(e) = gateway
        .store
        .record_answer(&key, kind, claimed.attempt, gateway.clock.now_ms())
        .await
    {
        // The answer is already decided; failing the request now would lose it.
        tracing::error!(error = %e, "could not record the answer");
    }
    let answer = match reply {
        Answered::Reply(reply) => render(account, &*gateway.clock, &inbound, &reply, &request),
        Answered::Success => Answer::Success,
        Answered::Empty => Answer::Empty,
    };
    let claim = match &claimed.claim {
        Claim::First => "first",
        Claim::InFlight => "in_flight",
        Claim::Done(_) => "done",
    };
    Ok(Outcome {
        answer,
        answer_kind: kind,
        claim,
        attempt: claimed.attempt,
        handler_ms,
        kind: kind_text,
        dedup_hash: dedup_hash(&key.dedup),
    })
}

/// The label of a message kind: `text`, or `event:subscribe`.
fn kind_label(inbound: &Inbound) -> String {
    match &inbound.kind {
        Kind::Event(event) => format!("event:{}", event.name().to_ascii_lowercase()),
        _ => inbound.msg_type().to_owned(),
    }
}

enum Answered {
    Reply(Reply),
    Success,
    Empty,
}

/// Where this attempt gets the handler's completion from.
enum Source {
    /// This attempt runs the handler; its task sends the completion here.
    Local(oneshot::Receiver<Completion>),
    /// Another attempt (maybe in another process) runs it; wait through the store.
    Store,
}

impl Source {
    async fn until(
        &mut self,
        gateway: &Gateway,
        key: &StoreKey,
        deadline: Instant,
    ) -> Result<Option<Completion>, GatewayError> {
        match self {
            Source::Local(receiver) => Ok(timeout_at(deadline, receiver)
                .await
                .ok()
                .and_then(Result::ok)),
            Source::Store => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                gateway
                    .store
                    .wait(key, remaining)
                    .await
                    .map_err(|e| GatewayError::Unavailable(e.to_string()))
            }
        }
    }
}

/// Claims the message and, when this attempt is the first, spawns its handler, both in
/// one task that the request only awaits (see `handle_post`). Nothing between the claim's
/// commit and the spawn awaits anything the request owns.
fn admit(
    gateway: &Arc<Gateway>,
    account: &Arc<Account>,
    key: &StoreKey,
    inbound: &Arc<Inbound>,
    message: NewMessage,
) -> tokio::task::JoinHandle<Result<Admitted, StoreError>> {
    let gateway = Arc::clone(gateway);
    let account = Arc::clone(account);
    let key = key.clone();
    let inbound = Arc::clone(inbound);
    let tasks = gateway.tasks.clone();
    tasks.spawn(async move {
        let claimed = gateway.store.claim(&message).await?;
        let source = match claimed.claim {
            Claim::First => Source::Local(spawn_handler(&gateway, &account, &key, &inbound)),
            Claim::InFlight | Claim::Done(_) => Source::Store,
        };
        Ok(Admitted { claimed, source })
    })
}

/// What the admission task made of an attempt: its claim, and where its completion will
/// come from.
struct Admitted {
    claimed: Claimed,
    source: Source,
}

/// Steps 5 and 6: get the reply of the one handler run, within the budget, or apply the
/// account's answer policy.
async fn decide(
    gateway: &Arc<Gateway>,
    account: &Arc<Account>,
    key: &StoreKey,
    inbound: &Arc<Inbound>,
    admitted: &mut Admitted,
    started: Instant,
    handler_ms: &mut Option<u64>,
) -> Result<(Answered, AnswerKind), GatewayError> {
    let Admitted { claimed, source } = admitted;
    let claimed = &*claimed;
    let deadline = started + account.config.budget;
    match &claimed.claim {
        Claim::First => {}
        Claim::InFlight => count_coalesced(gateway, account),
        Claim::Done(completion) => {
            *handler_ms = Some(completion.handler_ms);
            count_coalesced(gateway, account);
            if delivery_owed(gateway, account, key).await {
                return Ok((Answered::Success, AnswerKind::Acked));
            }
            return Ok(completed(completion));
        }
    }
    if let Some(completion) = source.until(gateway, key, deadline).await? {
        *handler_ms = Some(completion.handler_ms);
        if claimed.claim != Claim::First && delivery_owed(gateway, account, key).await {
            return Ok((Answered::Success, AnswerKind::Acked));
        }
        let (answered, kind) = completed(&completion);
        if account.config.policy == Policy::RideRetries && claimed.claim == Claim::First {
            return Ok(with_deferred(gateway, account, key, inbound, answered, kind).await);
        }
        return Ok((answered, kind));
    }
    match account.config.policy {
        Policy::Ack => Ok((Answered::Success, AnswerKind::Acked)),
        Policy::Push => {
            owe_delivery(gateway, account, key, inbound).await?;
            Ok((Answered::Success, AnswerKind::Acked))
        }
        Policy::RideRetries if claimed.attempt >= account.config.last_attempt => {
            spawn_deferral(gateway, account, key);
            let text = account.config.still_working_text.clone();
            Ok((
                Answered::Reply(Reply::Text { content: text }),
                AnswerKind::StillWorking,
            ))
        }
        Policy::RideRetries => {
            // Hold the attempt open past WeChat's timeout so that WeChat retries; if the
            // reply lands while WeChat may still be listening, answer it.
            match source.until(gateway, key, started + HOLD_FOR).await? {
                Some(completion) => Ok(completed(&completion)),
                None => Ok((Answered::Empty, AnswerKind::Held)),
            }
        }
    }
}

/// Under `push`, records that the reply is owed through the customer-service API, before
/// the attempt answers `success`; a failure to record fails the attempt (503), so that
/// WeChat retries instead of the reply being lost.
async fn owe_delivery(
    gateway: &Arc<Gateway>,
    account: &Account,
    key: &StoreKey,
    inbound: &Inbound,
) -> Result<(), GatewayError> {
    let Some(pusher) = &gateway.pusher else {
        return Err(GatewayError::Unavailable(format!(
            "account {} uses push but the gateway has no pusher",
            account.config.name
        )));
    };
    pusher
        .enqueue(Delivery {
            key: key.clone(),
            to_user: inbound.header.from_user_name.clone(),
            created_at_ms: gateway.clock.now_ms(),
        })
        .await
        .map_err(|e| GatewayError::Unavailable(e.to_string()))
}

/// Under `push`, whether an earlier attempt already owes the reply through the
/// customer-service API (pending or sent): a late retry then answers `success`, or the
/// follower would get the reply twice. A delivery given up on (say 45015) leaves the
/// passive answer as a last chance. An unreadable outbox counts as owed (a missing reply
/// beats a double).
async fn delivery_owed(gateway: &Gateway, account: &Account, key: &StoreKey) -> bool {
    if account.config.policy != Policy::Push {
        return false;
    }
    if gateway.pusher.is_none() {
        return false;
    }
    match gateway.store.state(key).await {
        Ok(state) => matches!(state, Some(DeliveryState::Pending | DeliveryState::Sent)),
        Err(e) => {
            tracing::error!(error = %e, "could not read the push outbox");
            true
        }
    }
}

fn count_coalesced(gateway: &Gateway, account: &Account) {
    gateway
        .metrics
        .retries_coalesced
        .get_or_create(&AccountLabels {
            account: account.config.name.clone(),
        })
        .inc();
}

fn completed(completion: &Completion) -> (Answered, AnswerKind) {
    match (&completion.reply, &completion.error) {
        (Some(reply), None) => (Answered::Reply(reply.clone()), AnswerKind::Replied),
        _ => (Answered::Success, AnswerKind::Success),
    }
}

/// Under `ride_retries`, a reply deferred from the sender's earlier message is delivered
/// with this one: joined to a text reply when both are text and fit, otherwise alone,
/// with this message's own reply deferred in turn.
async fn with_deferred(
    gateway: &Gateway,
    account: &Account,
    key: &StoreKey,
    inbound: &Inbound,
    answered: Answered,
    kind: AnswerKind,
) -> (Answered, AnswerKind) {
    let deferred = match gateway
        .store
        .take_deferred(&account.config.name, &inbound.header.from_user_name)
        .await
    {
        Ok(Some((_, reply))) => reply,
        Ok(None) => return (answered, kind),
        Err(e) => {
            tracing::error!(error = %e, "could not read deferred replies");
            return (answered, kind);
        }
    };
    match (deferred, answered) {
        (deferred, Answered::Success | Answered::Empty) => {
            (Answered::Reply(deferred), AnswerKind::DeliveredDeferred)
        }
        (Reply::Text { content: earlier }, Answered::Reply(Reply::Text { content: now }))
            if earlier.len() + 2 + now.len() <= wechat_proto::reply::MAX_TEXT_BYTES =>
        {
            let content = format!("{earlier}\n\n{now}");
            (
                Answered::Reply(Reply::Text { content }),
                AnswerKind::DeliveredDeferred,
            )
        }
        (deferred, Answered::Reply(_)) => {
            if let Err(e) = gateway.store.defer_reply(key).await {
                tracing::error!(error = %e, "could not defer a reply");
            }
            (Answered::Reply(deferred), AnswerKind::DeliveredDeferred)
        }
    }
}

/// Runs the handler once, in its own task (a panic or an error is a recorded failure,
/// never a crash), records the completion in the store, and hands it to this attempt.
fn spawn_handler(
    gateway: &Arc<Gateway>,
    account: &Arc<Account>,
    key: &StoreKey,
    inbound: &Arc<Inbound>,
) -> oneshot::Receiver<Completion> {
    let (sender, receiver) = oneshot::channel();
    let gateway = Arc::clone(gateway);
    let account = Arc::clone(account);
    let key = key.clone();
    let inbound = Arc::clone(inbound);
    let tasks = gateway.tasks.clone();
    tasks.spawn(async move {
        let started = Instant::now();
        let context = HandlerContext {
            account: account.config.name.clone(),
            dedup_key: key.dedup.clone(),
        };
        // The handler runs inside this task: `catch_unwind` turns a panic into a recorded
        // failure, and dropping the future at the timeout cancels it, without a second task.
        let run = AssertUnwindSafe(account.handler.handle(&context, &inbound)).catch_unwind();
        let timeout = account.config.handler_timeout;
        let outcome: Result<Option<Reply>, String> = match tokio::time::timeout(timeout, run).await
        {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(format!("handler failed: {e}")),
            Ok(Err(_panic)) => Err("handler panicked".to_owned()),
            Err(_) => Err(format!("handler timed out after {} s", timeout.as_secs())),
        };
        // A reply that cannot be sent (too long, too many articles) is a failure too, with
        // its reason recorded; it is checked here so every later attempt agrees.
        let outcome = outcome.and_then(|reply| match reply {
            Some(reply) => {
                let target = ReplyTarget::answering(&inbound, 0);
                reply
                    .render(&target)
                    .map(|_| Some(reply))
                    .map_err(|e| format!("handler reply rejected: {e}"))
            }
            None => Ok(None),
        });
        let elapsed = started.elapsed();
        let labels = AccountLabels {
            account: account.config.name.clone(),
        };
        gateway
            .metrics
            .handler_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let completion = match outcome {
            Ok(reply) => Completion {
                reply,
                error: None,
                handler_ms: elapsed.as_millis() as u64,
            },
            Err(reason) => {
                gateway
                    .metrics
                    .handler_failures
                    .get_or_create(&labels)
                    .inc();
                tracing::warn!(account = %account.config.name, %reason, "handler failure recorded");
                Completion {
                    reply: None,
                    error: Some(reason),
                    handler_ms: elapsed.as_millis() as u64,
                }
            }
        };
        // In memory at once (retries are answered from it); a persistent store makes it
        // durable behind, retrying a failed write until it is.
        if let Err(e) = gateway.store.complete(&key, &completion).await {
            tracing::error!(account = %account.config.name, error = %e, "could not record a handler completion");
        }
        // The attempt may have answered already (budget over); nobody listening is fine.
        let _ = sender.send(completion);
    });
    receiver
}

/// After a "still working" answer, waits for the reply in the background and defers it
/// to the sender's next message.
fn spawn_deferral(gateway: &Arc<Gateway>, account: &Account, key: &StoreKey) {
    let store = Arc::clone(&gateway.store);
    let key = key.clone();
    let limit = account.config.handler_timeout + Duration::from_secs(1);
    gateway.tasks.spawn(async move {
        match store.wait(&key, limit).await {
            Ok(Some(Completion {
                reply: Some(_),
                error: None,
                ..
            })) => {
                if let Err(e) = store.defer_reply(&key).await {
                    tracing::error!(error = %e, "could not defer a reply");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not wait for a reply to defer"),
        }
    });
}

/// Renders a reply for this request: plain XML, or the encrypted envelope signed with
/// this request's timestamp and nonce. A reply that cannot be rendered answers `success`.
fn render(
    account: &Account,
    clock: &dyn WallClock,
    inbound: &Inbound,
    reply: &Reply,
    request: &Authenticated,
) -> Answer {
    if matches!(reply, Reply::Success) {
        return Answer::Success;
    }
    let target = ReplyTarget::answering(inbound, clock.now_secs());
    let cipher = account.endpoint.cipher();
    let rendered = match cipher {
        // Rendered, encrypted, signed and written in one buffer: the same bytes as
        // `reply.render` and an `EncryptedReply` of owned strings with its `to_xml`.
        Some(cipher) if request.encrypted => EncryptedReply::seal_reply(
            cipher,
            &account.config.token,
            &request.timestamp,
            &request.nonce,
            reply,
            &target,
            rand::random(),
        ),
        _ => reply.render(&target),
    };
    let xml = match rendered {
        Ok(xml) => xml,
        Err(e) => {
            tracing::warn!(error = %e, "reply could not be rendered; answering success");
            return Answer::Success;
        }
    };
    if request.encrypted && cipher.is_none() {
        return Answer::Success;
    }
    Answer::Xml(xml)
}
