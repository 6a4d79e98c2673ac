//! The console's JSON API under `/console/api/` (documented in docs/console.md): the
//! inbox with filters and cursor paging, one message, the live event stream, and the
//! overview. The debugger's `sim/…` endpoints are in [`super::debugger`].
//!
//! [`ConsoleError`] is the one place that turns console errors into HTTP: a JSON body
//! `{"error": "…"}` with the status. Store failures are logged and answered with a
//! generic 503, never with their details.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use wechat_proto::{Inbound, ReplyTarget};

use super::series::unix_seconds;
use super::{mask_openid, Console};
use crate::config::Policy;
use crate::gateway::{Account, Gateway};
use crate::push::DeliveryState;
use crate::store::{Health, InboxCursor, InboxEntry, InboxQuery, StoreError, StoreKey};

/// The most entries one page may hold.
pub const MAX_LIMIT: usize = 500;
/// The page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// A console request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// No valid session or token.
    #[error("log in first, or send Authorization: Bearer <token>")]
    Unauthorized,
    /// A cookie-authenticated POST without the session's CSRF token.
    #[error("missing or wrong X-CSRF-Token (or a cross-site Origin)")]
    Csrf,
    /// Too many failed token checks.
    #[error("too many failed logins; try again later")]
    TooManyFailures,
    /// The request does not make sense; the text says why.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that name.
    #[error("{0}")]
    NotFound(String),
    /// The store failed (details are logged, not shown).
    #[error("the store is unavailable")]
    Store(#[source] StoreError),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::TooManyFailures => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Store(e) => {
                tracing::error!(error = %e, "console: store read failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> ConsoleError {
        ConsoleError::Store(error)
    }
}

/// The query string of `GET /console/api/messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    account: Option<String>,
    kind: Option<String>,
    answer: Option<String>,
    sender: Option<String>,
    text: Option<String>,
    /// Unix milliseconds, inclusive.
    since: Option<i64>,
    /// Unix milliseconds, inclusive.
    until: Option<i64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The answers the `answer` filter knows: every [`AnswerKind`](crate::store::AnswerKind)
/// name, then `failed` and `pending` (see `InboxQuery::answer`). The inbox page's select
/// offers the same list.
pub(super) const ANSWERS: [&str; 8] = [
    "replied",
    "success",
    "acked",
    "held",
    "still_working",
    "delivered_deferred",
    "failed",
    "pending",
];

/// One inbox row, as the list shows it.
#[derive(Debug, Serialize)]
pub struct MessageRow {
    account: String,
    dedup_key: String,
    received_at_ms: i64,
    kind: String,
    /// The sender's OpenID, masked.
    sender: String,
    /// The text, the event and its key, …: one line.
    summary: String,
    attempts: u32,
    /// The last answer (`replied`, `success`, …), `pending` before any.
    answer: String,
    /// The attempt that gave the last answer.
    answer_attempt: Option<u32>,
    handler_ms: Option<u64>,
    /// The handler's error, when it failed.
    error: Option<String>,
    deferred: bool,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl MessagesQuery {
    fn to_store(&self) -> Result<InboxQuery, ConsoleError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ConsoleError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let answer = non_empty(self.answer.clone());
        if let Some(answer) = &answer {
            if !ANSWERS.contains(&answer.as_str()) {
                return Err(ConsoleError::BadRequest(format!(
                    "answer {answer:?} is not one of {}",
                    ANSWERS.join(", ")
                )));
            }
        }
        let before = non_empty(self.cursor.clone())
            .map(|cursor| cursor.parse::<InboxCursor>())
            .transpose()
            .map_err(ConsoleError::BadRequest)?;
        Ok(InboxQuery {
            account: non_empty(self.account.clone()),
            since_ms: self.since,
            until_ms: self.until,
            kind: non_empty(self.kind.clone()),
            answer,
            sender: non_empty(self.sender.clone()),
            text: non_empty(self.text.clone()),
            before,
            limit,
        })
    }
}

/// A one-line summary of a message from its JSON form.
fn summary(inbound: &Value) -> String {
    let field = |name: &str| inbound.get(name).and_then(Value::as_str);
    if let Some(event) = field("event") {
        let key = field("event_key").or(field("url")).unwrap_or_default();
        return format!("{event} {key}").trim_end().to_owned();
    }
    let kind = field("type").unwrap_or("message");
    match kind {
        "text" => field("content").unwrap_or_default().to_owned(),
        "voice" => field("recognition").map_or_else(|| "[voice]".to_owned(), str::to_owned),
        "location" => format!("[location] {}", field("label").unwrap_or_default()),
        "link" => format!("[link] {}", field("title").unwrap_or_default()),
        other => format!("[{other}]"),
    }
}

