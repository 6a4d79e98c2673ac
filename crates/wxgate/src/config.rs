//! Configuration: raw sources (TOML file, `WXGATE_*` environment overrides) parsed once
//! into one validated [`Config`].
//!
//! Nothing else in the crate reads environment variables or files for settings. Every
//! validation error names the field it is about (`accounts[0].encoding_aes_key: …`), so a
//! broken config fails at start-up with a message an operator can act on.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use wechat_proto::inbound::MSG_TYPES;
use wechat_proto::{AesKey, AppId, Reply, Token};

use crate::store::redis::{RedisUrl, DEFAULT_KEY_PREFIX};
use crate::store::{Retention, DEFAULT_INBOX_RETENTION, DEFAULT_RETENTION};

/// The default per-attempt budget: WeChat waits 5 s; 1 s is left for the network.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(4000);
/// The default request body cap.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// The default accepted clock skew of a request's `timestamp`.
pub const DEFAULT_TIMESTAMP_WINDOW_SECS: u64 = 300;
/// The default base URL of WeChat's server API (access tokens, customer-service messages).
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The default cap on one upstream (`forward`) call, retries included.
pub const DEFAULT_FORWARD_MAX_SECS: u64 = 60;
/// The default number of concurrent calls to one upstream.
pub const DEFAULT_FORWARD_MAX_CONCURRENCY: usize = 64;
/// The default time a client has to send a request's complete header (slowloris guard).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a client has to send a request's complete body once its header is in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time an idle keep-alive connection stays open waiting for its next request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default cap on concurrent handler tasks per account.
pub const DEFAULT_MAX_CONCURRENT_HANDLERS: usize = 256;
/// The default text answered on the last attempt under `ride_retries`.
pub const DEFAULT_STILL_WORKING_TEXT: &str = "正在处理，请稍后发送任意消息查看结果。";

/// A configuration error, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The dotted path of the field, e.g. `accounts[0].token`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The socket address `wxgate serve` listens on.
    pub listen: SocketAddr,
    /// The request body cap, in bytes; larger bodies get 413 before any parsing.
    pub body_limit: usize,
    /// How long shutdown waits for in-flight handlers.
    pub shutdown_grace: Duration,
    /// Emit logs as JSON lines instead of text.
    pub log_json: bool,
    /// Emit one INFO line per message attempt (`[log] access`).
    pub log_access: bool,
    /// Timeouts and the connection cap of the HTTP server (`[limits]`).
    pub limits: Limits,
    /// Reverse proxies whose `X-Forwarded-For` is believed when checking `allow_ips`.
    pub trusted_proxies: Vec<IpNet>,
    /// The store backend.
    pub store: StoreConfig,
    /// The accounts, each served at `/wx/{name}`.
    pub accounts: Vec<AccountConfig>,
    /// The web console, when `[console] enabled = true`.
    pub console: Option<ConsoleConfig>,
}

/// The web console (`[console]`): served only when enabled, always behind its token.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The admin token: typed on the login page, or sent as `Authorization: Bearer`.
    pub token: Secret,
    /// Its own address (e.g. `127.0.0.1:8081`), so that it never faces the internet beside
    /// the webhook; `None` serves it under `/console/` on the webhook's address.
    pub listen: Option<SocketAddr>,
}

/// The shortest console token accepted: long enough that the rate-limited login page
/// cannot be guessed through.
pub const MIN_CONSOLE_TOKEN_LEN: usize = 16;
/// The HTTP server's protection against slow, idle and too many clients (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a complete request header, from its first byte
    /// (or from the accept, for a new connection).
    pub header_read_timeout: Duration,
    /// How long a client may take to send the body once the header is in.
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// The cap on open connections; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
        }
    }
}

/// The store backend and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// In memory: lost on restart; for tests and demos.
    Memory {
        /// How long claims stay live and history is kept.
        retention: Retention,
    },
    /// One SQLite file (the default).
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// How long claims stay live and history is kept.
        retention: Retention,
        /// `synchronous = FULL` (survives power loss) instead of `NORMAL` (survives a
        /// process crash).
        synchronous_full: bool,
    },
    /// A Redis server shared by several gateway instances.
    Redis {
        /// The server (`redis://` or `rediss://`; its password never reaches the logs).
        url: RedisUrl,
        /// Put before every key, so that several gateways share one server.
        key_prefix: String,
        /// How long claims stay live and history is kept.
        retention: Retention,
    },
}

/// The encryption mode configured for an account in WeChat's console; the protocol
/// crate owns it, since its rules (no downgrade) are protocol rules.
pub use wechat_proto::Mode;

/// What an attempt answers when the reply is not ready within its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Answer `success`, keep working, record the late reply.
    Ack,
    /// Hold attempts open so WeChat retries; answer the first attempt that finds the
    /// reply; on the last attempt answer a "still working" text and hand the reply to the
    /// follower's next message.
    RideRetries,
    /// Answer `success` and deliver the reply through the customer-service API.
    Push,
}

impl Policy {
    /// The configuration name of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Ack => "ack",
            Policy::RideRetries => "ride_retries",
            Policy::Push => "push",
        }
    }
}

/// A secret string (AppSecret, upstream HMAC secret): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that sends or signs with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Which endpoint issues access tokens (docs/protocol.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpoint {
    /// `POST /cgi-bin/stable_token`: the same token while valid, isolated from other
    /// callers of `/cgi-bin/token` (the default).
    StableToken,
    /// `GET /cgi-bin/token`: every call issues a new token and retires the previous one.
    Token,
}

