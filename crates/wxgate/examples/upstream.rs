//! A tiny upstream for wxgate's `forward` handler — copy it as the start of your own.
//!
//! Run it, then point an account at it:
//!
//! ```text
//! WXGATE_FORWARD_SECRET=change-me cargo run -p wxgate --example upstream
//!
//! # wxgate.toml
//! [accounts.forward]
//! url = "http://127.0.0.1:9000/wechat"
//! secret = "change-me"
//! ```
//!
//! It checks the signature (when a secret is set), answers a text message with a text,
//! a `subscribe` event with a welcome, and anything else with `204 No Content` (the
//! follower sees nothing). The contract is in `docs/forward.md`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// How far the signature's timestamp may be from now, in seconds.
const MAX_SKEW_SECS: i64 = 300;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("WXGATE_FORWARD_SECRET").ok();
    if secret.is_none() {
        eprintln!("WXGATE_FORWARD_SECRET is not set: accepting unsigned calls");
    }
    let app = axum::Router::new().route(
        "/wechat",
        post(move |headers: HeaderMap, body: Bytes| {
            let secret = secret.clone();
            async move { handle(secret.as_deref(), &headers, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    eprintln!("upstream listening on http://127.0.0.1:9000/wechat");
    axum::serve(listener, app).await
}

fn handle(secret: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(secret) = secret {
        if !signed(secret, headers, body) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let Ok(call) = serde_json::from_slice::<Value>(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // `call["dedup_key"]` (also the Idempotency-Key header) is the same for every retry of
    // one message: use it to make side effects happen once.
    let message = &call["message"];
    let reply = match (message["type"].as_str(), message["event"].as_str()) {
        (Some("text"), _) => json!({
            "type": "text",
            "content": format!("You said: {}", message["content"].as_str().unwrap_or_default()),
        }),
        (Some("event"), Some("subscribe")) => json!({"type": "text", "content": "Welcome!"}),
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    )
        .into_response()
}

/// Checks `X-Wxgate-Signature: sha256=<hex>` = HMAC-SHA256(secret, "<timestamp>.<body>")
/// in constant time, and that `X-Wxgate-Timestamp` is recent (no replays).
fn signed(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) =
        (header("x-wxgate-timestamp"), header("x-wxgate-signature"))
    else {
        return false;
    };
    let Ok(sent) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if (now - sent).abs() > MAX_SKEW_SECS {
        return false;
    }
    let Some(expected) = signature
        .strip_prefix("sha256=")
        .and_then(|hex_digits| hex::decode(hex_digits).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}
