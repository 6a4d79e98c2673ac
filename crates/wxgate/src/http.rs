//! The HTTP surface (axum): `/wx/{account}` (GET verification, POST messages), `/healthz`,
//! `/readyz`, `/metrics`.
//!
//! This module only translates between HTTP and [`crate::pipeline`]: it finds the
//! account, caps the body before reading it, and writes the answer. Every refusal goes
//! through [`GatewayError`]'s one `IntoResponse`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::gateway::{Gateway, WebhookEvent};
use crate::metrics::AccountLabels;
use crate::pipeline::{handle_post, verify_url_signature, Answer, WeChatQuery};
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

type QueryResult = Result<Query<WeChatQuery>, axum::extract::rejection::QueryRejection>;

/// `GET /wx/{account}`: URL verification. Echoes `echostr` byte for byte when the
/// signature matches; anything else is a bare 401.
async fn verify(
    State(gateway): State<Arc<Gateway>>,
    Path(account): Path<String>,
    query: QueryResult,
) -> Response {
    let Some(account) = gateway.accounts.get(&account) else {
        gateway.metrics.request("unknown", "rejected_404");
        return GatewayError::UnknownAccount.into_response();
    };
    let name = account.config.name.as_str();
    let Ok(Query(query)) = query else {
        gateway.metrics.request(name, "rejected_401");
        return GatewayError::unauthorized("unreadable verification query", None).into_response();
    };
    let echostr = query.echostr.clone();
    match (verify_url_signature(account, &query, false), echostr) {
        (Ok(()), Some(echostr)) => {
            gateway.metrics.request(name, "verified");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                echostr,
            )
                .into_response()
        }
        (Ok(()), None) => {
            gateway.metrics.request(name, "rejected_401");
            GatewayError::unauthorized("verification without echostr", None).into_response()
        }
        (Err(e), _) => {
            if let Some(code) = e.code() {
                gateway.metrics.crypto_failure(name, code.as_i32());
            }
            gateway.metrics.request(name, "rejected_401");
            GatewayError::unauthorized(e.to_string(), None).into_response()
        }
    }
}

/// `POST /wx/{account}`: the message pipeline.
async fn message(
    State(gateway): State<Arc<Gateway>>,
    Path(account): Path<String>,
    query: QueryResult,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(account) = gateway.accounts.get(&account).cloned() else {
        gateway.metrics.request("unknown", "rejected_404");
        return GatewayError::UnknownAccount.into_response();
    };
    let name = account.config.name.clone();
    let result = async {
        let Query(query) = query.map_err(|e| GatewayError::bad_request(e.body_text(), None))?;
        let body = axum::body::to_bytes(body, gateway.body_limit)
            .await
            .map_err(|_| GatewayError::BodyTooLarge {
                limit: gateway.body_limit,
            })?;
        handle_post(&gateway, &account, &query, &body, started).await
    }
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
            Ok((_, kind)) => kind.as_str().to_owned(),
            Err(e) => e.outcome().to_owned(),
        },
        at_ms: unix_ms(),
        latency_ms: elapsed.as_secs_f64() * 1000.0,
        crypto_code: result
            .as_ref()
            .err()
            .and_then(GatewayError::code)
            .map(|code| code.as_i32()),
    });
    match result {
        Ok((answer, kind)) => {
            gateway.metrics.request(&name, kind.as_str());
            match answer {
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
            e.into_response()
        }
    }
}

/// The wall clock in Unix milliseconds, for the time stamp of webhook events.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
        return GatewayError::Unavailable(format!(
            "store degraded: {waiting} writes wait to become durable ({reason})"
        ))
        .into_response();
    }
    match gateway.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => GatewayError::Unavailable(e.to_string()).into_response(),
    }
}

/// Prometheus text exposition; refreshes the store gauges from its maintained counters
/// first (no scan).
async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
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
