//! The `wxgate sim …` command line: arguments, and running each subcommand to a report.
//!
//! The arguments are defined here rather than in `main.rs` so that the binary stays a thin
//! dispatcher and the translation from flags to requests is tested with the rest of the
//! simulator. Nothing here reads the environment. [`run`] writes the report (text, or JSON
//! with `--json`) and returns whether the verdict is a success, which the binary turns
//! into the exit status.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use wechat_proto::{AesKey, AppId, Inbound, MessageCipher, Token};

use super::load::{LoadMix, LoadOptions, LoadTarget, RequestPool, TargetError};
use super::messages::{inbound, kind_label, HeaderArgs, KindArgs};
use super::send::{with_query, RequestView, RetryPolicy, SendReport, Transport};
use super::storm::{StormOptions, StormReport};
use super::wechat::WeChatSide;
use crate::config::Mode;

/// `wxgate sim`: play WeChat's server against any webhook.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Send the URL-verification GET and check that the echo matches.
    Verify(VerifyArgs),
    /// Send one message or event as WeChat would, with its retries, and say what the
    /// follower sees.
    Send(SendArgs),
    /// Send many distinct messages at once (some twice), each with WeChat's retries.
    Storm(StormArgs),
    /// Measure a webhook under load with distinct, correctly signed and encrypted messages.
    Load(LoadArgs),
}

/// The encryption mode, as chosen in WeChat's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// 明文模式: bodies and replies in clear.
    Plaintext,
    /// 兼容模式: clear fields plus `Encrypt`.
    Compatible,
    /// 安全模式: only `Encrypt`; replies must be encrypted.
    Safe,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Plaintext => Mode::Plaintext,
            ModeArg::Compatible => Mode::Compatible,
            ModeArg::Safe => Mode::Safe,
        }
    }
}

/// The webhook and the account as WeChat knows it.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountArgs {
    /// The webhook URL, e.g. http://127.0.0.1:8080/wx/demo (required).
    // Global (and so not `required` for clap, which forbids both): `sim send text hi --url …`
    // is the order people type. Emptiness is checked in `side()`. The id differs from the
    // `url` of the link and view kinds: clap merges global arguments by id.
    #[arg(
        id = "webhook_url",
        long = "url",
        global = true,
        default_value = "",
        hide_default_value = true
    )]
    pub url: String,
    /// The account's Token (required).
    #[arg(long, global = true, default_value = "", hide_default_value = true)]
    pub token: String,
    /// The encryption mode [default: safe with --aes-key, otherwise plaintext].
    #[arg(long, value_enum, global = true)]
    pub mode: Option<ModeArg>,
    /// The AppID, written into every ciphertext (compatible and safe modes).
    #[arg(long, global = true)]
    pub app_id: Option<String>,
    /// The EncodingAESKey, 43 characters (compatible and safe modes).
    #[arg(long, global = true)]
    pub aes_key: Option<String>,
}

/// The webhooks of a storm: one URL, or several instances of one gateway (as behind a
/// load balancer), and the account as WeChat knows it.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// The webhook URL. Repeat it for several instances: each message's attempts go to
    /// them in turn (the first attempt of message n to the n-th URL, its retry to the
    /// next), as a load balancer may send WeChat's retries.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// The account's Token.
    #[arg(long)]
    pub token: String,
    /// The encryption mode [default: safe with --aes-key, otherwise plaintext].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The AppID, written into every ciphertext (compatible and safe modes).
    #[arg(long)]
    pub app_id: Option<String>,
    /// The EncodingAESKey, 43 characters (compatible and safe modes).
    #[arg(long)]
    pub aes_key: Option<String>,
}

impl FleetArgs {
    /// WeChat's side of the account, once every URL is checked.
    pub fn side(&self) -> Result<WeChatSide, SimError> {
        let mut side = None;
        for url in &self.urls {
            let account = AccountArgs {
                url: url.clone(),
                token: self.token.clone(),
                mode: self.mode,
                app_id: self.app_id.clone(),
                aes_key: self.aes_key.clone(),
            };
            side = Some(account.side()?);
        }
        side.ok_or_else(|| SimError::Usage("give at least one --url".to_owned()))
    }
}