fn row(entry: &InboxEntry) -> MessageRow {
    let inbound: Value = serde_json::from_str(&entry.inbound_json).unwrap_or(Value::Null);
    let completion = entry.completion.as_ref();
    MessageRow {
        account: entry.account.clone(),
        dedup_key: entry.dedup_key.clone(),
        received_at_ms: entry.received_at_ms,
        kind: entry.kind.clone(),
        sender: mask_openid(&entry.from_user_name),
        summary: crate::sim::report::truncate(&summary(&inbound), 120),
        attempts: entry.attempts,
        answer: entry
            .last_answer
            .map_or("pending", |(answer, _)| answer.as_str())
            .to_owned(),
        answer_attempt: entry.last_answer.map(|(_, attempt)| attempt),
        handler_ms: completion.map(|c| c.handler_ms),
        error: completion.and_then(|c| c.error.clone()),
        deferred: entry.deferred,
    }
}

/// `GET /console/api/messages`.
pub async fn messages(
    State(console): State<Arc<Console>>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ConsoleError> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let page = console.gateway.store().page(&query.to_store()?).await?;
    Ok(Json(json!({
        "messages": page.entries.iter().map(row).collect::<Vec<_>>(),
        "next": page.next.map(|cursor| cursor.to_string()),
    })))
}

/// The query of `GET /console/api/messages/{dedup_key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    account: Option<String>,
}

