//! `wxgate serve --check`: what a config would serve, without serving it.
//!
//! The report lists each account's URL path, mode, policy, handler and address filter,
//! the store and the listen address, plus warnings about configs that are valid but
//! probably not what was meant (an account with neither rules nor forward answers
//! `success` to everything). The same warnings are logged when `serve` starts.

use serde::Serialize;

use crate::config::{Config, ConfigError, StoreConfig};

/// One account as it would be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountSummary {
    /// The account name.
    pub name: String,
    /// The URL path WeChat must call.
    pub path: String,
    /// plaintext | compatible | safe.
    pub mode: &'static str,
    /// ack | ride_retries | push.
    pub policy: &'static str,
    /// What answers its messages: `rules (N)`, `forward <url>`, both, or `none`.
    pub handler: String,
    /// The allowed client networks; empty allows every address.
    pub allow_ips: Vec<String>,
}

/// The result of checking a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Whether the config is valid.
    pub ok: bool,
    /// The validation error, naming the field, when it is not.
    pub error: Option<String>,
    /// The listen address.
    pub listen: Option<String>,
    /// The store, in words.
    pub store: Option<String>,
    /// Every account.
    pub accounts: Vec<AccountSummary>,
    /// Valid but suspicious settings.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// The report of a loaded (or failed) config.
    pub fn new(config: Result<&Config, &ConfigError>) -> CheckReport {
        let config = match config {
            Ok(config) => config,
            Err(error) => {
                return CheckReport {
                    ok: false,
                    error: Some(error.to_string()),
                    listen: None,
                    store: None,
                    accounts: Vec::new(),
                    warnings: Vec::new(),
                }
            }
        };
        let accounts = config
            .accounts
            .iter()
            .map(|account| {
                let mut handler = Vec::new();
                if !account.rules.is_empty() {
                    handler.push(format!("rules ({})", account.rules.len()));
                }
                if let Some(forward) = &account.forward {
                    handler.push(format!("forward {}", forward.url));
                }
                AccountSummary {
                    name: account.name.clone(),
                    path: format!("/wx/{}", account.name),
                    mode: account.mode.as_str(),
                    policy: account.policy.as_str(),
                    handler: if handler.is_empty() {
                        "none".to_owned()
                    } else {
                        handler.join(" + ")
                    },
                    allow_ips: account.allow_ips.iter().map(ToString::to_string).collect(),
                }
            })
            .collect();
        CheckReport {
            ok: true,
            error: None,
            listen: Some(config.listen.to_string()),
            store: Some(describe_store(&config.store)),
            accounts,
            warnings: warnings(config),
        }
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(error) = &self.error {
            out.push_str(&format!("config invalid: {error}\n"));
            return out;
        }
        out.push_str(&format!(
            "config ok: listen {}, store {}\n",
            self.listen.as_deref().unwrap_or("-"),
            self.store.as_deref().unwrap_or("-")
        ));
        for a in &self.accounts {
            let allow = if a.allow_ips.is_empty() {
                "any address".to_owned()
            } else {
                format!("allow {}", a.allow_ips.join(", "))
            };
            out.push_str(&format!(
                "  {:<24} {:<10} {:<12} handler: {}; {}\n",
                a.path, a.mode, a.policy, a.handler, allow
            ));
        }
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }
}

/// The store in words.
pub fn describe_store(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Memory { retention } => {
            format!(
                "memory (claims {} s, {}, lost on restart)",
                retention.claims.as_secs(),
                describe_history(retention)
            )
        }
        StoreConfig::Sqlite {
            path, retention, ..
        } => format!(
            "sqlite {} (claims {} s, {})",
            path.display(),
            retention.claims.as_secs(),
            describe_history(retention)
        ),
        StoreConfig::Redis {
            url,
            key_prefix,
            retention,
        } => format!(
            "redis {} prefix {key_prefix:?} (claims {} s, {})",
            url.masked(),
            retention.claims.as_secs(),
            describe_history(retention)
        ),
    }
}

fn describe_history(retention: &crate::store::Retention) -> String {
    match retention.inbox {
        Some(inbox) => format!("history {} s", inbox.as_secs()),
        None => "history kept forever".to_owned(),
    }
}

/// Valid settings that are probably mistakes.
pub fn warnings(config: &Config) -> Vec<String> {
    config
        .accounts
        .iter()
        .filter(|a| a.rules.is_empty() && a.forward.is_none())
        .map(|a| {
            format!(
                "account {} has neither rules nor a forward upstream: it answers `success` to every message (unless a handler is set in code)",
                a.name
            )
        })
        .collect()
}
