//! The utility subcommands of the `wxgate` binary: `keygen`, `decrypt` and `inbox`.
//!
//! They are the everyday debugging tools around a webhook — fresh secrets for the console,
//! a captured ciphertext opened with the official error code when it does not open, and a
//! look at what the gateway recorded — kept here so that `main.rs` stays a dispatcher. The
//! decryption goes through `wechat-proto` only; the inbox is read through the [`Store`]
//! trait, so it shows exactly what the gateway itself would answer from. Nothing here reads
//! the environment: the binary resolves the config and passes it in.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wechat_proto::{
    AesKey, AppId, EncryptedReply, ErrorCode, Inbound, MessageCipher, Reply, RequestEnvelope,
    Signature, Token,
};

use crate::config::StoreConfig;
use crate::sim::report::truncate;
use crate::sim::wechat::describe_reply;
use crate::store::{AnswerKind, Completion, Inbox, InboxEntry, InboxQuery, StoreError};

/// A failure of a tool itself (as opposed to a verdict such as "does not decrypt").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments do not make sense.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or the output written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ToolError {
    let context = context.into();
    move |source| ToolError::Io { context, source }
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), ToolError> {
    out.write_all(text.as_bytes())
        .map_err(io("writing the output"))
}

fn to_json(value: &impl Serialize, pretty: bool) -> Result<String, ToolError> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map_err(|e| ToolError::Usage(format!("cannot render JSON: {e}")))
}

// ---------------------------------------------------------------------------------------
// keygen

/// A fresh Token and EncodingAESKey, as pasted into WeChat's console.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Secrets {
    /// 32 random letters and digits (the console accepts 3 to 32).
    pub token: String,
    /// 43 characters encoding 32 random bytes.
    pub encoding_aes_key: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

/// Generates fresh secrets from a cryptographically secure random source.
///
/// The key is 43 random letters and digits, exactly as WeChat's console generates it (the
/// console accepts only `A-Z`, `a-z` and `0-9`, so a key written by a base64 encoder,
/// with `+` or `/`, could not be entered there).
pub fn keygen() -> Secrets {
    use rand::distr::{Alphanumeric, SampleString};
    let mut rng = rand::rng();
    let token = Alphanumeric.sample_string(&mut rng, 32);
    let encoding_aes_key = Alphanumeric.sample_string(&mut rng, 43);
    Secrets {
        token,
        encoding_aes_key,
    }
}

impl Secrets {
    /// The TOML lines for a config's account.
    pub fn to_toml(&self) -> String {
        format!(
            "token = \"{}\"\nencoding_aes_key = \"{}\"\n",
            self.token, self.encoding_aes_key
        )
    }
}

// ---------------------------------------------------------------------------------------
// decrypt

/// `wxgate decrypt`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// The EncodingAESKey (43 characters).
    #[arg(long)]
    pub aes_key: String,
    /// The AppID expected inside the ciphertext [without it, the AppID found is shown
    /// unchecked].
    #[arg(long)]
    pub app_id: Option<String>,
    /// The base64 `Encrypt` text.
    #[arg(long, conflicts_with = "body", required_unless_present = "body")]
    pub encrypt: Option<String>,
    /// A captured body: a safe/compatible-mode request or an encrypted reply ("-" reads
    /// standard input).
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// The Token, to check the signature too: a reply's `MsgSignature`, or with `--query`
    /// a request's `msg_signature`.
    #[arg(long)]
    pub token: Option<String>,
    /// The captured query string of the request (`timestamp`, `nonce`, `msg_signature`).
    #[arg(long, requires = "token")]
    pub query: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// An official WXBizMsgCrypt error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfficialError {
    /// The code, e.g. -40005.
    pub code: i32,
    /// The official name, e.g. `ValidateAppid_Error`.
    pub name: &'static str,
    /// What went wrong.
    pub message: String,
}

impl OfficialError {
    fn new(code: ErrorCode, message: impl std::fmt::Display) -> OfficialError {
        OfficialError {
            code: code.as_i32(),
            name: code.name(),
            message: message.to_string(),
        }
    }
}