/// WeChat's retry timing.
#[derive(Debug, Clone, clap::Args)]
pub struct RetryArgs {
    /// How long WeChat waits for each attempt, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, global = true)]
    pub timeout_ms: u64,
    /// How many times WeChat re-sends the identical request after the first attempt.
    #[arg(long, default_value_t = 3, global = true)]
    pub retries: u32,
    /// Judge an HTTP status other than 200 at once instead of retrying.
    #[arg(long, global = true)]
    pub no_retry_on_status: bool,
}

/// `wxgate sim verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The webhook URL.
    #[arg(long)]
    pub url: String,
    /// The account's Token.
    #[arg(long)]
    pub token: String,
    /// The `echostr` to send [default: random digits].
    #[arg(long)]
    pub echostr: Option<String>,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `wxgate sim send`.
#[derive(Debug, Clone, clap::Args)]
#[command(subcommand_value_name = "KIND", subcommand_help_heading = "Kinds")]
pub struct SendArgs {
    #[command(flatten)]
    pub account: AccountArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub header: HeaderArgs,
    /// Send this plaintext message XML instead of a KIND ("-" reads standard input).
    #[arg(long, value_name = "FILE", global = true)]
    pub xml: Option<PathBuf>,
    /// The request's `timestamp` [default: now].
    #[arg(long, global = true)]
    pub timestamp: Option<i64>,
    /// The request's `nonce` [default: random digits].
    #[arg(long, global = true)]
    pub nonce: Option<String>,
    /// Print the report as JSON (also accepted after KIND).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to send.
    #[command(subcommand)]
    pub kind: Option<KindArgs>,
}

/// `wxgate sim storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub account: FleetArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    /// How many distinct messages (every kind and common event in turn).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub messages: usize,
    /// How many deliveries run at once.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// The share of messages (0 to 1) delivered a second time, right after the first.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// `ToUserName` of every message.
    #[arg(long = "to", default_value = super::messages::DEFAULT_TO_USER_NAME)]
    pub to_user_name: String,
    /// Only the summary, not one line per delivery (JSON always has them).
    #[arg(long)]
    pub summary: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `wxgate sim load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub account: AccountArgs,
    /// Connections kept busy.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// Seconds measured.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Distinct messages to pre-build [default: enough for 60,000 requests/s, at most 3,000,000].
    #[arg(long)]
    pub messages: Option<usize>,
    /// Which messages: text only, or every kind and event in turn.
    #[arg(long, value_enum, default_value_t = LoadMix::Text)]
    pub mix: LoadMix,
    /// A request slower than this counts as a timeout, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Judge every n-th answer as WeChat would (0: never).
    #[arg(long, default_value_t = 100)]
    pub judge_every: u64,
    /// Runtime threads driving the connections (1 measures what one core can drive).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A simulator failure that prevents a verdict (bad arguments, unreadable files, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A file or the runtime failed. The I/O error is the `source`, so it is not
    /// repeated in this message (`{e:#}` shows both once).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The load target is unusable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The HTTP client could not start.
    #[error("cannot start the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let context = context.into();
    move |source| SimError::Io { context, source }
}

impl AccountArgs {
    /// The account as WeChat knows it, checked.
    pub fn side(&self) -> Result<WeChatSide, SimError> {
        if self.url.is_empty() {
            return Err(SimError::Usage(
                "--url is required (the webhook, e.g. http://127.0.0.1:8080/wx/demo)".into(),
            ));
        }
        if self.token.is_empty() {
            return Err(SimError::Usage(
                "--token is required (the account's Token)".into(),
            ));
        }
        let token = Token::new(self.token.clone()).map_err(|e| {
            SimError::Usage(format!(
                "--token: {e} (1-128 printable characters, no spaces)"
            ))
        })?;
        let mode = self
            .mode
            .map(Mode::from)
            .unwrap_or(if self.aes_key.is_some() {
                Mode::Safe
            } else {
                Mode::Plaintext
            });
        let cipher = match (&self.aes_key, &self.app_id) {
            (Some(key), Some(app_id)) => {
                let key = AesKey::parse(key)
                    .map_err(|e| SimError::Usage(format!("--aes-key: {e} [{}]", e.code())))?;
                let app_id = AppId::new(app_id.clone())
                    .map_err(|e| SimError::Usage(format!("--app-id: {e}")))?;
                Some(MessageCipher::new(&key, app_id))
            }
            (Some(_), None) => {
                return Err(SimError::Usage(
                    "--aes-key needs --app-id: the AppID is written into every ciphertext"
                        .to_owned(),
                ))
            }
            (None, _) => None,
        };
        if mode != Mode::Plaintext && cipher.is_none() {
            return Err(SimError::Usage(format!(
                "{} mode needs --aes-key and --app-id",
                mode.as_str()
            )));
        }
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err(SimError::Usage(format!(
                "--url {:?}: give an http:// or https:// URL",
                self.url
            )));
        }
        Ok(WeChatSide {
            token,
            mode,
            cipher,
        })
    }
}

