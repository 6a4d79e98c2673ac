//! `wxgate ips`: WeChat's callback addresses, for `allow_ips`.
//!
//! WeChat publishes the addresses its servers call webhooks from through its API
//! (`GET /cgi-bin/getcallbackip`, which needs an access token, so the account's AppSecret).
//! The list changes now and then, so it is fetched on demand (a cron job can rewrite the
//! config and send SIGHUP) rather than baked in. Nothing here logs the token.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::AccountConfig;
use crate::push::{PushError, TokenCache};

/// How long the API call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// WeChat's callback addresses as fetched for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackIps {
    /// The account whose credentials fetched the list.
    pub account: String,
    /// The addresses and networks, as WeChat gives them (`101.226.103.0/25`, …).
    pub ip_list: Vec<String>,
}

impl CallbackIps {
    /// The TOML line to paste into the config (globally, or in the account's table).
    pub fn to_toml(&self) -> String {
        let quoted: Vec<String> = self.ip_list.iter().map(|ip| format!("{ip:?}")).collect();
        format!(
            "# WeChat's callback addresses, fetched with account {}'s credentials.\nallow_ips = [{}]\n",
            self.account,
            quoted.join(", ")
        )
    }
}

#[derive(Deserialize)]
struct Answer {
    ip_list: Option<Vec<String>>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

/// Why the list could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpsError {
    /// The account has no AppSecret to obtain an access token with.
    #[error("account {0} has no app_secret (needed for an access token)")]
    NoSecret(String),
    /// WeChat's API failed.
    #[error(transparent)]
    Api(#[from] PushError),
}

/// Fetches WeChat's callback addresses with `account`'s credentials.
pub async fn fetch(
    http: &reqwest::Client,
    account: &AccountConfig,
) -> Result<CallbackIps, IpsError> {
    let secret = account
        .app_secret
        .clone()
        .ok_or_else(|| IpsError::NoSecret(account.name.clone()))?;
    let tokens = TokenCache::new(
        http.clone(),
        &account.api_base,
        account.app_id.as_str(),
        secret,
        account.token_endpoint,
    );
    let mut last = None;
    // One retry after a rejected token, as the customer-service client does.
    for _ in 0..2 {
        let token = tokens.get().await?;
        match call(http, &account.api_base, token.expose()).await {
            Err(error) if error.is_token_rejected() => {
                tokens.invalidate(&token).await;
                last = Some(error);
            }
            Err(error) => return Err(error.into()),
            Ok(ip_list) => {
                return Ok(CallbackIps {
                    account: account.name.clone(),
                    ip_list,
                })
            }
        }
    }
    Err(last.map_or(IpsError::NoSecret(account.name.clone()), IpsError::Api))
}

async fn call(
    http: &reqwest::Client,
    api_base: &str,
    token: &str,
) -> Result<Vec<String>, PushError> {
    let request = http
        .get(format!(
            "{}/cgi-bin/getcallbackip",
            api_base.trim_end_matches('/')
        ))
        .query(&[("access_token", token)])
        .timeout(TIMEOUT);
    let answer: Answer = crate::push::client::call_api(request).await?;
    match (answer.errcode, answer.ip_list) {
        (None | Some(0), Some(list)) => Ok(list),
        (None | Some(0), None) => Err(PushError::BadAnswer("no ip_list".to_owned())),
        (Some(code), _) => Err(PushError::Api {
            code,
            message: answer.errmsg.unwrap_or_default(),
        }),
    }
}
