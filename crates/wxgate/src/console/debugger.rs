//! The debugger's endpoints: `POST /console/api/sim/send` and `/console/api/sim/verify`.
//!
//! One engine: the JSON fields are named like `wxgate sim send`'s flags and are turned
//! into that command line, parsed by the CLI's own clap definitions (so every default,
//! every kind and every check is the CLI's), and run by the CLI's own
//! [`send_report`](crate::sim::cli::send_report). The answer is the report of
//! `wxgate sim send --json`, byte for byte the same shape.
//!
//! An `account` target is completed here, on the server, with that account's URL on this
//! gateway, its token, AppID and current EncodingAESKey; the browser never sees them, and
//! the report holds only what WeChat would put on the wire (signatures, not secrets).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use clap::{CommandFactory, Parser};
use serde_json::{Map, Value};

use super::api::ConsoleError;
use super::Console;
use crate::sim::cli::{send_report, verify_report, SendArgs, SimError, VerifyArgs};
use crate::sim::send::SendReport;
use crate::sim::verify::VerifyReport;

/// `wxgate sim send`'s arguments, as a parser of their own.
#[derive(Debug, Parser)]
#[command(name = "send", no_binary_name = false)]
struct SendCommand {
    #[command(flatten)]
    args: SendArgs,
}

/// Fields that are not flags: the target account, the kind and the raw XML text.
const SPECIAL: [&str; 4] = ["account", "kind", "xml", "page_url"];
/// Fields an account target fills in itself.
const ACCOUNT_FILLED: [&str; 4] = ["url", "token", "app_id", "aes_key"];

fn bad(text: impl Into<String>) -> ConsoleError {
    ConsoleError::BadRequest(text.into())
}

fn sim_error(error: SimError) -> ConsoleError {
    ConsoleError::BadRequest(error.to_string())
}

/// A JSON value as one command-line value.
fn text_of(name: &str, value: &Value) -> Result<Option<String>, ConsoleError> {
    Ok(match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(_) | Value::Array(_) | Value::Object(_) => {
            return Err(bad(format!("{name}: give a string or a number")))
        }
    })
}

/// Builds the `wxgate sim send` command line of a JSON request. `account_args` are the
/// server-side flags of an account target.
fn command_line(
    fields: &Map<String, Value>,
    account_args: Vec<String>,
) -> Result<Vec<String>, ConsoleError> {
    let command = SendCommand::command();
    let kind_name = fields
        .get("kind")
        .map(|kind| text_of("kind", kind))
        .transpose()?
        .flatten();
    let kind = kind_name
        .as_deref()
        .map(|name| {
            command
                .find_subcommand(name.replace('_', "-"))
                .ok_or_else(|| bad(format!("kind {name:?} is not one `wxgate sim send` knows")))
        })
        .transpose()?;
    let mut top = vec!["send".to_owned()];
    top.extend(account_args);
    let mut kind_flags = Vec::new();
    let mut positional = Vec::new();
    for (name, value) in fields {
        if SPECIAL.contains(&name.as_str()) {
            continue;
        }
        let long = name.replace('_', "-");
        let flag = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long.as_str()) && long != "json");
        let (target, arg) = match flag {
            Some(arg) => (&mut top, arg),
            None => {
                let arg = kind
                    .and_then(|kind| {
                        kind.get_arguments().find(|arg| {
                            arg.get_long() == Some(long.as_str())
                                || (arg.is_positional() && arg.get_id() == name.as_str())
                        })
                    })
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown field {name:?} for kind {:?} (see docs/console.md)",
                            kind_name.as_deref().unwrap_or("none")
                        ))
                    })?;
                if arg.is_positional() {
                    if let Some(text) = text_of(name, value)? {
                        positional.push(text);
                    }
                    continue;
                }
                (&mut kind_flags, arg)
            }
        };
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values());
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) || !takes_value {
            match value {
                Value::Bool(true) => target.push(format!("--{long}")),
                Value::Bool(false) | Value::Null => {}
                _ => return Err(bad(format!("{name}: give true or false"))),
            }
        } else if let Some(text) = text_of(name, value)? {
            target.push(format!("--{long}={text}"));
        }
    }
    // `link` and `view` take the page's URL positionally; `url` is the webhook's.
    if let Some(page_url) = fields.get("page_url") {
        if let Some(text) = text_of("page_url", page_url)? {
            positional.push(text);
        }
    }
    if let Some(kind) = kind {
        top.push(kind.get_name().to_owned());
        top.extend(kind_flags);
        if !positional.is_empty() {
            top.push("--".to_owned());
            top.extend(positional);
        }
    }
    Ok(top)
}

