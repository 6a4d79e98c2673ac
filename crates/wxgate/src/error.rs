//! The one application error type and the one place that turns errors into HTTP answers.
//!
//! WeChat itself only ever receives a reply XML, `success` or an empty body: those are
//! answers, not errors. A [`GatewayError`] is for requests that must not reach a handler
//! (forged, stale, malformed, too large, unknown account) or that the store could not
//! record (503, so that WeChat retries instead of the message being lost). Client errors
//! say what was wrong; authentication failures say only "unauthorized" (the reason is
//! logged); internal failures are logged and hidden.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use wechat_proto::{AuthError, ErrorCode, Refusal};

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No account is configured under this path.
    #[error("unknown account")]
    UnknownAccount,
    /// The body is over the configured cap.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The request is malformed (missing parameter, bad XML, bad ciphertext).
    #[error("{reason}")]
    BadRequest {
        /// What is wrong, for the client.
        reason: String,
        /// The official code, when one applies.
        code: Option<ErrorCode>,
    },
    /// The request is not authenticated: signature, timestamp, mode or AppID.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// What failed, for the logs only.
        reason: String,
        /// The official code, when one applies.
        code: Option<ErrorCode>,
    },
    /// The client's address is not in the account's `allow_ips`.
    #[error("address {address} is not allowed")]
    Forbidden {
        /// The client address as resolved (through trusted proxies), for the log.
        address: String,
    },
    /// The request body did not arrive within `limits.body_read_timeout_ms`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The store could not record the message (or the server is shutting down); WeChat
    /// should retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl GatewayError {
    /// A malformed request.
    pub fn bad_request(reason: impl Into<String>, code: Option<ErrorCode>) -> GatewayError {
        GatewayError::BadRequest {
            reason: reason.into(),
            code,
        }
    }

    /// An unauthenticated request.
    pub fn unauthorized(reason: impl Into<String>, code: Option<ErrorCode>) -> GatewayError {
        GatewayError::Unauthorized {
            reason: reason.into(),
            code,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UnknownAccount => StatusCode::NOT_FOUND,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The official code, if the error has one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            GatewayError::BadRequest { code, .. } | GatewayError::Unauthorized { code, .. } => {
                *code
            }
            _ => None,
        }
    }

    /// A short label for metrics (`rejected_400`, …).
    pub fn outcome(&self) -> &'static str {
        match self {
            GatewayError::UnknownAccount => "rejected_404",
            GatewayError::BodyTooLarge { .. } => "rejected_413",
            GatewayError::BadRequest { .. } => "rejected_400",
            GatewayError::Unauthorized { .. } => "rejected_401",
            GatewayError::Forbidden { .. } => "rejected_403",
            GatewayError::BodyTimeout => "rejected_408",
            GatewayError::Unavailable(_) => "unavailable_503",
        }
    }
}

impl From<AuthError> for GatewayError {
    /// A malformed request is a 400 that says what is wrong; an unauthenticated one a 401
    /// whose reason is only logged. The official code travels along for the metrics.
    fn from(error: AuthError) -> GatewayError {
        let code = error.code();
        match error.refusal() {
            Refusal::Malformed => GatewayError::bad_request(error.to_string(), code),
            Refusal::Unauthenticated => GatewayError::unauthorized(error.to_string(), code),
        }
    }
}

impl GatewayError {
    /// Logs the refusal: the account (when known), the reason, the official code and a
    /// hint when the code points at a configuration mistake. The request's span adds the
    /// remote address. Internal details go to the log only, never to the client.
    pub fn log_refusal(&self, account: Option<&str>) {
        let account = account.unwrap_or("-");
        let code = self.code().map(ErrorCode::as_i32);
        match self {
            GatewayError::Unavailable(reason) => {
                tracing::error!(account, %reason, "request refused: store unavailable");
            }
            GatewayError::Unauthorized { reason, .. } | GatewayError::BadRequest { reason, .. }
                if self.key_mismatch_hint().is_some() =>
            {
                let hint = self.key_mismatch_hint().unwrap_or_default();
                tracing::warn!(account, %reason, code, "request refused: account {account}'s {hint}");
            }
            GatewayError::Unauthorized { reason, .. } => {
                tracing::warn!(account, %reason, code, "request refused: unauthorized");
            }
            GatewayError::Forbidden { address } => {
                tracing::warn!(account, %address, "request refused: address not in allow_ips");
            }
            other => {
                tracing::info!(account, reason = %other, code, "request refused");
            }
        }
    }

    /// Decryption failures that got past `msg_signature` (so the Token is right) almost
    /// always mean a key or AppID that does not match WeChat's console.
    fn key_mismatch_hint(&self) -> Option<&'static str> {
        match self.code()? {
            ErrorCode::IllegalBuffer | ErrorCode::DecryptAes => Some(
                "EncodingAESKey probably does not match WeChat's (decryption failed with every configured key)",
            ),
            ErrorCode::ValidateAppid => Some(
                "app_id probably does not match WeChat's (the message was encrypted for another AppID)",
            ),
            _ => None,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            GatewayError::Unauthorized { .. } => "unauthorized".to_owned(),
            GatewayError::Unavailable(_) => "service unavailable".to_owned(),
            GatewayError::Forbidden { .. } => "forbidden".to_owned(),
            other => other.to_string(),
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}
