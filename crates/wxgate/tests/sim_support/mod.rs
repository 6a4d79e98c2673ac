//! The rig of `tests/sim.rs`: the real gateway on a real socket, the CLI run as the binary
//! runs it, and small deliberately broken webhooks whose every answer is a known mistake.

#![allow(dead_code, reason = "shared by the tests of one binary")]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clap::Parser;
use serde_json::Value;
use wechat_proto::{
    AesKey, AppId, EncryptedReply, MessageCipher, Reply, ReplyTarget, Signature, Token,
};
use wxgate::config::{Config, Mode};
use wxgate::serve::Bound;
use wxgate::sim::cli::{run, SimCommand};
use wxgate::sim::messages::inbound;
use wxgate::sim::send::RetryPolicy;
use wxgate::sim::wechat::{SignedRequest, Unusable, Verdict, WeChatSide};
use wxgate::store::Store;
use wxgate::GatewayBuilder;

pub const TOKEN: &str = "spamtest";
pub const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const OTHER_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
pub const APP_ID: &str = "wx2c2769f8efd9abc2";
pub const SENDER: &str = "oyORnuP8q7ou2gfYjqLzSIWZf0rs";

/// WeChat's timing, shortened: 150 ms per attempt, 3 retries.
pub const FAST: RetryPolicy = RetryPolicy {
    timeout: Duration::from_millis(150),
    retries: 3,
    retry_on_status: true,
};

// ---------------------------------------------------------------------------------------
// The real gateway.