/// The `forward` handler of an account: every message no rule answers goes upstream.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The upstream URL (http or https) the message is POSTed to.
    pub url: String,
    /// The shared secret of the `X-Wxgate-Signature` HMAC; `None` sends no signature.
    pub secret: Option<Secret>,
    /// The cap on one upstream call, connect retries included.
    pub max: Duration,
    /// How many calls to this upstream may run at once; more wait their turn.
    pub max_concurrency: usize,
}

/// One Official Account, validated.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The path segment: the account is served at `/wx/{name}`.
    pub name: String,
    /// The AppID expected inside every ciphertext.
    pub app_id: AppId,
    /// The token of both signatures.
    pub token: Token,
    /// The current EncodingAESKey (required for compatible and safe).
    pub aes_key: Option<AesKey>,
    /// The previous EncodingAESKey, also accepted during a key rotation.
    pub previous_aes_key: Option<AesKey>,
    /// The mode configured in WeChat's console; requests cannot downgrade it.
    pub mode: Mode,
    /// The accepted skew of `timestamp`; `None` disables the check.
    pub timestamp_window: Option<Duration>,
    /// The time an attempt may take before the policy decides.
    pub budget: Duration,
    /// What to answer when the budget runs out.
    pub policy: Policy,
    /// The text answered on the last attempt under `ride_retries`.
    pub still_working_text: String,
    /// Which delivery counts as WeChat's last one under `ride_retries`.
    pub last_attempt: u32,
    /// How long a handler may run at all before it is recorded as failed.
    pub handler_timeout: Duration,
    /// Built-in rules, first match wins.
    pub rules: Vec<RuleConfig>,
    /// The AppSecret, needed by `push` to obtain access tokens.
    pub app_secret: Option<Secret>,
    /// The base URL of WeChat's server API (a proxy, or a test server).
    pub api_base: String,
    /// Which endpoint issues access tokens.
    pub token_endpoint: TokenEndpoint,
    /// The upstream every message no rule answers is forwarded to.
    pub forward: Option<ForwardConfig>,
    /// The client addresses allowed to POST (the account's `allow_ips`, else the global
    /// one); empty allows every address.
    pub allow_ips: Vec<IpNet>,
    /// How many of this account's handlers may run at once; more wait for a slot inside
    /// their task (their messages are recorded and answered per the policy meanwhile).
    pub max_concurrent_handlers: usize,
}

/// A built-in rule: a matcher and what to answer.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Wire `MsgType` to match (`text`, `event`, …); `None` matches any.
    pub kind: Option<String>,
    /// Event name (case-insensitive), for `kind = "event"`.
    pub event: Option<String>,
    /// Exact keyword (trimmed, case-insensitive) of a text message.
    pub keyword: Option<String>,
    /// A regular expression over the text content (or voice recognition).
    pub regex: Option<regex::Regex>,
    /// Only these senders (OpenIDs).
    pub from: Vec<String>,
    /// What to answer.
    pub action: RuleAction,
}

/// What a rule answers.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// A reply whose strings are templates over the inbound fields (`{content}`, …).
    Reply(Reply),
    /// Echo: the text back, the voice recognition back, a description of anything else.
    Echo,
    /// Answer the bare `success`.
    Success,
    /// Hand the message to the account's `[accounts.forward]` upstream.
    Forward,
}

// ---------------------------------------------------------------------------------------
// Raw forms, exactly as in the TOML file.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    body_limit_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    log_format: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    console: RawConsole,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    enabled: Option<bool>,
    token: Option<String>,
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<String>,
    path: Option<PathBuf>,
    retention_secs: Option<u64>,
    inbox_retention_secs: Option<u64>,
    synchronous: Option<String>,
    url: Option<String>,
    key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Option<String>,
    app_id: Option<String>,
    token: Option<String>,
    encoding_aes_key: Option<String>,
    previous_encoding_aes_key: Option<String>,
    mode: Option<Mode>,
    timestamp_window_secs: Option<u64>,
    budget_ms: Option<u64>,
    policy: Option<Policy>,
    still_working_text: Option<String>,
    ride_retries_last_attempt: Option<u32>,
    handler_timeout_secs: Option<u64>,
    #[serde(default)]
    rules: Vec<RawRule>,
    app_secret: Option<String>,
    api_base: Option<String>,
    token_endpoint: Option<TokenEndpoint>,
    forward: Option<RawForward>,
    allow_ips: Option<Vec<String>>,
    max_concurrent_handlers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    url: Option<String>,
    secret: Option<String>,
    max_secs: Option<u64>,
    max_concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    kind: Option<String>,
    event: Option<String>,
    keyword: Option<String>,
    regex: Option<String>,
    #[serde(default)]
    from: Vec<String>,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    forward: bool,
    reply: Option<toml::Value>,
}