impl RetryArgs {
    /// The retry policy.
    pub fn policy(&self) -> Result<RetryPolicy, SimError> {
        if self.timeout_ms == 0 {
            return Err(SimError::Usage(
                "--timeout-ms must be at least 1".to_owned(),
            ));
        }
        if self.retries > 100 {
            return Err(SimError::Usage(
                "--retries must be at most 100 (WeChat uses 3)".to_owned(),
            ));
        }
        Ok(RetryPolicy {
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            retry_on_status: !self.no_retry_on_status,
        })
    }
}

/// Runs a `wxgate sim` subcommand, writing its report to `out` (and progress notes to
/// `progress`). Returns whether the verdict is a success.
pub fn run(
    command: SimCommand,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<bool, SimError> {
    match command {
        SimCommand::Verify(args) => run_verify(&args, out),
        SimCommand::Send(args) => run_send(&args, out),
        SimCommand::Storm(args) => run_storm(&args, out),
        SimCommand::Load(args) => run_load(&args, out, progress),
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, SimError> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .map_err(io("starting the runtime"))
}

fn now() -> i64 {
    crate::pipeline::unix_now()
}

fn random_digits() -> String {
    rand::rng()
        .random_range(100_000_000u32..4_000_000_000)
        .to_string()
}

fn print(
    out: &mut dyn Write,
    json: bool,
    report: &impl Serialize,
    text: impl FnOnce() -> String,
) -> Result<(), SimError> {
    let rendered = if json {
        let mut text = serde_json::to_string_pretty(report)
            .map_err(|e| SimError::Usage(format!("cannot render the report as JSON: {e}")))?;
        text.push('\n');
        text
    } else {
        text()
    };
    out.write_all(rendered.as_bytes())
        .map_err(io("writing the report"))
}

fn run_verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<bool, SimError> {
    let report = runtime(1)?.block_on(verify_report(args))?;
    print(out, args.json, &report, || report.to_text())?;
    Ok(report.ok)
}

/// Runs `sim verify` to its report: the CLI and the web console share this.
pub async fn verify_report(args: &VerifyArgs) -> Result<super::verify::VerifyReport, SimError> {
    let account = AccountArgs {
        url: args.url.clone(),
        token: args.token.clone(),
        mode: Some(ModeArg::Plaintext),
        app_id: None,
        aes_key: None,
    };
    let side = account.side()?;
    if args.timeout_ms == 0 {
        return Err(SimError::Usage(
            "--timeout-ms must be at least 1".to_owned(),
        ));
    }
    let echostr = args.echostr.clone().unwrap_or_else(random_digits);
    let transport = Transport::new()?;
    Ok(super::verify::verify(
        &transport,
        &args.url,
        &side,
        now(),
        &random_digits(),
        &echostr,
        Duration::from_millis(args.timeout_ms),
    )
    .await)
}

/// The text of `--xml FILE` ("-" for standard input), when given.
fn read_xml(args: &SendArgs) -> Result<Option<String>, SimError> {
    args.xml
        .as_ref()
        .map(|path| {
            if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(io("reading standard input"))
            } else {
                std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))
            }
        })
        .transpose()
}