/// The result of `wxgate decrypt`.
#[derive(Debug, Clone, Serialize)]
pub struct DecryptReport {
    /// Whether everything checked out.
    pub ok: bool,
    /// What was decrypted: `encrypt`, `request` or `reply`.
    pub input: &'static str,
    /// The signature check, when a token was given: `ok` or the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The AppID found inside the ciphertext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The decrypted XML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    /// The decrypted message or reply in its JSON form, when it parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parsed: Option<serde_json::Value>,
    /// The official error, when something failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OfficialError>,
}

/// The query parameters of a captured request.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decrypts a captured `Encrypt`, request body or encrypted reply.
pub fn decrypt(args: &DecryptArgs) -> Result<DecryptReport, ToolError> {
    let mut report = DecryptReport {
        ok: false,
        input: "encrypt",
        signature: None,
        app_id: None,
        plaintext: None,
        parsed: None,
        error: None,
    };
    let key = match AesKey::parse(&args.aes_key) {
        Ok(key) => key,
        Err(e) => {
            report.error = Some(OfficialError::new(e.code(), format!("--aes-key: {e}")));
            return Ok(report);
        }
    };
    let token = args
        .token
        .as_deref()
        .map(|t| Token::new(t).map_err(|e| ToolError::Usage(format!("--token: {e}"))))
        .transpose()?;
    let expected_app_id = args
        .app_id
        .as_deref()
        .map(|id| AppId::new(id).map_err(|e| ToolError::Usage(format!("--app-id: {e}"))))
        .transpose()?;
    // Which signature to check: (timestamp, nonce, presented signature).
    let mut signed: Option<(String, String, String)> = None;
    let encrypt = match (&args.encrypt, &args.body) {
        (Some(encrypt), None) => encrypt.trim().to_owned(),
        (None, Some(path)) => {
            let body = if path.as_os_str() == "-" {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                    .map_err(io("reading standard input"))?;
                body
            } else {
                std::fs::read(path).map_err(io(format!("reading {}", path.display())))?
            };
            if let Ok(reply) = EncryptedReply::parse(&body) {
                report.input = "reply";
                signed = Some((reply.timestamp, reply.nonce, reply.msg_signature));
                reply.encrypt
            } else {
                match RequestEnvelope::parse(&body) {
                    Ok(envelope) => {
                        report.input = "request";
                        envelope.encrypt
                    }
                    Err(e) => {
                        report.input = "request";
                        report.error = Some(OfficialError::new(e.code(), e));
                        return Ok(report);
                    }
                }
            }
        }
        _ => {
            return Err(ToolError::Usage(
                "give exactly one of --encrypt B64 and --body FILE".to_owned(),
            ))
        }
    };
    if let Some(query) = &args.query {
        let get = |name: &str| {
            query_param(query, name)
                .ok_or_else(|| ToolError::Usage(format!("--query has no {name}")))
        };
        signed = Some((get("timestamp")?, get("nonce")?, get("msg_signature")?));
    }
    if let Some(token) = &token {
        match &signed {
            Some((timestamp, nonce, presented)) => {
                let expected = Signature::message(token, timestamp, nonce, &encrypt);
                if let Err(e) = expected.verify(presented) {
                    report.signature = Some(format!("mismatch: {e}"));
                    report.error = Some(OfficialError::new(
                        e.code(),
                        format!(
                            "msg_signature does not match (expected {})",
                            expected.to_hex()
                        ),
                    ));
                    return Ok(report);
                }
                report.signature = Some("ok".to_owned());
            }
            None => {
                report.signature =
                    Some("not checked: give --query with the request's query string".to_owned());
            }
        }
    }
    let placeholder = AppId::new("-").map_err(|e| ToolError::Usage(e.to_string()))?;
    let cipher = MessageCipher::new(&key, expected_app_id.clone().unwrap_or(placeholder));
    let opened = match cipher.open(&encrypt) {
        Ok(opened) => opened,
        Err(e) => {
            report.error = Some(OfficialError::new(e.code(), e));
            return Ok(report);
        }
    };
    let found = String::from_utf8_lossy(&opened.receive_id).into_owned();
    report.app_id = Some(found.clone());
    report.plaintext = Some(String::from_utf8_lossy(&opened.message).into_owned());
    report.parsed = parse_plaintext(&opened.message, report.input);
    if let Some(expected) = &expected_app_id {
        if opened.receive_id != expected.as_str().as_bytes() {
            report.error = Some(OfficialError::new(
                ErrorCode::ValidateAppid,
                format!(
                    "the ciphertext is for AppID {found:?}, not {:?}",
                    expected.as_str()
                ),
            ));
            return Ok(report);
        }
    }
    report.ok = true;
    Ok(report)
}