impl Config {
    /// Parses and validates a TOML document, then applies `WXGATE_*` overrides from `env`.
    ///
    /// `env` is passed in (not read here) so tests can supply their own.
    pub fn from_toml(text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::new("config", e.to_string()))?;
        Config::validate(raw, env)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Config::from_toml(&text, env)
    }

    /// The built-in demo: one plaintext and one safe-mode account with an echo rule, on
    /// `./wxgate.db`. The secrets are generated by the caller (so every install differs).
    pub fn demo(token: &str, encoding_aes_key: &str, app_id: &str) -> Result<Config, ConfigError> {
        let text = format!(
            r#"
listen = "127.0.0.1:8080"
[store]
backend = "sqlite"
path = "wxgate.db"
[[accounts]]
name = "demo"
app_id = "{app_id}"
token = "{token}"
encoding_aes_key = "{encoding_aes_key}"
mode = "plaintext"
[[accounts.rules]]
echo = true
[[accounts]]
name = "demo-safe"
app_id = "{app_id}"
token = "{token}"
encoding_aes_key = "{encoding_aes_key}"
mode = "safe"
[[accounts.rules]]
echo = true
"#
        );
        Config::from_toml(&text, &BTreeMap::new())
    }

    fn validate(mut raw: RawConfig, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        apply_env(&mut raw, env)?;
        let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = listen_text
            .parse()
            .map_err(|_| ConfigError::new("listen", format!("{listen_text:?} is not host:port")))?;
        let body_limit = raw.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT);
        if !(1024..=16 * 1024 * 1024).contains(&body_limit) {
            return Err(ConfigError::new(
                "body_limit_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        let log_json = match raw.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "log_format",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        let store = validate_store(&raw.store)?;
        let limits = validate_limits(&raw.limits)?;
        let global_allow = parse_networks("allow_ips", &raw.allow_ips)?;
        let trusted_proxies = parse_networks("trusted_proxies", &raw.trusted_proxies)?;
        if raw.accounts.is_empty() {
            return Err(ConfigError::new(
                "accounts",
                "at least one account is required",
            ));
        }
        let mut names = HashSet::new();
        let mut accounts = Vec::with_capacity(raw.accounts.len());
        for (index, account) in raw.accounts.iter().enumerate() {
            let mut account = validate_account(index, account)?;
            if account.allow_ips.is_empty() {
                account.allow_ips = global_allow.clone();
            }
            if !names.insert(account.name.clone()) {
                return Err(ConfigError::new(
                    format!("accounts[{index}].name"),
                    format!("{:?} is used twice", account.name),
                ));
            }
            accounts.push(account);
        }
        let console = validate_console(&raw.console)?;
        if console.as_ref().and_then(|c| c.listen) == Some(listen) {
            return Err(ConfigError::new(
                "console.listen",
                "is the webhook's own address; leave it out to share that address",
            ));
        }
        Ok(Config {
            console,
            listen,
            body_limit,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(30)),
            log_json,
            log_access: raw.log.access.unwrap_or(true),
            limits,
            trusted_proxies,
            store,
            accounts,
        })
    }
}

/// Applies the `WXGATE_*` overrides: `WXGATE_LISTEN`, `WXGATE_STORE_PATH`,
/// `WXGATE_STORE_BACKEND`, `WXGATE_STORE_URL`, `WXGATE_LOG_FORMAT`, and per account (name upper-cased, `-`
/// as `_`) `WXGATE_ACCOUNT_<NAME>_TOKEN`, `…_ENCODING_AES_KEY`,
/// `…_PREVIOUS_ENCODING_AES_KEY`, `…_APP_ID`, `…_APP_SECRET`, `…_FORWARD_SECRET` — so
/// secrets need not sit in the file.
fn apply_env(raw: &mut RawConfig, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    if let Some(listen) = env.get("WXGATE_LISTEN") {
        raw.listen = Some(listen.clone());
    }
    if let Some(path) = env.get("WXGATE_STORE_PATH") {
        raw.store.path = Some(PathBuf::from(path));
    }
    if let Some(backend) = env.get("WXGATE_STORE_BACKEND") {
        raw.store.backend = Some(backend.clone());
    }
    if let Some(url) = env.get("WXGATE_STORE_URL") {
        raw.store.url = Some(url.clone());
    }
    if let Some(format) = env.get("WXGATE_LOG_FORMAT") {
        raw.log_format = Some(format.clone());
    }
    if let Some(token) = env.get("WXGATE_CONSOLE_TOKEN") {
        raw.console.token = Some(token.clone());
    }
    for account in &mut raw.accounts {
        let Some(name) = &account.name else { continue };
        let prefix = format!(
            "WXGATE_ACCOUNT_{}_",
            name.to_ascii_uppercase().replace('-', "_")
        );
        let get = |suffix: &str| env.get(&format!("{prefix}{suffix}")).cloned();
        account.token = get("TOKEN").or(account.token.take());
        account.encoding_aes_key = get("ENCODING_AES_KEY").or(account.encoding_aes_key.take());
        account.previous_encoding_aes_key =
            get("PREVIOUS_ENCODING_AES_KEY").or(account.previous_encoding_aes_key.take());
        account.app_id = get("APP_ID").or(account.app_id.take());
        account.app_secret = get("APP_SECRET").or(account.app_secret.take());
        if let Some(secret) = get("FORWARD_SECRET") {
            account
                .forward
                .get_or_insert_with(RawForward::default)
                .secret = Some(secret);
        }
    }
    let known_prefix = "WXGATE_";
    for key in env.keys().filter(|k| k.starts_with(known_prefix)) {
        let known = [
            "WXGATE_LISTEN",
            "WXGATE_STORE_PATH",
            "WXGATE_STORE_BACKEND",
            "WXGATE_STORE_URL",
            "WXGATE_LOG_FORMAT",
            "WXGATE_CONFIG",
            "WXGATE_LOG",
            "WXGATE_CONSOLE_TOKEN",
        ]
        .contains(&key.as_str())
            || key.starts_with("WXGATE_ACCOUNT_");
        if !known {
            return Err(ConfigError::new(key.clone(), "unknown WXGATE_ variable"));
        }
    }
    Ok(())
}

