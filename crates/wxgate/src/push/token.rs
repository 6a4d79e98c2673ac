//! The access token of one account: fetched from one place, cached, refreshed ahead of
//! expiry, and refreshed again when WeChat rejects it (docs/protocol.md §8).
//!
//! One [`TokenCache`] per account holds a `tokio::sync::Mutex` across the fetch, so many
//! tasks needing a token at once cause one fetch (single flight); the others wait and
//! reuse it. With `/cgi-bin/token` every fetch retires the previous token, which is why
//! fetching from many places at once breaks the other fetchers.
//!
//! Neither the AppSecret nor a token is ever logged or shown by `Debug`, and request
//! errors are stripped of their URL (which carries them).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::PushError;
use crate::config::{Secret, TokenEndpoint};

/// How long before its expiry a token is replaced (capped at a fifth of its lifetime).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// How long one token request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// An access token. Shown by `Debug` only as its length.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// The token, for the one place that puts it in a URL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(<{} chars>)", self.0.len())
    }
}

/// The cached token and when to replace it.
#[derive(Default)]
struct State {
    current: Option<(AccessToken, Instant)>,
    /// Set after WeChat rejected the cached token: the next `stable_token` fetch asks for
    /// `force_refresh`, since a plain one would hand back the same rejected token.
    force_refresh: bool,
}

/// The token source of one account.
pub struct TokenCache {
    http: reqwest::Client,
    api_base: String,
    app_id: String,
    app_secret: Secret,
    endpoint: TokenEndpoint,
    state: Mutex<State>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("api_base", &self.api_base)
            .field("app_id", &self.app_id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

impl TokenCache {
    /// A cache fetching from `api_base` with the account's AppID and AppSecret.
    pub fn new(
        http: reqwest::Client,
        api_base: &str,
        app_id: &str,
        app_secret: Secret,
        endpoint: TokenEndpoint,
    ) -> TokenCache {
        TokenCache {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            app_id: app_id.to_owned(),
            app_secret,
            endpoint,
            state: Mutex::new(State::default()),
        }
    }

    /// A valid token: the cached one, or a fresh one fetched by exactly one caller.
    pub async fn get(&self) -> Result<AccessToken, PushError> {
        let mut state = self.state.lock().await;
        if let Some((token, refresh_at)) = &state.current {
            if Instant::now() < *refresh_at {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fetch(state.force_refresh).await?;
        let ahead = REFRESH_AHEAD.min(lifetime / 5);
        state.current = Some((token.clone(), Instant::now() + lifetime - ahead));
        state.force_refresh = false;
        Ok(token)
    }

    /// Drops `stale` after WeChat rejected it (40001, 42001, 40014), unless another task
    /// already replaced it, so that one rejection causes one refresh.
    pub async fn invalidate(&self, stale: &AccessToken) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|(token, _)| token == stale)
        {
            state.current = None;
            state.force_refresh = true;
        }
    }

    async fn fetch(&self, force_refresh: bool) -> Result<(AccessToken, Duration), PushError> {
        let request = match self.endpoint {
            TokenEndpoint::Token => self
                .http
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", &self.app_id),
                    ("secret", self.app_secret.expose()),
                ]),
            TokenEndpoint::StableToken => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.app_id,
                    "secret": self.app_secret.expose(),
                    "force_refresh": force_refresh,
                })),
        };
        let response = request
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| PushError::Network(format!("token: {}", e.without_url())))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(PushError::Status(status));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PushError::Network(format!("token: {}", e.without_url())))?;
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| PushError::BadAnswer(format!("token: {e}")))?;
        match (answer.access_token, answer.errcode) {
            (Some(token), None | Some(0)) if !token.is_empty() => {
                let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(7200).max(1));
                tracing::debug!(app_id = %self.app_id, secs = lifetime.as_secs(), "access token fetched");
                Ok((AccessToken(token), lifetime))
            }
            (_, code) => Err(PushError::Api {
                code: code.unwrap_or(-1),
                message: format!(
                    "token: {}",
                    answer
                        .errmsg
                        .unwrap_or_else(|| "no access_token".to_owned())
                ),
            }),
        }
    }
}