/// The plaintext XML and sender of a `send`, from a KIND or the raw XML text.
fn message_of(args: &SendArgs, xml: Option<String>) -> Result<(String, String, String), SimError> {
    match (xml, &args.kind) {
        (Some(_), Some(_)) => Err(SimError::Usage(
            "give either --xml FILE or a KIND, not both".to_owned(),
        )),
        (None, None) => Err(SimError::Usage(
            "say what to send: a KIND (text, image, voice, …, subscribe, click, …) or --xml FILE"
                .to_owned(),
        )),
        (Some(xml), None) => {
            // A file that does not parse is still sent: testing a webhook with odd input is
            // a use of --xml. The reply is then expected for --from.
            match Inbound::parse(xml.as_bytes()) {
                Ok(message) => {
                    let label = kind_label(&message.kind);
                    Ok((xml, message.header.from_user_name, label))
                }
                Err(e) => Ok((
                    xml,
                    args.header.from_user_name.clone(),
                    format!("custom XML (does not parse as a message: {e})"),
                )),
            }
        }
        (None, Some(kind)) => {
            let kind = kind.to_kind();
            let label = kind_label(&kind);
            let h = &args.header;
            let msg_id = h
                .msg_id
                .unwrap_or_else(|| rand::rng().random_range(1 << 52..1 << 62));
            let message = inbound(
                &h.to_user_name,
                &h.from_user_name,
                h.create_time.unwrap_or_else(now),
                msg_id,
                kind,
            );
            Ok((message.to_xml(), h.from_user_name.clone(), label))
        }
    }
}

fn run_send(args: &SendArgs, out: &mut dyn Write) -> Result<bool, SimError> {
    let xml = read_xml(args)?;
    let report = runtime(1)?.block_on(send_report(args, xml))?;
    print(out, args.json, &report, || report.to_text())?;
    Ok(report.outcome.ok)
}

/// Runs `sim send` to its report, with the raw message XML (the text of `--xml`) when
/// one is sent instead of a KIND. The CLI and the web console share this, so both always
/// build, send and judge alike.
pub async fn send_report(args: &SendArgs, xml: Option<String>) -> Result<SendReport, SimError> {
    let side = args.account.side()?;
    let policy = args.retry.policy()?;
    let (xml, sender, kind) = message_of(args, xml)?;
    let nonce = args.nonce.clone().unwrap_or_else(random_digits);
    let request = side.message_xml(
        &xml,
        args.timestamp.unwrap_or_else(now),
        &nonce,
        rand::rng().random(),
    );
    let transport = Transport::new()?;
    let url = &args.account.url;
    let delivery = transport
        .deliver(url, &side, &request, &sender, &policy)
        .await;
    let view = RequestView {
        method: "POST",
        url: with_query(url, &request.query),
        mode: side.mode.as_str(),
        kind,
        query: request.query.clone(),
        plaintext: request.plaintext.clone(),
        body: request.body.clone(),
        encrypted: request.body != request.plaintext,
    };
    Ok(SendReport::new(view, &delivery, &policy))
}

fn run_storm(args: &StormArgs, out: &mut dyn Write) -> Result<bool, SimError> {
    let side = args.account.side()?;
    let policy = args.retry.policy()?;
    if !(0.0..=1.0).contains(&args.duplicates) {
        return Err(SimError::Usage(
            "--duplicates is a share between 0 and 1".to_owned(),
        ));
    }
    if args.messages == 0 || args.concurrency == 0 {
        return Err(SimError::Usage(
            "--messages and --concurrency must be at least 1".to_owned(),
        ));
    }
    let options = StormOptions {
        messages: args.messages,
        concurrency: args.concurrency,
        duplicate_share: args.duplicates,
        policy,
    };
    let mut rng = rand::rng();
    let first_msg_id = rng.random_range(1 << 52..1 << 62);
    let jobs = super::storm::plan(
        &side,
        &options,
        &args.to_user_name,
        now(),
        first_msg_id,
        &mut rng,
    );
    let transport = Transport::new()?;
    let report: StormReport = runtime(1)?.block_on(super::storm::run_fleet(
        &transport,
        &args.account.urls,
        &side,
        jobs,
        &options,
    ));
    print(out, args.json, &report, || report.to_text(!args.summary))?;
    Ok(report.ok)
}