/// `[console]`: off unless enabled; when enabled, a token of at least
/// [`MIN_CONSOLE_TOKEN_LEN`] printable characters is required.
fn validate_console(raw: &RawConsole) -> Result<Option<ConsoleConfig>, ConfigError> {
    if raw.enabled != Some(true) {
        return Ok(None);
    }
    let token = raw.token.as_deref().ok_or_else(|| {
        ConfigError::new(
            "console.token",
            "required when the console is enabled (or set WXGATE_CONSOLE_TOKEN)",
        )
    })?;
    if token.chars().count() < MIN_CONSOLE_TOKEN_LEN
        || token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::new(
            "console.token",
            format!("must be at least {MIN_CONSOLE_TOKEN_LEN} printable characters without spaces"),
        ));
    }
    let listen = raw
        .listen
        .as_deref()
        .map(|text| {
            text.parse().map_err(|_| {
                ConfigError::new("console.listen", format!("{text:?} is not host:port"))
            })
        })
        .transpose()?;
    Ok(Some(ConsoleConfig {
        token: Secret::new(token),
        listen,
    }))
}

fn validate_limits(raw: &RawLimits) -> Result<Limits, ConfigError> {
    let millis = |value: Option<u64>, default: Duration, name: &str| {
        let value = value.map_or(default, Duration::from_millis);
        if value < Duration::from_millis(50) || value > Duration::from_secs(600) {
            return Err(ConfigError::new(
                format!("limits.{name}"),
                "must be between 50 and 600000",
            ));
        }
        Ok(value)
    };
    let header_read_timeout = millis(
        raw.header_read_timeout_ms,
        DEFAULT_HEADER_READ_TIMEOUT,
        "header_read_timeout_ms",
    )?;
    let body_read_timeout = millis(
        raw.body_read_timeout_ms,
        DEFAULT_BODY_READ_TIMEOUT,
        "body_read_timeout_ms",
    )?;
    let idle_timeout = millis(raw.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT, "idle_timeout_ms")?;
    let max_connections = match raw.max_connections {
        None | Some(0) => None,
        Some(n) if n < 16 => {
            return Err(ConfigError::new(
                "limits.max_connections",
                "must be 0 (derive it from the open-file limit) or at least 16",
            ))
        }
        Some(n) => Some(n),
    };
    Ok(Limits {
        header_read_timeout,
        body_read_timeout,
        idle_timeout,
        max_connections,
    })
}

/// Parses a list of CIDRs (`10.0.0.0/8`) or bare addresses (a /32 or /128).
fn parse_networks(field: &str, raw: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        format!("{field}[{i}]"),
                        format!("{text:?} is not an address or a CIDR such as 101.226.103.0/25"),
                    )
                })
        })
        .collect()
}

fn validate_store(raw: &RawStore) -> Result<StoreConfig, ConfigError> {
    let claims = Duration::from_secs(raw.retention_secs.unwrap_or(DEFAULT_RETENTION.as_secs()));
    if claims < Duration::from_secs(60) {
        return Err(ConfigError::new(
            "store.retention_secs",
            "must be at least 60 (WeChat retries for about 20 s)",
        ));
    }
    let inbox = match raw
        .inbox_retention_secs
        .unwrap_or(DEFAULT_INBOX_RETENTION.as_secs())
    {
        0 => None,
        secs if secs < 60 => {
            return Err(ConfigError::new(
                "store.inbox_retention_secs",
                "must be 0 (keep forever) or at least 60",
            ))
        }
        secs => Some(Duration::from_secs(secs)),
    };
    if inbox.is_some_and(|inbox| claims > inbox) {
        return Err(ConfigError::new(
            "store.retention_secs",
            "must not exceed store.inbox_retention_secs (a live claim needs its inbox row)",
        ));
    }
    let retention = Retention { claims, inbox };
    match raw.backend.as_deref().unwrap_or("sqlite") {
        "memory" => Ok(StoreConfig::Memory { retention }),
        "sqlite" => {
            let synchronous_full = match raw.synchronous.as_deref() {
                None | Some("normal") => false,
                Some("full") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        "store.synchronous",
                        format!("{other:?} is not normal or full"),
                    ))
                }
            };
            Ok(StoreConfig::Sqlite {
                path: raw
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("wxgate.db")),
                retention,
                synchronous_full,
            })
        }
        "redis" => {
            let text = raw.url.as_deref().unwrap_or("redis://127.0.0.1:6379/0");
            // The error never repeats the URL: it may hold a password.
            let url =
                RedisUrl::parse(text).map_err(|reason| ConfigError::new("store.url", reason))?;
            let key_prefix = raw
                .key_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
            if key_prefix.is_empty() || key_prefix.len() > 64 {
                return Err(ConfigError::new(
                    "store.key_prefix",
                    "must be 1-64 characters",
                ));
            }
            Ok(StoreConfig::Redis {
                url,
                key_prefix,
                retention,
            })
        }
        other => Err(ConfigError::new(
            "store.backend",
            format!("{other:?} is not memory, sqlite or redis"),
        )),
    }
}

