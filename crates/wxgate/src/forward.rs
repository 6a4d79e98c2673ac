//! The `forward` handler: wxgate as the WeChat adapter of any HTTP service.
//!
//! Every message no rule answers is POSTed as JSON to the account's upstream URL; the
//! upstream answers `200` with a reply in its documented JSON form, or `204` for none.
//! The contract (body, headers, signature, status codes) is in `docs/forward.md`:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Idempotency-Key: msg:oyORnuP8q7ou2gfYjqLzSIWZf0rs:1234567890123456
//! X-Wxgate-Timestamp: 1700000000                      (only with a secret)
//! X-Wxgate-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//!
//! {"account":"demo","dedup_key":"msg:…","message":{<Inbound JSON form>}}
//! ```
//!
//! The call is bounded by `max_secs` (connect retries included), not by the attempt's
//! budget: the gateway runs handlers in their own task, so a late upstream answer still
//! reaches the answer policy (recorded, and under `push` sent through the customer-service
//! API). Only connect errors are retried, because then the request was never sent; any
//! other failure is returned as a [`HandlerError`] with its reason and recorded.
//!
//! What this module must not do: log message contents, the secret or full OpenIDs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Semaphore;
use wechat_proto::{Inbound, Reply};

use crate::clock::WallClock;
use crate::config::{ForwardConfig, Secret};
use crate::handler::{Handler, HandlerContext, HandlerError};

/// The header carrying the message's dedup key; equal for every retry of one message.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The header carrying the Unix time (seconds) the signature was made at.
pub const TIMESTAMP_HEADER: &str = "X-Wxgate-Timestamp";
/// The header carrying `sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>`.
pub const SIGNATURE_HEADER: &str = "X-Wxgate-Signature";

/// How many times a connect error is tried in all (the request was never sent).
const CONNECT_TRIES: u32 = 3;
/// The pause before the first connect retry; doubled for each further one.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// The body POSTed upstream.
#[derive(Debug, Serialize)]
pub struct ForwardRequest<'a> {
    /// The account name the message arrived on.
    pub account: &'a str,
    /// The dedup key's text form (also the `Idempotency-Key` header).
    pub dedup_key: String,
    /// The message in the JSON form of [`Inbound`].
    pub message: &'a Inbound,
}

/// Why an upstream call failed. Each becomes the recorded reason of a handler failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The upstream could not be reached, even after the connect retries.
    #[error("upstream unreachable after {tries} tries: {reason}")]
    Connect {
        /// How many connections were tried.
        tries: u32,
        /// The last connect error.
        reason: String,
    },
    /// The call did not finish within `max_secs`.
    #[error("upstream did not answer within {0} s")]
    Timeout(u64),
    /// The request failed after it was sent (reset, broken body…).
    #[error("upstream request failed: {0}")]
    Request(String),
    /// The upstream answered with a status other than 200 or 204.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// The `200` body is not a reply in its JSON form.
    #[error("upstream reply is not a valid reply JSON: {0}")]
    BadReply(String),
}

/// Signs `body` at `timestamp`: the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Forwards messages to one upstream.
#[derive(Debug, Clone)]
pub struct ForwardHandler {
    /// The shared, pooled client (one per gateway).
    client: reqwest::Client,
    config: ForwardConfig,
    /// Bounds the calls in flight to this upstream.
    permits: Arc<Semaphore>,
}

impl ForwardHandler {
    /// A handler forwarding to `config.url` through `client`.
    pub fn new(client: reqwest::Client, config: ForwardConfig) -> ForwardHandler {
        let permits = Arc::new(Semaphore::new(config.max_concurrency));
        ForwardHandler {
            client,
            config,
            permits,
        }
    }

    /// One call: waits for a permit, sends (retrying connect errors), reads the reply.
    pub async fn forward(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, ForwardError> {
        let max = self.config.max;
        match tokio::time::timeout(max, self.call(context, inbound)).await {
            Ok(result) => result,
            Err(_) => Err(ForwardError::Timeout(max.as_secs())),
        }
    }

    async fn call(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, ForwardError> {
        let dedup_key = context.dedup_key.to_string();
        let body = serde_json::to_vec(&ForwardRequest {
            account: &context.account,
            dedup_key: dedup_key.clone(),
            message: inbound,
        })
        .map_err(|e| ForwardError::Request(format!("cannot encode the message: {e}")))?;
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ForwardError::Request("upstream limiter closed".to_owned()))?;
        let mut backoff = CONNECT_BACKOFF;
        let mut tries = 0;
        let response = loop {
            tries += 1;
            let mut request = self
                .client
                .post(&self.config.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(IDEMPOTENCY_KEY_HEADER, &dedup_key);
            if let Some(secret) = &self.config.secret {
                let timestamp = crate::clock::SystemClock.now_secs();
                request = request
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(SIGNATURE_HEADER, signature(secret, timestamp, &body));
            }
            match request.body(body.clone()).send().await {
                Ok(response) => break response,
                Err(e) if e.is_connect() && tries < CONNECT_TRIES => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) if e.is_connect() => {
                    return Err(ForwardError::Connect {
                        tries,
                        reason: e.without_url().to_string(),
                    })
                }
                Err(e) => return Err(ForwardError::Request(e.without_url().to_string())),
            }
        };
        match response.status().as_u16() {
            204 => Ok(None),
            200 => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| ForwardError::Request(e.without_url().to_string()))?;
                let reply: Reply = serde_json::from_slice(&bytes)
                    .map_err(|e| ForwardError::BadReply(e.to_string()))?;
                Ok(match reply {
                    Reply::Success => None,
                    reply => Some(reply),
                })
            }
            status => Err(ForwardError::Status(status)),
        }
    }
}

#[async_trait]
impl Handler for ForwardHandler {
    async fn handle(
        &self,
        context: &HandlerContext,
        inbound: &Inbound,
    ) -> Result<Option<Reply>, HandlerError> {
        self.forward(context, inbound)
            .await
            .map_err(|e| HandlerError::new(format!("forward: {e}")))
    }
}

/// The HTTP client shared by every upstream and WeChat API call of a gateway: pooled,
/// rustls, with a connect timeout (overall caps are per call).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_documented_hmac() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        let sig = signature(&Secret::new("secret"), 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(sig, signature(&Secret::new("other"), 1_700_000_000, b"{}"));
    }
}
