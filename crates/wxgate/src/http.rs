//! The HTTP surface (axum): `/wx/{account}` (GET verification, POST messages), `/healthz`,
//! `/readyz`, `/metrics`.
//!
//! This module only translates between HTTP and [`crate::pipeline`]: it finds the
//! account, caps the body before reading it, and writes the answer. Every refusal goes
//! through [`GatewayError`]'s one `IntoResponse`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use tokio::time::Instant;
use tracing::Instrument;
use wechat_proto::Query;

use crate::access::{allowed, client_address};
use crate::error::GatewayError;
use crate::gateway::{Account, Gateway, Live, WebhookEvent};
use crate::metrics::AccountLabels;
use crate::pipeline::{handle_post, Answer, Outcome};
use crate::store::Health;

/// Builds the router over a gateway.
pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/wx/{account}", get(verify).post(message))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

/// The TCP peer, when the server recorded it (`wxgate serve`, or axum's
/// `into_make_service_with_connect_info`); `oneshot` tests may insert it themselves.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// The request's span: every line logged while the request runs carries the account and
/// the client address (never the sender's OpenID).
fn request_span(account: &str, client: Option<IpAddr>) -> tracing::Span {
    let remote = client.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    tracing::info_span!("request", account, remote)
}

/// The client address (through trusted proxies), when the server recorded the peer.
fn client(live: &Live, peer: &Peer, headers: &HeaderMap) -> Option<IpAddr> {
    peer.as_ref().map(|Extension(ConnectInfo(addr))| {
        client_address(addr.ip(), headers, &live.config.trusted_proxies)
    })
}

/// Whether the account allows the client. Without a known peer an account with
/// `allow_ips` refuses: an unknown caller is not an allowed one.
fn admit(account: &Account, client: Option<IpAddr>) -> Result<(), GatewayError> {
    let allow = &account.config.allow_ips;
    match client {
        _ if allow.is_empty() => Ok(()),
        Some(ip) if allowed(ip, allow) => Ok(()),
        other => Err(GatewayError::Forbidden {
            address: other.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        }),
    }
}

/// A request for an account that does not exist: 404, logged with the client address.
fn unknown_account(gateway: &Gateway, client: Option<IpAddr>) -> Response {
    gateway.metrics.request("unknown", "rejected_404");
    let _span = request_span("-", client).entered();
    let error = GatewayError::UnknownAccount;
    error.log_refusal(None);
    error.into_response()
}

/// `GET /wx/{account}`: URL verification. Echoes `echostr` byte for byte when the
/// signature matches; anything else is a bare 401.
async fn verify(
    State(gateway): State<Arc<Gateway>>,
    Path(account): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let live = gateway.live.load_full();
    let client = client(&live, &peer, &headers);
    let Some(account) = live.accounts.get(&account).cloned() else {
        return unknown_account(&gateway, client);
    };
    let name = account.config.name.as_str();
    let admitted = admit(&account, client);
    let _span = request_span(name, client).entered();
    let result = admitted.and_then(|()| {
        let Ok(query) = Query::parse(query.as_deref().unwrap_or_default()) else {
            return Err(GatewayError::unauthorized(
                "unreadable verification query",
                None,
            ));
        };
        // Every refusal of a verification is a bare 401, malformed or not: the console
        // only needs to see that the URL did not verify.
        match account.endpoint.verify_echo(&query) {
            Ok(echostr) => Ok(echostr.to_owned()),
            Err(e) => {
                if let Some(code) = e.code() {
                    gateway.metrics.crypto_failure(name, code.as_i32());
                }
                Err(GatewayError::unauthorized(e.to_string(), None))
            }
        }
    });
    match result {
        Ok(echostr) => {
            gateway.metrics.request(name, "verified");
            tracing::info!("URL verification answered");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                echostr,
            )
                .into_response()
        }
        Err(e) => {
            gateway.metrics.request(name, e.outcome());
            e.log_refusal(Some(name));
            e.into_response()
        }
    }
}