fn validate_account(index: usize, raw: &RawAccount) -> Result<AccountConfig, ConfigError> {
    let field = |name: &str| format!("accounts[{index}].{name}");
    let name = raw
        .name
        .clone()
        .ok_or_else(|| ConfigError::new(field("name"), "is required"))?;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(ConfigError::new(
            field("name"),
            "must be 1-64 ASCII letters, digits, '-' or '_' (it is a URL path segment)",
        ));
    }
    let app_id = raw
        .app_id
        .as_deref()
        .ok_or_else(|| ConfigError::new(field("app_id"), "is required"))
        .and_then(|id| {
            AppId::new(id).map_err(|e| ConfigError::new(field("app_id"), e.to_string()))
        })?;
    let token = raw
        .token
        .as_deref()
        .ok_or_else(|| ConfigError::new(field("token"), "is required"))
        .and_then(|t| Token::new(t).map_err(|e| ConfigError::new(field("token"), e.to_string())))?;
    let parse_key = |key: &Option<String>, name: &str| -> Result<Option<AesKey>, ConfigError> {
        key.as_deref()
            .map(|k| AesKey::parse(k).map_err(|e| ConfigError::new(field(name), e.to_string())))
            .transpose()
    };
    let aes_key = parse_key(&raw.encoding_aes_key, "encoding_aes_key")?;
    let previous_aes_key = parse_key(&raw.previous_encoding_aes_key, "previous_encoding_aes_key")?;
    let mode = raw.mode.unwrap_or(Mode::Safe);
    if mode != Mode::Plaintext && aes_key.is_none() {
        return Err(ConfigError::new(
            field("encoding_aes_key"),
            format!("is required in {} mode", mode.as_str()),
        ));
    }
    if previous_aes_key.is_some() && aes_key.is_none() {
        return Err(ConfigError::new(
            field("previous_encoding_aes_key"),
            "needs encoding_aes_key as well",
        ));
    }
    let budget = Duration::from_millis(raw.budget_ms.unwrap_or(DEFAULT_BUDGET.as_millis() as u64));
    if budget < Duration::from_millis(100) || budget > Duration::from_millis(4800) {
        return Err(ConfigError::new(
            field("budget_ms"),
            "must be between 100 and 4800 (WeChat gives up after 5000 ms)",
        ));
    }
    let policy = raw.policy.unwrap_or(Policy::Ack);
    let app_secret = match raw.app_secret.as_deref() {
        Some("") => return Err(ConfigError::new(field("app_secret"), "must not be empty")),
        Some(secret) => Some(Secret::new(secret)),
        None => None,
    };
    if policy == Policy::Push && app_secret.is_none() {
        return Err(ConfigError::new(
            field("app_secret"),
            "is required by policy = \"push\" (it obtains the access token of the customer-service API)",
        ));
    }
    let api_base = raw
        .api_base
        .as_deref()
        .unwrap_or(DEFAULT_API_BASE)
        .trim_end_matches('/')
        .to_owned();
    check_http_url(&api_base).map_err(|reason| ConfigError::new(field("api_base"), reason))?;
    let forward = raw
        .forward
        .as_ref()
        .map(|forward| validate_forward(&format!("accounts[{index}].forward"), forward))
        .transpose()?;
    let last_attempt = raw.ride_retries_last_attempt.unwrap_or(3);
    if !(2..=4).contains(&last_attempt) {
        return Err(ConfigError::new(
            field("ride_retries_last_attempt"),
            "must be 2, 3 or 4 (WeChat delivers a message at most 4 times)",
        ));
    }
    // A forwarded call may run for `forward.max_secs`; the handler must be allowed as long,
    // or its late answer would be cut off and lost.
    let forward_max = forward.as_ref().map_or(Duration::ZERO, |f| f.max);
    let handler_timeout = match raw.handler_timeout_secs {
        Some(secs) => Duration::from_secs(secs),
        None => Duration::from_secs(60).max(forward_max),
    };
    if handler_timeout < forward_max {
        return Err(ConfigError::new(
            field("handler_timeout_secs"),
            "must not be shorter than forward.max_secs",
        ));
    }
    if handler_timeout < budget {
        return Err(ConfigError::new(
            field("handler_timeout_secs"),
            "must not be shorter than budget_ms",
        ));
    }
    let still_working_text = raw
        .still_working_text
        .clone()
        .unwrap_or_else(|| DEFAULT_STILL_WORKING_TEXT.to_owned());
    let rules = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| validate_rule(&format!("accounts[{index}].rules[{i}]"), rule))
        .collect::<Result<Vec<_>, _>>()?;
    if forward.is_none() {
        if let Some(i) = rules.iter().position(|r| r.action == RuleAction::Forward) {
            return Err(ConfigError::new(
                format!("accounts[{index}].rules[{i}].forward"),
                "needs an [accounts.forward] upstream",
            ));
        }
    }
    let allow_ips = parse_networks(&field("allow_ips"), raw.allow_ips.as_deref().unwrap_or(&[]))?;
    let max_concurrent_handlers = raw
        .max_concurrent_handlers
        .unwrap_or(DEFAULT_MAX_CONCURRENT_HANDLERS);
    if !(1..=100_000).contains(&max_concurrent_handlers) {
        return Err(ConfigError::new(
            field("max_concurrent_handlers"),
            "must be between 1 and 100000",
        ));
    }
    Ok(AccountConfig {
        name,
        app_id,
        token,
        aes_key,
        previous_aes_key,
        mode,
        timestamp_window: match raw
            .timestamp_window_secs
            .unwrap_or(DEFAULT_TIMESTAMP_WINDOW_SECS)
        {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        },
        budget,
        policy,
        still_working_text,
        last_attempt,
        handler_timeout,
        rules,
        app_secret,
        api_base,
        token_endpoint: raw.token_endpoint.unwrap_or(TokenEndpoint::StableToken),
        forward,
        allow_ips,
        max_concurrent_handlers,
    })
}

fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http or https URL"));
    }
    Ok(())
}

fn validate_forward(path: &str, raw: &RawForward) -> Result<ForwardConfig, ConfigError> {
    let field = |name: &str| format!("{path}.{name}");
    let url = raw
        .url
        .clone()
        .ok_or_else(|| ConfigError::new(field("url"), "is required"))?;
    check_http_url(&url).map_err(|reason| ConfigError::new(field("url"), reason))?;
    let secret = match raw.secret.as_deref() {
        Some("") => return Err(ConfigError::new(field("secret"), "must not be empty")),
        Some(secret) => Some(Secret::new(secret)),
        None => None,
    };
    let max_secs = raw.max_secs.unwrap_or(DEFAULT_FORWARD_MAX_SECS);
    if !(1..=3600).contains(&max_secs) {
        return Err(ConfigError::new(
            field("max_secs"),
            "must be between 1 and 3600",
        ));
    }
    let max_concurrency = raw
        .max_concurrency
        .unwrap_or(DEFAULT_FORWARD_MAX_CONCURRENCY);
    if !(1..=10_000).contains(&max_concurrency) {
        return Err(ConfigError::new(
            field("max_concurrency"),
            "must be between 1 and 10000",
        ));
    }
    Ok(ForwardConfig {
        url,
        secret,
        max: Duration::from_secs(max_secs),
        max_concurrency,
    })
}