pub struct Gateway {
    pub base: String,
    pub store: Arc<dyn Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The gateway with one account per mode, each with the echo rule, on 127.0.0.1:0.
pub async fn gateway() -> Gateway {
    let mut text = String::from("listen = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n");
    for (name, mode) in [
        ("plain", "plaintext"),
        ("compat", "compatible"),
        ("safe", "safe"),
    ] {
        text.push_str(&format!(
            "[[accounts]]\nname = \"{name}\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\nmode = \"{mode}\"\n[[accounts.rules]]\necho = true\n"
        ));
    }
    let config = Config::from_toml(&text, &BTreeMap::new()).expect("valid config");
    let store = wxgate::store::open(&config.store, now() * 1000)
        .await
        .expect("memory store");
    let bound = Bound::bind(
        GatewayBuilder::new(config.clone(), Arc::clone(&store)),
        config,
    )
    .await
    .expect("bind");
    let base = format!("http://{}", bound.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    Gateway {
        base,
        store,
        _stop: stop,
    }
}

pub fn side(mode: Mode) -> WeChatSide {
    WeChatSide {
        token: Token::new(TOKEN).unwrap(),
        mode,
        cipher: Some(MessageCipher::new(
            &AesKey::parse(KEY).unwrap(),
            AppId::new(APP_ID).unwrap(),
        )),
    }
}

pub fn now() -> i64 {
    wxgate::pipeline::unix_now()
}

/// Runs a `wxgate sim …` command line (as after `wxgate sim`) the way the binary does,
/// on its own runtime; returns the verdict and the JSON report.
pub async fn cli(args: &[&str]) -> (bool, Value) {
    #[derive(Parser)]
    struct Sim {
        #[command(subcommand)]
        command: SimCommand,
    }
    let mut argv = vec!["sim".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv.push("--json".to_owned());
    let command = Sim::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .command;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let ok = run(command, &mut out, &mut std::io::sink()).expect("the simulator runs");
        let report: Value = serde_json::from_slice(&out).expect("JSON report");
        (ok, report)
    })
    .await
    .unwrap()
}

/// The account flags for `mode` against the gateway's account of that mode.
pub fn account_flags(gateway: &Gateway, mode: &str) -> Vec<String> {
    let account = match mode {
        "plaintext" => "plain",
        "compatible" => "compat",
        _ => "safe",
    };
    [
        "--url",
        &format!("{}/wx/{account}", gateway.base),
        "--token",
        TOKEN,
        "--mode",
        mode,
        "--app-id",
        APP_ID,
        "--aes-key",
        KEY,
        "--from",
        SENDER,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

// ---------------------------------------------------------------------------------------
// Deliberately broken servers.

/// What the test server saw and how often.
#[derive(Clone, Default)]
pub struct Seen {
    pub requests: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Seen {
    pub fn for_path(&self, path: &str) -> Vec<(String, String)> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(_, query, body)| (query.clone(), body.clone()))
            .collect()
    }
}

pub fn reply_xml(to: &str, content: &str) -> String {
    let target = ReplyTarget {
        to_user_name: to,
        from_user_name: "gh_test",
        create_time: 1,
        max_articles: 1,
    };
    Reply::Text {
        content: content.to_owned(),
    }
    .render(&target)
    .unwrap()
}

/// An encrypted reply as a correct server writes it; `key` and `tamper` break it.
pub fn encrypted(
    query: &HashMap<String, String>,
    plaintext: &str,
    key: &str,
    tamper: bool,
) -> String {
    let cipher = MessageCipher::new(&AesKey::parse(key).unwrap(), AppId::new(APP_ID).unwrap());
    let encrypt = cipher.encrypt(plaintext.as_bytes(), [7; 16]);
    let timestamp = query.get("timestamp").cloned().unwrap_or_default();
    let nonce = query.get("nonce").cloned().unwrap_or_default();
    let mut msg_signature =
        Signature::message(&Token::new(TOKEN).unwrap(), &timestamp, &nonce, &encrypt).to_hex();
    if tamper {
        msg_signature = msg_signature.replace(|c: char| c.is_ascii_digit(), "0");
    }
    EncryptedReply {
        encrypt,
        msg_signature,
        timestamp,
        nonce,
    }
    .to_xml()
}

pub async fn broken_handler(
    State(seen): State<Seen>,
    Path(behaviour): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    raw_query: axum::extract::RawQuery,
    body: String,
) -> axum::response::Response {
    let count = {
        let mut requests = seen.requests.lock().unwrap();
        requests.push((behaviour.clone(), raw_query.0.unwrap_or_default(), body));
        requests.iter().filter(|(p, ..)| *p == behaviour).count()
    };
    let hello = reply_xml(SENDER, "hello");
    match behaviour.as_str() {
        "success" => "success".into_response(),
        "empty" => "".into_response(),
        "text-reply" => hello.into_response(),
        "encrypted-reply" => encrypted(&query, &hello, KEY, false).into_response(),
        "wrong-signature" => encrypted(&query, &hello, KEY, true).into_response(),
        "wrong-key" => encrypted(&query, &hello, OTHER_KEY, false).into_response(),
        "wrong-recipient" => reply_xml("oSomeoneElse", "hello").into_response(),
        "bad-xml" => "<xml><ToUserName>oops".into_response(),
        "json" => (
            [("content-type", "application/json")],
            r#"{"errcode":0,"errmsg":"ok"}"#,
        )
            .into_response(),
        "json-500" => {
            (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"internal"}"#).into_response()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "success".into_response()
        }
        "slow-once" => {
            if count == 1 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            encrypted(&query, &hello, KEY, false).into_response()
        }
        "counter" => {
            // A webhook without single flight that is not idempotent: every delivery
            // runs the logic again and answers differently.
            let side_effect = seen.requests.lock().unwrap().len();
            encrypted(
                &query,
                &reply_xml(SENDER, &format!("ticket #{side_effect}")),
                KEY,
                false,
            )
            .into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn broken_server() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/{behaviour}", axum::routing::post(broken_handler))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

pub fn hello_request(side: &WeChatSide, msg_id: u64) -> SignedRequest {
    let message = inbound(
        "gh_test",
        SENDER,
        now(),
        msg_id,
        wechat_proto::Kind::Text {
            content: "hi".to_owned(),
        },
    );
    side.message(&message, now(), "4242", [1; 16])
}

/// A verdict in a few words, for data-driven checks.
pub fn label(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Reply(Reply::Text { content }) => format!("reply: {content}"),
        Verdict::Reply(other) => format!("reply: {other:?}"),
        Verdict::Acknowledged => "acknowledged".to_owned(),
        Verdict::Unusable(why) => match why {
            Unusable::Status(code) => format!("status {code}"),
            Unusable::InvalidXml(_) => "invalid xml".to_owned(),
            Unusable::WrongSignature => "wrong signature".to_owned(),
            Unusable::WrongEncryption(_) => "wrong encryption".to_owned(),
            Unusable::NotEncrypted => "not encrypted".to_owned(),
            Unusable::WrongRecipient => "wrong recipient".to_owned(),
            Unusable::Timeout => "timeout".to_owned(),
            Unusable::Unreachable(_) => "unreachable".to_owned(),
        },
    }
}

/// A writer the test can read while another task writes.
#[derive(Clone, Default)]
pub struct SharedOutput(Arc<Mutex<Vec<u8>>>);

impl Write for SharedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOutput {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