/// `POST /wx/{account}`: the message pipeline, and its one log line.
async fn message(
    State(gateway): State<Arc<Gateway>>,
    Path(account): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    // Loaded once: the request finishes with this account even if a reload swaps it.
    let live = gateway.live.load_full();
    let client = client(&live, &peer, &headers);
    let Some(account) = live.accounts.get(&account).cloned() else {
        return unknown_account(&gateway, client);
    };
    let name = account.config.name.clone();
    let admitted = admit(&account, client);
    let span = request_span(&name, client);
    let result = async {
        admitted?;
        let query = Query::parse(query.as_deref().unwrap_or_default())
            .map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        let read = axum::body::to_bytes(body, gateway.body_limit);
        let body = match tokio::time::timeout(live.config.limits.body_read_timeout, read).await {
            Err(_) => return Err(GatewayError::BodyTimeout),
            Ok(read) => read.map_err(|_| GatewayError::BodyTooLarge {
                limit: gateway.body_limit,
            })?,
        };
        handle_post(&gateway, &account, &query, &body, started).await
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();
    gateway
        .metrics
        .latency
        .get_or_create(&AccountLabels {
            account: name.clone(),
        })
        .observe(elapsed.as_secs_f64());
    // The console's live inbox and charts.
    gateway.publish(WebhookEvent {
        account: name.clone(),
        outcome: match &result {
            Ok(outcome) => outcome.answer_kind.as_str().to_owned(),
            Err(e) => e.outcome().to_owned(),
        },
        at_ms: gateway.clock.now_ms(),
        latency_ms: elapsed.as_secs_f64() * 1000.0,
        crypto_code: result
            .as_ref()
            .err()
            .and_then(GatewayError::code)
            .map(|code| code.as_i32()),
    });
    let _span = span.entered();
    match result {
        Ok(outcome) => {
            gateway.metrics.request(&name, outcome.answer_kind.as_str());
            if live.config.log_access {
                log_outcome(&outcome, elapsed);
            }
            match outcome.answer {
                Answer::Xml(xml) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                    xml,
                )
                    .into_response(),
                Answer::Success => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain")],
                    "success",
                )
                    .into_response(),
                Answer::Empty => {
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response()
                }
            }
        }
        Err(e) => {
            gateway.metrics.request(&name, e.outcome());
            e.log_refusal(Some(&name));
            e.into_response()
        }
    }
}

/// The per-message line: what arrived (kind, a hash of the dedup key), which delivery it
/// was, what the claim said and what was answered, how fast. No content, no OpenID.
fn log_outcome(outcome: &Outcome, elapsed: std::time::Duration) {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        kind = %outcome.kind,
        dedup = %outcome.dedup_hash,
        attempt = outcome.attempt,
        claim = outcome.claim,
        answer = outcome.answer_kind.as_str(),
        ms,
        handler_ms = outcome.handler_ms,
        "message answered"
    );
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The store answers and everything it acknowledged is durable. A degraded store (writes
/// held in memory and retried, say on a full disk) is not ready: new messages could not be
/// recorded either.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if let Health::Degraded { waiting, reason } = gateway.store.health() {
        let error = GatewayError::Unavailable(format!(
            "store degraded: {waiting} writes wait to become durable ({reason})"
        ));
        error.log_refusal(None);
        return error.into_response();
    }
    match gateway.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            let error = GatewayError::Unavailable(e.to_string());
            error.log_refusal(None);
            error.into_response()
        }
    }
}

/// Prometheus text exposition; refreshes the gauges first.
async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    for (name, account) in &gateway.live.load().accounts {
        gateway
            .metrics
            .handler_slots_free
            .get_or_create(&AccountLabels {
                account: name.clone(),
            })
            .set(i64::try_from(account.handler_slots.available_permits()).unwrap_or(i64::MAX));
    }
    // The store's gauges come from its maintained counters (no scan).
    let stats = gateway.store.stats();
    gateway
        .metrics
        .inbox_size
        .set(i64::try_from(stats.messages).unwrap_or(i64::MAX));
    gateway
        .metrics
        .live_claims
        .set(i64::try_from(stats.live_claims).unwrap_or(i64::MAX));
    gateway
        .metrics
        .inbox_pruned
        .set(i64::try_from(stats.pruned).unwrap_or(i64::MAX));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics.render(),
    )
        .into_response()
}
