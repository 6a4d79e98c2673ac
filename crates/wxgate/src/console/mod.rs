//! The web console: WeChat's interface debugging tool (接口调试工具) done right, a live
//! inbox, message details and an overview with live charts, served by `wxgate serve`
//! under `/console/` when `[console] enabled = true`.
//!
//! - [`auth`]: the login page's session cookie, `Authorization: Bearer`, the rate limit
//!   on failed logins and the CSRF check of POSTs. Every route but the login page and
//!   the static assets goes through it.
//! - [`api`]: the JSON API under `/console/api/` (docs/console.md), which the pages use.
//! - [`debugger`]: `sim/send` and `sim/verify`, turning CLI-named JSON fields into the
//!   same `wxgate sim` arguments and running the same code as the CLI, on the server.
//! - [`series`]: the last 15 minutes of per-second figures behind the overview's charts.
//! - [`pages`]: the HTML shells and the embedded script and style sheet.
//!
//! What it must not do: put a token, an EncodingAESKey, an AppSecret or a forward secret
//! into any response (accounts are shown by name, mode and policy only, and an account
//! target of the debugger is filled in on the server), or keep anything without a bound
//! (sessions, login failures and chart samples all have fixed caps).

pub mod api;
pub mod auth;
pub mod debugger;
pub mod pages;
pub mod series;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::config::{ConsoleConfig, Secret};
use crate::gateway::Gateway;

/// The console's shared state, one per gateway.
pub struct Console {
    /// The gateway the console shows and whose accounts the debugger can target.
    pub(crate) gateway: Arc<Gateway>,
    /// The admin token.
    token: Secret,
    /// Logged-in browsers.
    pub(crate) sessions: auth::Sessions,
    /// Failed logins, for the rate limit.
    pub(crate) limiter: auth::LoginLimiter,
    /// The per-second figures of the charts.
    pub(crate) series: Arc<series::Series>,
    /// `http://127.0.0.1:<port>`: where the debugger reaches this gateway's own webhook.
    pub(crate) webhook_base: String,
    /// Bounds the debugger's concurrent deliveries, so the page is no load generator.
    pub(crate) sim_slots: tokio::sync::Semaphore,
    /// Cancelled at shutdown: ends the event streams and the sampler.
    pub(crate) stop: CancellationToken,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("webhook_base", &self.webhook_base)
            .finish_non_exhaustive()
    }
}

/// How many debugger deliveries run at once; more wait their turn.
const SIM_SLOTS: usize = 4;

impl Console {
    /// Creates the console of `gateway`, whose webhook listens on `webhook_addr`, and
    /// starts its chart sampler (under the current tokio runtime). `stop` ends the event
    /// streams and the sampler; cancel it when the server shuts down, or open event
    /// streams keep a graceful shutdown waiting.
    pub fn new(
        gateway: Arc<Gateway>,
        config: &ConsoleConfig,
        webhook_addr: SocketAddr,
        stop: CancellationToken,
    ) -> Arc<Console> {
        let series = Arc::new(series::Series::new());
        series::spawn_sampler(&gateway, Arc::clone(&series), stop.clone());
        // A wildcard address is reached on loopback from the same host.
        let ip = if webhook_addr.ip().is_unspecified() {
            match webhook_addr {
                SocketAddr::V4(_) => "127.0.0.1".to_owned(),
                SocketAddr::V6(_) => "[::1]".to_owned(),
            }
        } else {
            match webhook_addr {
                SocketAddr::V4(addr) => addr.ip().to_string(),
                SocketAddr::V6(addr) => format!("[{}]", addr.ip()),
            }
        };
        Arc::new(Console {
            gateway,
            token: config.token.clone(),
            sessions: auth::Sessions::default(),
            limiter: auth::LoginLimiter::default(),
            series,
            webhook_base: format!("http://{ip}:{}", webhook_addr.port()),
            sim_slots: tokio::sync::Semaphore::new(SIM_SLOTS),
            stop,
        })
    }

    /// The console's routes, all under `/console`. Merge them into the webhook's router,
    /// or serve them alone on their own address.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let protected = axum::Router::new()
            .route("/console/", get(pages::overview))
            .route("/console/debugger", get(pages::debugger))
            .route("/console/inbox", get(pages::inbox))
            .route("/console/message", get(pages::message))
            .route("/console/logout", post(auth::logout))
            .route("/console/api/overview", get(api::overview))
            .route("/console/api/messages", get(api::messages))
            .route("/console/api/messages/{dedup_key}", get(api::message))
            .route("/console/api/events", get(api::events))
            .route("/console/api/sim/send", post(debugger::send))
            .route("/console/api/sim/verify", post(debugger::verify))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(self),
                auth::require,
            ));
        axum::Router::new()
            .route("/console", get(|| async { Redirect::to("/console/") }))
            .route("/console/login", get(auth::login_page).post(auth::login))
            .route("/console/assets/{file}", get(pages::asset))
            .merge(protected)
            .layer(middleware::map_response(security_headers))
            .with_state(Arc::clone(self))
    }

    /// Whether `candidate` is the admin token, compared in constant time.
    pub(crate) fn token_matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        // Comparing digests keeps the time independent of the length as well.
        let digest = |text: &str| {
            use sha2::Digest;
            sha2::Sha256::digest(text.as_bytes())
        };
        digest(candidate).ct_eq(&digest(self.token.expose())).into()
    }
}

/// Headers on every console response: no framing, no sniffing, no caching of data, and
/// scripts and styles only from the console itself (the pages use no inline script).
async fn security_headers(mut response: Response) -> impl IntoResponse {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `oWxg…0001`: enough of an OpenID to tell followers apart in a list, not the whole.
pub fn mask_openid(openid: &str) -> String {
    let chars: Vec<char> = openid.chars().collect();
    if chars.len() <= 8 {
        return "…".repeat(usize::from(!chars.is_empty()));
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::mask_openid;

    #[test]
    fn openids_are_masked() {
        assert_eq!(mask_openid("oyORnuP8q7ou2gfYjqLzSIWZf0rs"), "oyOR…f0rs");
        assert_eq!(mask_openid("short"), "…");
        assert_eq!(mask_openid(""), "");
    }
}