fn validate_rule(path: &str, raw: &RawRule) -> Result<RuleConfig, ConfigError> {
    let field = |name: &str| format!("{path}.{name}");
    if let Some(kind) = &raw.kind {
        if kind != "any" && !MSG_TYPES.contains(&kind.as_str()) {
            return Err(ConfigError::new(
                field("kind"),
                format!("{kind:?} is not one of any, {}", MSG_TYPES.join(", ")),
            ));
        }
    }
    if raw.event.is_some() && raw.kind.as_deref().is_some_and(|k| k != "event") {
        return Err(ConfigError::new(
            field("event"),
            "needs kind = \"event\" (or no kind)",
        ));
    }
    let regex = raw
        .regex
        .as_deref()
        .map(|r| regex::Regex::new(r).map_err(|e| ConfigError::new(field("regex"), e.to_string())))
        .transpose()?;
    let actions =
        usize::from(raw.reply.is_some()) + usize::from(raw.echo) + usize::from(raw.forward);
    if actions > 1 {
        return Err(ConfigError::new(
            path,
            "has more than one of reply, echo and forward; choose one",
        ));
    }
    let action = match &raw.reply {
        None if raw.echo => RuleAction::Echo,
        None if raw.forward => RuleAction::Forward,
        None => {
            return Err(ConfigError::new(
                path,
                "needs a reply table, echo = true or forward = true",
            ));
        }
        Some(value) => {
            let reply: Reply = value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::new(field("reply"), e.to_string()))?;
            match reply {
                Reply::Success => RuleAction::Success,
                reply => RuleAction::Reply(reply),
            }
        }
    };
    Ok(RuleConfig {
        kind: raw.kind.clone().filter(|k| k != "any"),
        event: raw.event.clone(),
        keyword: raw.keyword.clone(),
        regex,
        from: raw.from.clone(),
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn account(extra: &str) -> String {
        format!(
            "[[accounts]]\nname = \"a\"\napp_id = \"wx1\"\ntoken = \"tok\"\nencoding_aes_key = \"{KEY}\"\n{extra}\n"
        )
    }

    /// Validates `text` and returns the field the error names, or "ok".
    fn check(text: &str, env: &[(&str, &str)]) -> String {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Config::from_toml(text, &env) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.field,
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::from_toml(&account(""), &BTreeMap::new()).unwrap();
        let a = &config.accounts[0];
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.body_limit, DEFAULT_BODY_LIMIT);
        assert_eq!(a.mode, Mode::Safe);
        assert_eq!(a.policy, Policy::Ack);
        assert_eq!(a.budget, DEFAULT_BUDGET);
        assert_eq!(a.timestamp_window, Some(Duration::from_secs(300)));
        assert!(
            matches!(config.store, StoreConfig::Sqlite { ref path, .. } if path == Path::new("wxgate.db"))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(String, &str)] = &[
            (
                account("mode = \"plaintext\"\npolicy = \"push\""),
                "accounts[0].app_secret",
            ),
            (
                account("policy = \"push\"\napp_secret = \"s\"\napi_base = \"ftp://x\""),
                "accounts[0].api_base",
            ),
            (
                account("token_endpoint = \"nope\""),
                "config",
            ),
            (account("[accounts.forward]\nsecret = \"s\""), "accounts[0].forward.url"),
            (
                account("[[accounts.rules]]\nkind = \"voice\"\nforward = true"),
                "accounts[0].rules[0].forward",
            ),
            (
                account("[[accounts.rules]]\nforward = true\necho = true"),
                "accounts[0].rules[0]",
            ),
            (
                account("[accounts.forward]\nurl = \"not a url\""),
                "accounts[0].forward.url",
            ),
            (
                account("[accounts.forward]\nurl = \"http://h/\"\nmax_secs = 0"),
                "accounts[0].forward.max_secs",
            ),
            (
                account("[accounts.forward]\nurl = \"http://h/\"\nmax_concurrency = 0"),
                "accounts[0].forward.max_concurrency",
            ),
            (
                account("handler_timeout_secs = 10\n[accounts.forward]\nurl = \"http://h/\"\nmax_secs = 20"),
                "accounts[0].handler_timeout_secs",
            ),
            (account("budget_ms = 5000"), "accounts[0].budget_ms"),
            (account("bogus = 1"), "config"),
            (
                "[[accounts]]\nname = \"a\"\ntoken = \"t\"".to_owned(),
                "accounts[0].app_id",
            ),
            (
                "[[accounts]]\nname = \"a\"\napp_id = \"wx\"\ntoken = \"t\"\nmode = \"safe\""
                    .to_owned(),
                "accounts[0].encoding_aes_key",
            ),
            (
                account("").replace(KEY, "short"),
                "accounts[0].encoding_aes_key",
            ),
            (
                account("").replace("name = \"a\"", "name = \"a/b\""),
                "accounts[0].name",
            ),
            (
                format!("{}{}", account(""), account("")),
                "accounts[1].name",
            ),
            (
                account("[[accounts.rules]]\nkeyword = \"x\""),
                "accounts[0].rules[0]",
            ),
            (
                account("[[accounts.rules]]\nregex = \"(\"\necho = true"),
                "accounts[0].rules[0].regex",
            ),
            (
                account("[[accounts.rules]]\nreply = { type = \"nope\" }"),
                "accounts[0].rules[0].reply",
            ),
            (format!("listen = \"nowhere\"\n{}", account("")), "listen"),
            (
                format!("[store]\nbackend = \"pg\"\n{}", account("")),
                "store.backend",
            ),
            (String::new(), "accounts"),
            (
                format!("[store]\ninbox_retention_secs = 59\n{}", account("")),
                "store.inbox_retention_secs",
            ),
            (
                format!(
                    "[store]\nretention_secs = 700\ninbox_retention_secs = 600\n{}",
                    account("")
                ),
                "store.retention_secs",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(check(text, &[]), *field, "{text}");
        }
    }

    #[test]
    fn inbox_retention_defaults_to_a_week_and_zero_keeps_forever() {
        let retention = |store: &str| {
            let config =
                Config::from_toml(&format!("{store}\n{}", account("")), &BTreeMap::new()).unwrap();
            match config.store {
                StoreConfig::Sqlite { retention, .. }
                | StoreConfig::Memory { retention }
                | StoreConfig::Redis { retention, .. } => retention,
            }
        };
        assert_eq!(
            retention(""),
            Retention {
                claims: Duration::from_secs(600),
                inbox: Some(Duration::from_secs(604_800)),
            }
        );
        assert_eq!(retention("[store]\ninbox_retention_secs = 0").inbox, None);
        assert_eq!(
            retention("[store]\nretention_secs = 60\ninbox_retention_secs = 60"),
            Retention {
                claims: Duration::from_secs(60),
                inbox: Some(Duration::from_secs(60)),
            }
        );
    }

    #[test]
    fn push_and_forward_settings_are_validated_and_secrets_redacted() {
        let text = account(
            "policy = \"push\"\napp_secret = \"appsecret-value\"\napi_base = \"http://127.0.0.1:9/\"\ntoken_endpoint = \"token\"\n[accounts.forward]\nurl = \"http://127.0.0.1:9000/wechat\"\nsecret = \"hmac-value\"\nmax_secs = 90",
        );
        let config = Config::from_toml(&text, &BTreeMap::new()).unwrap();
        let a = &config.accounts[0];
        assert_eq!(a.policy, Policy::Push);
        assert_eq!(a.api_base, "http://127.0.0.1:9");
        assert_eq!(a.token_endpoint, TokenEndpoint::Token);
        let forward = a.forward.as_ref().unwrap();
        assert_eq!(forward.max, Duration::from_secs(90));
        assert_eq!(forward.max_concurrency, DEFAULT_FORWARD_MAX_CONCURRENCY);
        // The handler may run as long as the upstream call.
        assert_eq!(a.handler_timeout, Duration::from_secs(90));
        let shown = format!("{config:?}");
        assert!(!shown.contains("appsecret-value") && !shown.contains("hmac-value"));
        // Defaults.
        let plain = Config::from_toml(&account(""), &BTreeMap::new()).unwrap();
        assert_eq!(plain.accounts[0].api_base, DEFAULT_API_BASE);
        assert_eq!(plain.accounts[0].token_endpoint, TokenEndpoint::StableToken);
        // The AppSecret may come from the environment.
        let env = [("WXGATE_ACCOUNT_A_APP_SECRET", "from-env")];
        assert_eq!(check(&account("policy = \"push\""), &env), "ok");
    }

    #[test]
    fn the_console_is_off_by_default_and_needs_a_token() {
        let off = Config::from_toml(&account(""), &BTreeMap::new()).unwrap();
        assert!(off.console.is_none());
        let enabled = |extra: &str| format!("[console]\nenabled = true\n{extra}\n{}", account(""));
        assert_eq!(check(&enabled(""), &[]), "console.token");
        assert_eq!(check(&enabled("token = \"short\""), &[]), "console.token");
        assert_eq!(
            check(
                &enabled("token = \"0123456789abcdef\"\nlisten = \"nope\""),
                &[]
            ),
            "console.listen"
        );
        assert_eq!(check(&enabled("bogus = 1"), &[]), "config");
        assert_eq!(
            check(
                &enabled("token = \"0123456789abcdef\"\nlisten = \"127.0.0.1:8080\""),
                &[]
            ),
            "console.listen"
        );
        let env = [("WXGATE_CONSOLE_TOKEN", "from-the-environment")];
        let config = Config::from_toml(
            &enabled("token = \"0123456789abcdef\"\nlisten = \"127.0.0.1:8081\""),
            &env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        let console = config.console.unwrap();
        assert_eq!(console.token.expose(), "from-the-environment");
        assert_eq!(console.listen.unwrap().to_string(), "127.0.0.1:8081");
        assert_eq!(format!("{:?}", console.token), "Secret(<redacted>)");
    }

    #[test]
    fn environment_overrides_secrets() {
        let text = "[[accounts]]\nname = \"my-oa\"\nmode = \"plaintext\"\n";
        assert_eq!(check(text, &[]), "accounts[0].app_id");
        let env = [
            ("WXGATE_ACCOUNT_MY_OA_APP_ID", "wx9"),
            ("WXGATE_ACCOUNT_MY_OA_TOKEN", "secret"),
            ("WXGATE_LISTEN", "0.0.0.0:9000"),
        ];
        assert_eq!(check(text, &env), "ok");
        let map = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_toml(text, &map).unwrap();
        assert_eq!(config.accounts[0].token.expose(), "secret");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(check(text, &[("WXGATE_TYPO", "1")]), "WXGATE_TYPO");
    }

    #[test]
    fn the_example_config_and_the_demo_are_valid() {
        let example = include_str!("../../../wxgate.example.toml");
        let config = Config::from_toml(example, &BTreeMap::new()).unwrap();
        assert_eq!(config.accounts[0].rules.len(), 4);
        // The commented push and forward keys are valid once uncommented.
        let mut uncommented = example.to_owned();
        for key in [
            "[accounts.forward]",
            "url = ",
            "secret = ",
            "max_secs = ",
            "max_concurrency = ",
            "app_secret = ",
            "api_base = ",
            "token_endpoint = ",
        ] {
            uncommented = uncommented.replace(&format!("# {key}"), key);
        }
        let uncommented = uncommented.replace("policy = \"ack\"", "policy = \"push\"");
        let config = Config::from_toml(&uncommented, &BTreeMap::new()).unwrap();
        assert_eq!(config.accounts[0].policy, Policy::Push);
        assert!(config.accounts[0].forward.is_some());
        let demo = Config::demo("token", KEY, "wx1").unwrap();
        assert_eq!(demo.accounts.len(), 2);
    }

    #[test]
    fn operations_settings_have_documented_defaults_and_named_errors() {
        let config = Config::from_toml(&account(""), &BTreeMap::new()).unwrap();
        assert!(config.log_access);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.accounts[0].max_concurrent_handlers, 256);
        assert!(config.accounts[0].allow_ips.is_empty() && config.trusted_proxies.is_empty());
        // The global allow list applies to accounts without their own.
        let text = format!(
            "allow_ips = [\"101.226.103.0/25\", \"10.0.0.1\"]\n{}{}",
            account(""),
            account("allow_ips = [\"192.0.2.0/24\"]").replace("name = \"a\"", "name = \"b\"")
        );
        let config = Config::from_toml(&text, &BTreeMap::new()).unwrap();
        assert_eq!(config.accounts[0].allow_ips.len(), 2);
        assert_eq!(config.accounts[0].allow_ips[1].to_string(), "10.0.0.1/32");
        assert_eq!(config.accounts[1].allow_ips.len(), 1);
        let cases: &[(String, &str)] = &[
            (
                format!("[limits]\nheader_read_timeout_ms = 1\n{}", account("")),
                "limits.header_read_timeout_ms",
            ),
            (
                format!("[limits]\nidle_timeout_ms = 0\n{}", account("")),
                "limits.idle_timeout_ms",
            ),
            (
                format!("[limits]\nmax_connections = 3\n{}", account("")),
                "limits.max_connections",
            ),
            (format!("[log]\naccess = 1\n{}", account("")), "config"),
            (
                format!("allow_ips = [\"nope\"]\n{}", account("")),
                "allow_ips[0]",
            ),
            (
                format!("trusted_proxies = [\"1.2.3.4/99\"]\n{}", account("")),
                "trusted_proxies[0]",
            ),
            (account("allow_ips = [\"x\"]"), "accounts[0].allow_ips[0]"),
            (
                account("max_concurrent_handlers = 0"),
                "accounts[0].max_concurrent_handlers",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(check(text, &[]), *field, "{text}");
        }
        let missing = Config::load(Path::new("/nonexistent/wxgate.toml"), &BTreeMap::new());
        let error = missing.unwrap_err();
        assert_eq!(error.field, "config");
        assert!(error
            .to_string()
            .starts_with("config: cannot read /nonexistent/wxgate.toml"));
    }
}
