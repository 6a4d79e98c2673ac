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
    /// The store could not record the message; WeChat should retry.
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

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            GatewayError::Unauthorized { reason, .. } => {
                tracing::warn!(%reason, "request refused: unauthorized");
                "unauthorized".to_owned()
            }
            GatewayError::Unavailable(reason) => {
                tracing::error!(%reason, "request refused: store unavailable");
                "service unavailable".to_owned()
            }
            other => {
                tracing::info!(error = %other, "request refused");
                other.to_string()
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}
