//! Who may use the console: a session cookie from the login page, or the admin token as
//! `Authorization: Bearer` (for scripts), on every route but the login page and assets.
//!
//! - The session cookie is `HttpOnly` (no script reads it) and `SameSite=Strict` (no
//!   other site's page sends it). A session is a random id mapped to its expiry and its
//!   CSRF token; nothing about the admin token is in the cookie.
//! - A POST that rides on the cookie must carry the session's CSRF token in the
//!   `X-CSRF-Token` header (the pages read it from a `<meta>` tag) and, when the browser
//!   sends an `Origin`, come from the console's own origin. A Bearer request needs
//!   neither: a browser never adds that header on its own.
//! - Failed logins and wrong Bearer tokens are counted; past [`MAX_FAILURES`] within
//!   [`FAILURE_WINDOW`], every token check is refused with 429 until the window moves on,
//!   so the token cannot be guessed at speed.
//!
//! Time is `tokio::time::Instant`, so the limits are tested with the paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;

use super::api::ConsoleError;
use super::pages;
use super::Console;

/// The session cookie's name.
pub const COOKIE: &str = "wxgate_console";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept; a new login past it ends the one closest to expiry.
pub const MAX_SESSIONS: usize = 64;
/// Failed token checks allowed within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The window of the failure count.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The header a cookie-authenticated POST carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token every POST of this session must echo.
    pub csrf: String,
    /// When the session ends.
    expires: Instant,
}

/// Logged-in browsers, by session id. Bounded by [`MAX_SESSIONS`]; expired ones are
/// dropped whenever a session is created or looked up.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

/// The recent failed token checks.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<VecDeque<Instant>>,
}

/// How a request was authenticated, for the handlers that care.
#[derive(Clone, Debug)]
pub enum Authenticated {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The login cookie, with the session's CSRF token for the page to embed.
    Session {
        /// The session's CSRF token.
        csrf: String,
    },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 32 random bytes as hex.
fn random_id() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

impl Sessions {
    /// Starts a session and returns its id.
    pub fn create(&self) -> String {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, session| session.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        let id = random_id();
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_id(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// The live session of `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        match sessions.get(id) {
            Some(session) if session.expires > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }
}

impl LoginLimiter {
    /// `Err(wait)` while the failures of the window are used up.
    pub fn check(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        while failures
            .front()
            .is_some_and(|at| now.duration_since(*at) >= FAILURE_WINDOW)
        {
            failures.pop_front();
        }
        if failures.len() >= MAX_FAILURES {
            let oldest = failures.front().copied().unwrap_or(now);
            return Err(FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    /// Counts one failure (at most [`MAX_FAILURES`] are kept).
    pub fn fail(&self) {
        let mut failures = lock(&self.failures);
        failures.push_back(Instant::now());
        while failures.len() > MAX_FAILURES {
            failures.pop_front();
        }
    }
}

/// The session id of the request's cookie, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether the `Origin` header, when present, is the request's own host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| o.split_once("://"));
    matches!((origin, host), (Some((_, origin_host)), Some(host)) if origin_host == host)
}

fn too_many(wait: Duration) -> Response {
    let mut response = ConsoleError::TooManyFailures.into_response();
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The middleware in front of every protected route.
pub async fn require(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let is_api = request.uri().path().starts_with("/console/api/");
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        if let Err(wait) = console.limiter.check() {
            return too_many(wait);
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "));
        if !token.is_some_and(|token| console.token_matches(token)) {
            console.limiter.fail();
            tracing::warn!("console: a request with a wrong bearer token was refused");
            return ConsoleError::Unauthorized.into_response();
        }
        request.extensions_mut().insert(Authenticated::Bearer);
        return next.run(request).await;
    }
    let session = session_id(request.headers()).and_then(|id| console.sessions.get(id));
    let Some(session) = session else {
        return if is_api {
            ConsoleError::Unauthorized.into_response()
        } else {
            Redirect::to("/console/login").into_response()
        };
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let matches: bool = {
            use subtle::ConstantTimeEq;
            sent.as_bytes().ct_eq(session.csrf.as_bytes()).into()
        };
        if !matches || !same_origin(request.headers()) {
            return ConsoleError::Csrf.into_response();
        }
    }
    request
        .extensions_mut()
        .insert(Authenticated::Session { csrf: session.csrf });
    next.run(request).await
}

/// `GET /console/login`.
pub async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /console/login`: a session cookie for the right token.
pub async fn login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // A login posted from another site would sign this browser in to the attacker's idea
    // of the console; only the console's own page may post it.
    if !same_origin(&headers) {
        return ConsoleError::Csrf.into_response();
    }
    if let Err(wait) = console.limiter.check() {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Html(pages::login(Some(&format!(
                "Too many failed logins; try again in {} s. 登录失败次数过多，请稍后再试。",
                wait.as_secs().max(1)
            )))),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if !console.token_matches(form.token.trim()) {
        console.limiter.fail();
        tracing::warn!("console: a login with a wrong token was refused");
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some("Wrong token. 令牌错误。"))),
        )
            .into_response();
    }
    let id = console.sessions.create();
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to("/console/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /console/logout`: ends the session and clears the cookie.
pub async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        console.sessions.remove(id);
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "wxgate_console=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_lock_the_window_and_expire_with_it() {
        let limiter = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check().is_ok());
            limiter.fail();
        }
        assert_eq!(limiter.check(), Err(FAILURE_WINDOW));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(limiter.check(), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.check(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_and_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.create();
        assert!(sessions.get(&first).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 1..MAX_SESSIONS {
            sessions.create();
        }
        assert!(sessions.get(&first).is_some());
        // One more ends the session closest to expiry: the first.
        sessions.create();
        assert!(sessions.get(&first).is_none());
        let last = sessions.create();
        tokio::time::advance(SESSION_TTL).await;
        assert!(sessions.get(&last).is_none());
        assert!(sessions.get("not-a-session").is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wxgate_console=abc; b=2"),
        );
        assert_eq!(session_id(&headers), Some("abc"));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://h:1"));
        headers.insert(header::HOST, HeaderValue::from_static("h:1"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil"));
        assert!(!same_origin(&headers));
    }
}