/// The JSON form of a decrypted message (or reply).
fn parse_plaintext(xml: &[u8], input: &str) -> Option<serde_json::Value> {
    let message = || {
        Inbound::parse(xml)
            .ok()
            .and_then(|m| serde_json::to_value(m).ok())
    };
    let reply = || {
        Reply::parse(xml)
            .ok()
            .and_then(|(_, r)| serde_json::to_value(r).ok())
    };
    match input {
        "reply" => reply(),
        "request" => message(),
        _ => message().or_else(reply),
    }
}

impl DecryptReport {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(signature) = &self.signature {
            out.push_str(&format!("signature: {signature}\n"));
        }
        if let Some(app_id) = &self.app_id {
            out.push_str(&format!("AppID inside: {app_id}\n"));
        }
        if let Some(plaintext) = &self.plaintext {
            out.push_str(&format!("decrypted {}:\n{plaintext}\n", self.input));
        }
        if let Some(parsed) = &self.parsed {
            out.push_str(&format!("as JSON: {parsed}\n"));
        }
        match &self.error {
            Some(e) => out.push_str(&format!("error {} ({}): {}\n", e.code, e.name, e.message)),
            None => out.push_str("OK\n"),
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// inbox

/// `wxgate inbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct InboxArgs {
    /// The config file whose store to read [default: $WXGATE_CONFIG, else the demo's
    /// ./wxgate.db].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only this account.
    #[arg(long)]
    pub account: Option<String>,
    /// Only messages received since: a duration ago (30s, 15m, 2h, 7d), Unix seconds, or a
    /// UTC time (2024-05-17T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many messages (the newest).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Keep watching: print new messages and changes (attempts, outcome) every second.
    #[arg(long)]
    pub follow: bool,
    /// Print JSON (one object per line with --follow).
    #[arg(long)]
    pub json: bool,
}

/// Opens the inbox read-only, beside a gateway that may be serving from it, refusing what
/// cannot be read from outside the serving process.
pub async fn open_inbox_store(config: &StoreConfig) -> Result<Arc<dyn Inbox>, ToolError> {
    match config {
        StoreConfig::Sqlite { path, .. } if !path.exists() => Err(ToolError::Usage(format!(
            "no inbox at {} (start `wxgate serve` first, or pass --config)",
            path.display()
        ))),
        _ => crate::store::open_read_only(config)
            .await
            .map_err(|e| ToolError::Usage(e.to_string())),
    }
}

/// Parses `--since` against `now_ms`: `30s`/`15m`/`2h`/`7d` ago, Unix seconds (or
/// milliseconds), or `YYYY-MM-DD[THH:MM[:SS]][Z]` in UTC.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, ToolError> {
    let text = text.trim();
    let bad = || {
        ToolError::Usage(format!(
            "--since {text:?}: give a duration ago (30s, 15m, 2h, 7d), Unix seconds, or a UTC time like 2024-05-17T10:00:00Z"
        ))
    };
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c)) {
        let number: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        let ms = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        return number
            .checked_mul(ms)
            .filter(|&ago| ago >= 0)
            .map(|ago| now_ms - ago)
            .ok_or_else(bad);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        let value: i64 = text.parse().map_err(|_| bad())?;
        // Unix seconds have 10 digits until 2286; more digits are milliseconds.
        return Ok(if value > 99_999_999_999 {
            value
        } else {
            value.saturating_mul(1000)
        });
    }
    parse_utc(text).ok_or_else(bad)
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS]][Z]` in UTC → Unix milliseconds.
fn parse_utc(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, time),
        None => (text, "00:00:00"),
    };
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let mut time_parts = time.split(':').map(|p| p.parse::<i64>().ok());
    let hour = time_parts.next()??;
    let minute = time_parts.next()??;
    let second = time_parts.next().unwrap_or(Some(0))?;
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..=60).contains(&second)
        && (1970..=9999).contains(&year);
    if !valid || date_parts.next().is_some() || time_parts.next().is_some() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as `2024-05-17 10:55:29Z`.
pub fn format_utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// One inbox entry on one line.
pub fn entry_line(entry: &InboxEntry) -> String {
    let message: serde_json::Value =
        serde_json::from_str(&entry.inbound_json).unwrap_or(serde_json::Value::Null);
    let field = |name: &str| message.get(name).and_then(|v| v.as_str());
    let said = field("content")
        .or_else(|| field("recognition"))
        .or_else(|| field("event_key"))
        .or_else(|| field("url"))
        .or_else(|| field("label"))
        .map(|text| format!(" «{}»", truncate(text, 40)))
        .unwrap_or_default();
    let answer = match entry.last_answer {
        Some((kind, attempt)) => format!("{} on attempt {attempt}", kind.as_str()),
        None => "no answer yet".to_owned(),
    };
    let outcome = match &entry.completion {
        None => "handler still running".to_owned(),
        Some(completion) => match (&completion.reply, &completion.error) {
            (_, Some(error)) => format!("handler failed: {}", truncate(error, 60)),
            (Some(reply), None) => format!("reply: {}", truncate(&describe_reply(reply), 60)),
            (None, None) => "no reply (success)".to_owned(),
        },
    };
    format!(
        "{}  {}  {}{}  from {}  ×{}  {}; {}{}",
        format_utc(entry.received_at_ms),
        entry.account,
        entry.kind,
        said,
        entry.from_user_name,
        entry.attempts,
        answer,
        outcome,
        if entry.deferred {
            " (kept for the follower's next message)"
        } else {
            ""
        }
    )
}

/// What changes about an entry after it was first listed.
fn fingerprint(entry: &InboxEntry) -> String {
    format!(
        "{}|{:?}|{:?}|{}",
        entry.attempts, entry.last_answer, entry.completion, entry.deferred
    )
}

/// How often `--follow` polls the store.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Lists the inbox (oldest of the selection first, so the newest ends up at the bottom),
/// then with `follow` keeps printing new and changed entries until `stop` resolves.
pub async fn inbox(
    store: &dyn Inbox,
    args: &InboxArgs,
    now_ms: i64,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<(), ToolError> {
    let since_ms = args
        .since
        .as_deref()
        .map(|since| parse_since(since, now_ms))
        .transpose()?;
    let query = InboxQuery {
        account: args.account.clone(),
        since_ms,
        limit: args.limit.max(1),
        ..InboxQuery::default()
    };
    let mut entries = store.list(&query).await?;
    entries.reverse();
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    if args.json && !args.follow {
        let entries: Vec<EntryJson<'_>> = entries.iter().map(EntryJson::of).collect();
        write_out(out, &format!("{}\n", to_json(&entries, true)?))?;
    } else {
        for entry in &entries {
            print_entry(out, entry, args.json)?;
        }
    }
    if !args.follow {
        if entries.is_empty() && !args.json {
            write_out(out, "(no messages)\n")?;
        }
        return Ok(());
    }
    // Follow: changes happen within WeChat's retry window and the handler timeout, so
    // re-reading the last ten minutes (or from --since) catches every update. What that
    // window holds now is already history: it is remembered without being printed, so
    // that only what arrives or changes from here on is (--limit bounded what was shown).
    let window = |now_ms: i64| InboxQuery {
        account: args.account.clone(),
        since_ms: Some(since_ms.unwrap_or(i64::MIN).max(now_ms - 600_000)),
        limit: 10_000,
        ..InboxQuery::default()
    };
    for entry in entries
        .into_iter()
        .chain(store.list(&window(now_ms)).await?)
    {
        seen.insert(
            (entry.account.clone(), entry.dedup_key.clone()),
            fingerprint(&entry),
        );
    }
    tokio::pin!(stop);
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(FOLLOW_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = ticker.tick() => {}
        }
        let now = now_ms.saturating_add(i64::try_from(started.elapsed().as_millis()).unwrap_or(0));
        let mut fresh = store.list(&window(now)).await?;
        fresh.reverse();
        for entry in fresh {
            let key = (entry.account.clone(), entry.dedup_key.clone());
            let print = fingerprint(&entry);
            if seen.get(&key) != Some(&print) {
                print_entry(out, &entry, args.json)?;
                seen.insert(key, print);
            }
        }
        out.flush().map_err(io("writing the output"))?;
    }
}

/// An inbox entry as `--json` prints it: the message as a JSON object, not as a string.
#[derive(Serialize)]
struct EntryJson<'a> {
    account: &'a str,
    dedup_key: &'a str,
    from_user_name: &'a str,
    kind: &'a str,
    /// The message in its documented JSON form (`null` if the stored form is unreadable).
    message: serde_json::Value,
    received_at_ms: i64,
    attempts: u32,
    completion: &'a Option<Completion>,
    last_answer: &'a Option<(AnswerKind, u32)>,
    deferred: bool,
}

impl<'a> EntryJson<'a> {
    fn of(entry: &'a InboxEntry) -> EntryJson<'a> {
        EntryJson {
            account: &entry.account,
            dedup_key: &entry.dedup_key,
            from_user_name: &entry.from_user_name,
            kind: &entry.kind,
            message: serde_json::from_str(&entry.inbound_json).unwrap_or_default(),
            received_at_ms: entry.received_at_ms,
            attempts: entry.attempts,
            completion: &entry.completion,
            last_answer: &entry.last_answer,
            deferred: entry.deferred,
        }
    }
}

fn print_entry(out: &mut dyn Write, entry: &InboxEntry, json: bool) -> Result<(), ToolError> {
    let line = if json {
        to_json(&EntryJson::of(entry), false)?
    } else {
        entry_line(entry)
    };
    write_out(out, &format!("{line}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(1_715_943_329_000), "2024-05-17 10:55:29Z");
        assert_eq!(parse_utc("2024-05-17T10:55:29Z"), Some(1_715_943_329_000));
        assert_eq!(parse_utc("2024-05-17 10:55"), Some(1_715_943_300_000));
        assert_eq!(parse_utc("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_utc("2024-13-01"), None);
        assert_eq!(parse_utc("yesterday"), None);
        for days in [-1, 0, 59, 60, 365, 10_957, 19_860, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn since_accepts_durations_epochs_and_dates() {
        let now = 1_715_943_329_000;
        assert_eq!(parse_since("30s", now).unwrap(), now - 30_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_since("1715943329", now).unwrap(), now);
        assert_eq!(parse_since("1715943329000", now).unwrap(), now);
        assert_eq!(parse_since("2024-05-17T10:55:29Z", now).unwrap(), now);
        assert!(parse_since("soon", now).is_err());
        assert!(parse_since("-5m", now).is_err());
        assert!(parse_since("", now).is_err());
        assert!(parse_since("99999999999999999999d", now).is_err());
    }

    #[test]
    fn query_parameters_are_decoded() {
        let query = "signature=ab&timestamp=17&nonce=n%20x&msg_signature=cd%";
        assert_eq!(query_param(query, "nonce").as_deref(), Some("n x"));
        assert_eq!(query_param(query, "msg_signature").as_deref(), Some("cd%"));
        assert_eq!(
            query_param("?timestamp=1", "timestamp").as_deref(),
            Some("1")
        );
        assert_eq!(query_param(query, "echostr"), None);
    }

    #[test]
    fn keygen_makes_valid_secrets() {
        let secrets = keygen();
        assert_eq!(secrets.token.len(), 32);
        assert!(AesKey::parse(&secrets.encoding_aes_key).is_ok());
        assert!(secrets
            .encoding_aes_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(keygen(), secrets);
        assert!(!format!("{secrets:?}").contains(&secrets.token));
    }
}