/// `GET /console/api/messages/{dedup_key}`: everything known about one message.
pub async fn message(
    State(console): State<Arc<Console>>,
    Path(dedup_key): Path<String>,
    query: Result<Query<MessageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ConsoleError> {
    let Query(query) = query.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let gateway = &console.gateway;
    let accounts: Vec<Arc<Account>> = match non_empty(query.account) {
        Some(name) => vec![gateway
            .account(&name)
            .ok_or_else(|| ConsoleError::NotFound(format!("no account {name:?}")))?],
        None => gateway.accounts(),
    };
    // Without an account, the newest message of that key on any account.
    let mut found: Option<(InboxEntry, &Arc<Account>)> = None;
    for account in &accounts {
        if let Some(entry) = gateway
            .store()
            .get(&account.config.name, &dedup_key)
            .await?
        {
            if found
                .as_ref()
                .is_none_or(|(best, _)| entry.received_at_ms > best.received_at_ms)
            {
                found = Some((entry, account));
            }
        }
    }
    let (entry, account) =
        found.ok_or_else(|| ConsoleError::NotFound("no message with that key".to_owned()))?;
    Ok(Json(detail(gateway, account, &entry).await))
}

/// The push delivery state of a message. The one place that asks the outbox.
async fn push_state(gateway: &Gateway, key: &StoreKey) -> Option<Value> {
    gateway.pusher()?;
    let state = gateway.store().state(key).await;
    Some(match state {
        Ok(None) => json!({ "state": "none" }),
        Ok(Some(DeliveryState::Pending)) => json!({ "state": "pending" }),
        Ok(Some(DeliveryState::Sent)) => json!({ "state": "sent" }),
        Ok(Some(DeliveryState::NothingToSend)) => json!({ "state": "nothing_to_send" }),
        Ok(Some(DeliveryState::Failed(reason))) => json!({ "state": "failed", "reason": reason }),
        Err(e) => {
            tracing::error!(error = %e, "console: outbox read failed");
            json!({ "state": "unknown" })
        }
    })
}

async fn detail(gateway: &Gateway, account: &Account, entry: &InboxEntry) -> Value {
    let inbound: Option<Inbound> = serde_json::from_str(&entry.inbound_json).ok();
    let completion = entry.completion.as_ref();
    // The reply as sent: rendered for this message as the pipeline renders it, before
    // encryption (the envelope differs on every attempt, its nonce being random).
    let reply_xml = match (completion.and_then(|c| c.reply.as_ref()), &inbound) {
        (Some(reply), Some(inbound)) => reply
            .render(&ReplyTarget::answering(
                inbound,
                entry.received_at_ms.div_euclid(1000),
            ))
            .ok(),
        _ => None,
    };
    let key = entry.dedup_key.parse().ok().map(|dedup| StoreKey {
        account: entry.account.clone(),
        dedup,
    });
    let push = match &key {
        Some(key) if account.config.policy == Policy::Push => push_state(gateway, key).await,
        _ => None,
    };
    let summary_row = row(entry);
    json!({
        "row": summary_row,
        "sender": entry.from_user_name,
        "message": inbound,
        "xml": inbound.as_ref().map(Inbound::to_xml),
        "attempts": {
            "count": entry.attempts,
            "first_received_at_ms": entry.received_at_ms,
            "last_answer": entry.last_answer.map(|(answer, _)| answer.as_str()),
            "last_answer_attempt": entry.last_answer.map(|(_, attempt)| attempt),
            // Every attempt's answer, with its time, oldest first.
            "answers": entry.answers.iter().map(|record| json!({
                "attempt": record.attempt,
                "answer": record.answer.as_str(),
                "at_ms": record.at_ms,
            })).collect::<Vec<_>>(),
        },
        "handler": completion.map(|c| json!({
            "duration_ms": c.handler_ms,
            "error": c.error,
        })),
        "reply": completion.and_then(|c| c.reply.as_ref()),
        "reply_xml": reply_xml,
        "deferred": entry.deferred,
        "policy": account.config.policy.as_str(),
        "forward": account.config.forward.as_ref().map(|forward| json!({
            "url": forward.url,
            "idempotency_key": entry.dedup_key,
        })),
        "push": push,
    })
}

/// `GET /console/api/events`: one `message` event per answered webhook request, and a
/// `lagged` event when this listener fell behind (re-read the list then).
pub async fn events(State(console): State<Arc<Console>>) -> impl IntoResponse {
    let receiver = console.gateway.subscribe();
    let stop = console.stop.clone();
    let stream = futures::stream::unfold((receiver, stop), |(mut receiver, stop)| async move {
        let event = tokio::select! {
            () = stop.cancelled() => return None,
            event = receiver.recv() => event,
        };
        let event = match event {
            Ok(event) => Event::default()
                .event("message")
                .json_data(&event)
                .unwrap_or_else(|_| Event::default().event("message")),
            Err(RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), (receiver, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /console/api/overview`: accounts, health and the charts.
pub async fn overview(State(console): State<Arc<Console>>) -> Json<Value> {
    let gateway = &console.gateway;
    let mut accounts: Vec<Arc<Account>> = gateway.accounts();
    accounts.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    let accounts: Vec<Value> = accounts
        .iter()
        .map(|account| {
            let config = &account.config;
            let key_rotation = match (&config.aes_key, &config.previous_aes_key) {
                (None, _) => "no_key",
                (Some(_), None) => "single_key",
                (Some(_), Some(_)) => "rotating",
            };
            json!({
                "name": config.name,
                "mode": config.mode.as_str(),
                "policy": config.policy.as_str(),
                "path": format!("/wx/{}", config.name),
                "app_id": config.app_id.as_str(),
                "key_rotation": key_rotation,
                "rules": config.rules.len(),
                "forward_url": config.forward.as_ref().map(|f| f.url.clone()),
                "budget_ms": u64::try_from(config.budget.as_millis()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    let store = match (gateway.store().ping().await, gateway.store().health()) {
        (Ok(()), Health::Ok) => json!({ "ok": true }),
        (Ok(()), Health::Degraded { waiting, .. }) => json!({
            "ok": false,
            "error": format!("degraded: {waiting} writes wait to become durable"),
        }),
        (Err(e), _) => {
            tracing::error!(error = %e, "console: store ping failed");
            json!({ "ok": false, "error": "the store does not answer" })
        }
    };
    let inbox_size = Some(gateway.store().stats().messages);
    Json(json!({
        "accounts": accounts,
        "health": {
            "store": store,
            "inbox_size": inbox_size,
            "push_workers": gateway.pusher().is_some(),
        },
        "series": {
            "point_seconds": super::series::POINT_SECONDS,
            "points": console.series.points(unix_seconds()),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_filter_knows_every_answer_kind() {
        let kinds: Vec<&str> = crate::store::AnswerKind::ALL
            .iter()
            .map(|kind| kind.as_str())
            .collect();
        assert_eq!(ANSWERS[..kinds.len()], kinds[..]);
        assert_eq!(ANSWERS[kinds.len()..], ["failed", "pending"]);
    }

    #[test]
    fn summaries_say_what_arrived() {
        let check = |json: &str, want: &str| {
            assert_eq!(summary(&serde_json::from_str(json).unwrap()), want);
        };
        check(r#"{"type":"text","content":"你好"}"#, "你好");
        check(
            r#"{"type":"event","event":"click","event_key":"MENU_1"}"#,
            "click MENU_1",
        );
        check(r#"{"type":"event","event":"subscribe"}"#, "subscribe");
        check(r#"{"type":"voice","recognition":"语音"}"#, "语音");
        check(r#"{"type":"image"}"#, "[image]");
    }
}