/// The server-side flags of an account target, and the refusal of fields it fills in.
fn account_flags(
    console: &Console,
    fields: &Map<String, Value>,
) -> Result<Vec<String>, ConsoleError> {
    let Some(name) = fields.get("account") else {
        return Ok(Vec::new());
    };
    let name = text_of("account", name)?.unwrap_or_default();
    let account = console
        .gateway
        .account(&name)
        .ok_or_else(|| ConsoleError::NotFound(format!("no account {name:?}")))?;
    if let Some(field) = ACCOUNT_FILLED.iter().find(|f| fields.contains_key(**f)) {
        return Err(bad(format!(
            "{field}: an account target uses the account's own URL and credentials"
        )));
    }
    let config = &account.config;
    let mut flags = vec![
        format!("--url={}/wx/{}", console.webhook_base, config.name),
        format!("--token={}", config.token.expose()),
        format!("--app-id={}", config.app_id.as_str()),
    ];
    if let Some(key) = &config.aes_key {
        flags.push(format!("--aes-key={}", key.to_encoding_aes_key()));
    }
    if !fields.contains_key("mode") {
        flags.push(format!("--mode={}", config.mode.as_str()));
    }
    Ok(flags)
}

/// `POST /console/api/sim/send`: the report of `wxgate sim send --json`.
pub async fn send(
    State(console): State<Arc<Console>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SendReport>, ConsoleError> {
    let Json(fields) = body.map_err(|e| bad(e.body_text()))?;
    let xml = fields
        .get("xml")
        .map(|xml| text_of("xml", xml))
        .transpose()?
        .flatten();
    let argv = command_line(&fields, account_flags(&console, &fields)?)?;
    let args = SendCommand::try_parse_from(&argv)
        .map_err(|e| {
            // clap's lines before the usage say what is wrong.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|line| !line.starts_with("Usage:"))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            bad(what.join(" ").trim_start_matches("error: "))
        })?
        .args;
    let _slot = console
        .sim_slots
        .acquire()
        .await
        .map_err(|_| bad("the console is shutting down"))?;
    send_report(&args, xml).await.map(Json).map_err(sim_error)
}

/// `POST /console/api/sim/verify`: the report of `wxgate sim verify --json`.
pub async fn verify(
    State(console): State<Arc<Console>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<VerifyReport>, ConsoleError> {
    let Json(fields) = body.map_err(|e| bad(e.body_text()))?;
    let text = |name: &str| -> Result<Option<String>, ConsoleError> {
        fields
            .get(name)
            .map(|value| text_of(name, value))
            .transpose()
            .map(Option::flatten)
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["account", "url", "token", "echostr", "timeout_ms"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field {unknown:?} (see docs/console.md)"
        )));
    }
    let (url, token) = match text("account")? {
        Some(name) => {
            let account = console
                .gateway
                .account(&name)
                .ok_or_else(|| ConsoleError::NotFound(format!("no account {name:?}")))?;
            if fields.contains_key("url") || fields.contains_key("token") {
                return Err(bad(
                    "an account target uses the account's own URL and credentials",
                ));
            }
            (
                format!("{}/wx/{}", console.webhook_base, account.config.name),
                account.config.token.expose().to_owned(),
            )
        }
        None => (
            text("url")?.ok_or_else(|| bad("give an account, or a url and a token"))?,
            text("token")?.ok_or_else(|| bad("give an account, or a url and a token"))?,
        ),
    };
    let timeout_ms = match text("timeout_ms")? {
        Some(ms) => ms
            .parse()
            .map_err(|_| bad("timeout_ms: give a number of milliseconds"))?,
        None => 5000,
    };
    let args = VerifyArgs {
        url,
        token,
        echostr: text("echostr")?,
        timeout_ms,
        json: true,
    };
    let _slot = console
        .sim_slots
        .acquire()
        .await
        .map_err(|_| bad("the console is shutting down"))?;
    verify_report(&args).await.map(Json).map_err(sim_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(json: &str) -> Result<Vec<String>, String> {
        let fields: Map<String, Value> = serde_json::from_str(json).unwrap();
        command_line(&fields, Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn json_fields_become_the_cli_flags() {
        assert_eq!(
            line(r#"{"url":"http://h/wx/a","token":"t","kind":"text","content":"-hi","from":"o1","retries":0}"#)
                .unwrap(),
            [
                "send",
                "--from=o1",
                "--retries=0",
                "--token=t",
                "--url=http://h/wx/a",
                "text",
                "--",
                "-hi"
            ]
        );
        assert_eq!(
            line(r#"{"kind":"location_event","latitude":-1.5,"no_retry_on_status":true}"#).unwrap(),
            [
                "send",
                "--no-retry-on-status",
                "location-event",
                "--latitude=-1.5"
            ]
        );
        assert_eq!(
            line(r#"{"kind":"link","page_url":"https://example.com","title":"T"}"#).unwrap(),
            ["send", "link", "--title=T", "--", "https://example.com"]
        );
        assert!(line(r#"{"kind":"nope"}"#).unwrap_err().contains("nope"));
        assert!(line(r#"{"kind":"text","bogus":1}"#)
            .unwrap_err()
            .contains("bogus"));
        assert!(line(r#"{"json":true}"#).unwrap_err().contains("json"));
    }

    #[test]
    fn the_cli_parser_accepts_the_line() {
        let argv =
            line(r#"{"url":"http://h/wx/a","token":"t","kind":"scan","scene":"7"}"#).unwrap();
        let args = SendCommand::try_parse_from(&argv).unwrap().args;
        assert_eq!(args.account.url, "http://h/wx/a");
        assert!(matches!(
            args.kind,
            Some(crate::sim::messages::KindArgs::Scan { ref scene, .. }) if scene == "7"
        ));
    }
}
