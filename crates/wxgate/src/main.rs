//! The `wxgate` binary: a thin layer of argument parsing over the library.
//!
//! This is the only place that reads the process environment (`WXGATE_*`) and uses
//! `anyhow`; everything else receives validated values.
//!
//! Exit status: 0 on success; 1 when `serve` fails, or when a `sim`, `decrypt` or `inbox`
//! verdict is a failure (so the tools can sit in CI); 2 when a tool could not run at all
//! (bad arguments, unreadable files), as for clap's own usage errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wxgate::clock::{SystemClock, WallClock};
use wxgate::config::{Config, StoreConfig};
use wxgate::serve::Bound;
use wxgate::sim::cli::SimCommand;
use wxgate::tools::{DecryptArgs, InboxArgs};
use wxgate::GatewayBuilder;

/// The WeChat Official Account message webhook gateway.
#[derive(Debug, Parser)]
#[command(name = "wxgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
enum Command {
    /// Serve the webhook. Without a config, starts the demo accounts on ./wxgate.db.
    Serve {
        /// The config file (TOML); see wxgate.example.toml.
        #[arg(long, env = "WXGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a fresh token and EncodingAESKey.
    Keygen {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Play WeChat's server against any webhook: verify, send, storm, load.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Decrypt a captured Encrypt, request body or encrypted reply.
    Decrypt(DecryptArgs),
    /// List what the gateway recorded: messages, attempts, outcomes, replies.
    Inbox(InboxArgs),
}

/// A tool that ran and reached a verdict: success, or a failure to report with status 1.
enum Verdict {
    Success,
    Failure,
}

/// Where the demo keeps its generated secrets, so they survive restarts.
const DEMO_SECRETS: &str = "wxgate.demo.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("WXGATE_"))
        .collect();
    let result = match cli.command {
        Command::Serve { config } => match serve(config.as_deref(), &env) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wxgate: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        Command::Keygen { json } => keygen(json),
        Command::Sim(command) => sim(command),
        Command::Decrypt(args) => decrypt(&args),
        Command::Inbox(args) => inbox(&args, &env),
    };
    match result {
        Ok(Verdict::Success) => ExitCode::SUCCESS,
        Ok(Verdict::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wxgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn fresh_secrets() -> (String, String) {
    let secrets = wxgate::tools::keygen();
    (secrets.token, secrets.encoding_aes_key)
}

fn keygen(json: bool) -> anyhow::Result<Verdict> {
    let secrets = wxgate::tools::keygen();
    let text = if json {
        serde_json::to_string_pretty(&secrets)? + "\n"
    } else {
        secrets.to_toml()
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(Verdict::Success)
}

fn verdict(ok: bool) -> Verdict {
    if ok {
        Verdict::Success
    } else {
        Verdict::Failure
    }
}

fn sim(command: SimCommand) -> anyhow::Result<Verdict> {
    let ok = wxgate::sim::cli::run(
        command,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
    )?;
    Ok(verdict(ok))
}

fn decrypt(args: &DecryptArgs) -> anyhow::Result<Verdict> {
    let report = wxgate::tools::decrypt(args)?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_text()
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(verdict(report.ok))
}

fn inbox(args: &InboxArgs, env: &BTreeMap<String, String>) -> anyhow::Result<Verdict> {
    let config_path = args
        .config
        .clone()
        .or_else(|| env.get("WXGATE_CONFIG").map(PathBuf::from));
    let store = match config_path {
        Some(path) => Config::load(&path, env)?.store,
        // The demo's store, as `wxgate serve` without a config uses it.
        None => StoreConfig::Sqlite {
            path: PathBuf::from("wxgate.db"),
            retention: wxgate::store::Retention::default(),
            synchronous_full: false,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let store = wxgate::tools::open_inbox_store(&store).await?;
        let now_ms = WallClock::now_ms(&SystemClock);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        wxgate::tools::inbox(&*store, args, now_ms, &mut std::io::stdout(), stop).await
    })?;
    Ok(Verdict::Success)
}

fn init_logging(json: bool, env: &BTreeMap<String, String>) {
    let filter = tracing_subscriber::EnvFilter::try_new(
        env.get("WXGATE_LOG").map_or("info", String::as_str),
    )
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The demo config: secrets generated once and kept in `wxgate.demo.toml`.
fn demo_config() -> anyhow::Result<Config> {
    let path = Path::new(DEMO_SECRETS);
    let (token, key, app_id) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("reading {DEMO_SECRETS}"))?;
            let get = |k: &str| {
                table
                    .get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .with_context(|| format!("{DEMO_SECRETS}: {k} missing"))
            };
            (get("token")?, get("encoding_aes_key")?, get("app_id")?)
        }
        Err(_) => {
            let (token, key) = fresh_secrets();
            let app_id = "wxd0000000000demo".to_owned();
            let text = format!(
                "# Generated by `wxgate serve` for the demo accounts; delete to regenerate.\ntoken = \"{token}\"\nencoding_aes_key = \"{key}\"\napp_id = \"{app_id}\"\n"
            );
            std::fs::write(path, text).with_context(|| format!("writing {DEMO_SECRETS}"))?;
            (token, key, app_id)
        }
    };
    Ok(Config::demo(&token, &key, &app_id)?)
}

/// The demo turns the console on, on the demo's loopback address, with a fresh token
/// (or `WXGATE_CONSOLE_TOKEN`), printed at start.
fn demo_with_console(mut config: Config, env: &BTreeMap<String, String>) -> Config {
    let token = env
        .get("WXGATE_CONSOLE_TOKEN")
        .cloned()
        .unwrap_or_else(|| wxgate::tools::keygen().token);
    config.console = Some(wxgate::config::ConsoleConfig {
        token: wxgate::config::Secret::new(token),
        listen: None,
    });
    config
}

fn serve(config_path: Option<&Path>, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let demo = config_path.is_none();
    let config = match config_path {
        Some(path) => Config::load(path, env)?,
        None => demo_with_console(demo_config()?, env),
    };
    init_logging(config.log_json, env);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let store = wxgate::store::open(&config.store, SystemClock.now_ms())
            .await
            .context("opening the store")?;
        let builder = GatewayBuilder::new(config.clone(), store);
        let bound = Bound::bind(builder, config.clone())
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = bound.local_addr()?;
        if demo {
            print_demo(&config, addr);
            if let (Some(console), Some(Ok(console_addr))) = (&config.console, bound.console_addr()) {
                println!(
                    "Console: http://{console_addr}/console/   token {}",
                    console.token.expose()
                );
            }
        }
        for account in &config.accounts {
            tracing::info!(account = %account.name, mode = account.mode.as_str(), policy = account.policy.as_str(), url = %format!("http://{addr}/wx/{}", account.name), "serving");
        }
        bound.serve(shutdown_signal()).await.context("serving")
    })
}

fn print_demo(config: &Config, addr: std::net::SocketAddr) {
    let Some(first) = config.accounts.first() else {
        return;
    };
    let key = first
        .aes_key
        .as_ref()
        .map(|k| k.to_encoding_aes_key())
        .unwrap_or_default();
    println!(
        "wxgate demo — no config given, so two demo accounts run on ./wxgate.db with an echo rule:"
    );
    for account in &config.accounts {
        println!(
            "  URL            http://{addr}/wx/{}   ({} mode)",
            account.name,
            account.mode.as_str()
        );
    }
    println!("  Token          {}", first.token.expose());
    println!("  EncodingAESKey {key}");
    println!("  AppID          {}", first.app_id);
    println!("Secrets are kept in ./{DEMO_SECRETS}. Try: wxgate sim send --url http://{addr}/wx/demo --token {} text hello", first.token.expose());
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