/// How many messages `load` pre-builds when not told.
pub fn default_pool_size(warmup: f64, duration: f64) -> usize {
    (((warmup + duration) * 60_000.0).ceil() as usize).clamp(1_000, 3_000_000)
}

fn run_load(
    args: &LoadArgs,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<bool, SimError> {
    let side = args.account.side()?;
    let seconds = |value: f64, name: &str| {
        if value.is_finite() && (0.0..=86_400.0).contains(&value) {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(SimError::Usage(format!(
                "--{name} must be between 0 and 86400 seconds"
            )))
        }
    };
    let duration = seconds(args.duration, "duration")?;
    let warmup = seconds(args.warmup, "warmup")?;
    if duration.is_zero() || args.connections == 0 || args.timeout_ms == 0 {
        return Err(SimError::Usage(
            "--duration, --connections and --timeout-ms must be positive".to_owned(),
        ));
    }
    if !(1..=256).contains(&args.threads) {
        return Err(SimError::Usage(
            "--threads must be between 1 and 256".to_owned(),
        ));
    }
    let count = args
        .messages
        .unwrap_or_else(|| default_pool_size(args.warmup, args.duration));
    if count == 0 {
        return Err(SimError::Usage("--messages must be at least 1".to_owned()));
    }
    let runtime = runtime(args.threads)?;
    let target = runtime.block_on(LoadTarget::resolve(&args.account.url))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        progress,
        "building {count} distinct signed messages ({} mode)…",
        side.mode.as_str()
    );
    let pool = Arc::new(RequestPool::build(
        &side,
        &target,
        count,
        args.mix,
        now(),
        cores,
    ));
    let _ = writeln!(
        progress,
        "{} MB of requests; {} connections for {:.1} s after {:.1} s warm-up…",
        pool.bytes() / 1_000_000,
        args.connections,
        args.duration,
        args.warmup
    );
    let options = LoadOptions {
        connections: args.connections,
        duration,
        warmup,
        timeout: Duration::from_millis(args.timeout_ms),
        judge_every: args.judge_every,
    };
    let side = Arc::new(side);
    let report = runtime.block_on(super::load::run(Arc::clone(&pool), &target, side, &options));
    print(out, args.json, &report, || report.to_text())?;
    Ok(report.ok)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        sim: SimCommand,
    }

    #[test]
    fn send_takes_its_options_before_or_after_the_kind() {
        Wrapper::command().debug_assert();
        for args in [
            &[
                "x",
                "send",
                "--url",
                "http://h/wx/a",
                "--token",
                "t",
                "text",
                "hi",
            ][..],
            &[
                "x",
                "send",
                "text",
                "hi",
                "--url",
                "http://h/wx/a",
                "--token",
                "t",
            ],
            &[
                "x",
                "send",
                "text",
                "--url",
                "http://h/wx/a",
                "hi",
                "--token",
                "t",
                "--json",
            ],
            &[
                "x",
                "send",
                "--url",
                "http://h/wx/a",
                "--token",
                "t",
                "link",
                "https://e/x",
            ],
            &[
                "x",
                "send",
                "link",
                "https://e/x",
                "--url",
                "http://h/wx/a",
                "--token",
                "t",
            ],
        ] {
            let Wrapper {
                sim: SimCommand::Send(send),
            } = Wrapper::try_parse_from(args).unwrap()
            else {
                panic!("not a send: {args:?}");
            };
            assert_eq!(send.account.url, "http://h/wx/a", "{args:?}");
            assert_eq!(send.account.token, "t", "{args:?}");
            match &send.kind {
                Some(KindArgs::Text { content }) => assert_eq!(content, "hi"),
                Some(KindArgs::Link { url, .. }) => assert_eq!(url, "https://e/x"),
                other => panic!("{other:?}"),
            }
        }
        // A missing --url is still a clear usage error, not a clap tip about order.
        let Wrapper {
            sim: SimCommand::Send(send),
        } = Wrapper::try_parse_from(["x", "send", "text", "hi", "--token", "t"]).unwrap()
        else {
            panic!("not a send");
        };
        let error = send.account.side().unwrap_err().to_string();
        assert!(error.contains("--url is required"), "{error}");
    }
}
