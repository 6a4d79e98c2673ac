//! The per-message log line and what logs must never contain, captured at every level
//! from every crate.
//!
//! One `#[test]` runs every case in turn on one thread: tracing caches per-callsite
//! interest across threads, so capturing with thread-local subscribers in parallel tests
//! could miss lines.

mod fake_wechat;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use support::*;
use tracing_subscriber::fmt::MakeWriter;
use wechat_proto::{Event, Kind};
use wxgate::config::Mode;

#[test]
fn logs() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(logs_carry_one_line_per_message_and_never_a_secret_or_an_openid());
    runtime().block_on(json_logs_have_every_field_as_a_field_and_access_lines_can_be_silenced());
}

/// Every log line, at every level, from every crate, as the binary would write it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture(json: bool) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false);
    let guard = if json {
        tracing::subscriber::set_default(builder.json().finish())
    } else {
        tracing::subscriber::set_default(builder.finish())
    };
    (captured, guard)
}

const CONTENT: &str = "zebra-private-words-42";
const APP_SECRET: &str = "appsecret-never-logged-9";
const FORWARD_SECRET: &str = "forward-hmac-never-logged-7";

/// Sends every kind of traffic an operator sees: good messages in each mode, a retry, an
/// event, a handler failure, and each kind of refusal.
async fn traffic(app: &TestApp) {
    for (account, mode) in [
        ("plain", Mode::Plaintext),
        ("compat", Mode::Compatible),
        ("safe", Mode::Safe),
    ] {
        let (status, _) = deliver(app, account, mode, &text(1, CONTENT), "1").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = deliver(app, account, mode, &text(2, "help"), "2").await;
        assert_eq!(status, StatusCode::OK);
    }
    // A retry of the same message.
    deliver(app, "safe", Mode::Safe, &text(1, CONTENT), "3").await;
    let subscribe = message(
        0,
        Kind::Event(Event::Subscribe {
            event_key: None,
            ticket: None,
            scene: None,
        }),
    );
    deliver(app, "safe", Mode::Safe, &subscribe, "4").await;
    // The forward upstream is unreachable: a recorded handler failure.
    deliver(app, "fwd", Mode::Plaintext, &text(3, CONTENT), "5").await;
    // Refusals: a wrong token, a wrong key, a wrong AppID, an unknown account.
    let mut wrong_token = side(Mode::Safe);
    wrong_token.token = wechat_proto::Token::new("not-the-token").unwrap();
    let request = wrong_token.message(&text(4, CONTENT), now(), "6", [2; 16]);
    assert_eq!(app.post("safe", &request).await.0, StatusCode::UNAUTHORIZED);
    let request = side_with(Mode::Safe, &"Z".repeat(43), APP_ID).message(
        &text(5, CONTENT),
        now(),
        "7",
        [2; 16],
    );
    assert_eq!(app.post("safe", &request).await.0, StatusCode::BAD_REQUEST);
    let request = side_with(Mode::Safe, KEY, "wxotherapp0000000").message(
        &text(6, CONTENT),
        now(),
        "8",
        [2; 16],
    );
    assert_eq!(app.post("safe", &request).await.0, StatusCode::UNAUTHORIZED);
    let request = side(Mode::Safe).message(&text(7, CONTENT), now(), "9", [2; 16]);
    assert_eq!(app.post("nobody", &request).await.0, StatusCode::NOT_FOUND);
}

/// The three test accounts, `fwd` (an unreachable upstream) and `pushed` (a slow upstream
/// at the fake, whose late reply goes out through the fake customer-service API with a
/// real access token).
fn ops_config(fake: &str) -> wxgate::Config {
    let fwd = format!(
        "[[accounts]]\nname = \"fwd\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\npolicy = \"push\"\napp_secret = \"{APP_SECRET}\"\napi_base = \"http://127.0.0.1:9\"\n[accounts.forward]\nurl = \"http://127.0.0.1:9/upstream\"\nsecret = \"{FORWARD_SECRET}\"\nmax_secs = 1\n\
         [[accounts]]\nname = \"pushed\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\npolicy = \"push\"\nbudget_ms = 100\napp_secret = \"{}\"\napi_base = \"{fake}\"\n[accounts.forward]\nurl = \"{fake}/upstream\"\n",
        fake_wechat::APP_SECRET
    );
    config("ack", &fwd)
}

async fn logs_carry_one_line_per_message_and_never_a_secret_or_an_openid() {
    let (captured, _guard) = capture(false);
    let fake = fake_wechat::FakeServer::start().await;
    fake.with(|f| f.upstream.delay = Duration::from_millis(300));
    let app = TestApp::new(ops_config(&fake.base), |b| b);
    traffic(&app).await;
    deliver(&app, "pushed", Mode::Plaintext, &text(8, CONTENT), "10").await;
    // Let the failing forward and the push worker finish their logging.
    app.gateway.shutdown(Duration::from_secs(15)).await.unwrap();
    let logs = captured.text();
    // The late reply went out with an access token, which the logs never show.
    assert_eq!(fake.with(|f| f.sent.len()), 1);
    let issued: Vec<String> = fake.with(|f| f.tokens.keys().cloned().collect());
    assert!(!issued.is_empty());
    for token in &issued {
        assert!(!logs.contains(token.as_str()), "{token} in the logs");
    }
    assert!(!logs.contains(fake_wechat::APP_SECRET), "{logs}");

    for secret in [
        SENDER,
        CONTENT,
        TOKEN,
        KEY,
        OLD_KEY,
        APP_SECRET,
        FORWARD_SECRET,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{logs}"
        );
    }
    // The OpenID is not there in part either (a prefix of 12 would identify a follower).
    assert!(!logs.contains(&SENDER[..12]), "{logs}");

    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("message answered"))
        .collect();
    // 6 messages, 1 retry, 1 event, 1 forwarded, 1 pushed: one line per attempt.
    assert_eq!(lines.len(), 10, "{logs}");
    let first = lines
        .iter()
        .find(|l| l.contains("account=\"safe\"") || l.contains("account=safe"))
        .expect("a line of the safe account");
    for field in [
        "kind=text",
        "attempt=1",
        "claim=\"first\"",
        "answer=\"",
        "ms=",
        "handler_ms=",
        "remote=",
    ] {
        assert!(first.contains(field), "{field} missing in {first}");
    }
    let retry = lines
        .iter()
        .find(|l| l.contains("attempt=2"))
        .expect("the retry's line");
    assert!(retry.contains("claim=\"done\""), "{retry}");
    assert!(retry.contains("handler_ms="), "{retry}");
    // Both attempts of the retried message carry the same short hash.
    let hash = |line: &str| {
        let start = line.find("dedup=").unwrap() + 6;
        line[start..start + 8].to_owned()
    };
    assert!(
        hash(retry).chars().all(|c| c.is_ascii_hexdigit()),
        "{retry}"
    );
    let safe_lines = lines.iter().filter(|l| l.contains("account=\"safe\""));
    assert_eq!(
        safe_lines.filter(|l| hash(l) == hash(retry)).count(),
        2,
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l.contains("kind=event:subscribe")),
        "{logs}"
    );

    // Refusals: account, code and a hint that names the account.
    let key_hint = logs
        .lines()
        .find(|l| l.contains("EncodingAESKey probably does not match"))
        .expect("the wrong-key hint");
    assert!(
        key_hint.contains("account safe's EncodingAESKey"),
        "{key_hint}"
    );
    assert!(key_hint.contains("code=-4000"), "{key_hint}");
    let app_id_hint = logs
        .lines()
        .find(|l| l.contains("app_id probably does not match"))
        .expect("the wrong-AppID hint");
    assert!(app_id_hint.contains("code=-40005"), "{app_id_hint}");
    assert!(
        logs.lines()
            .any(|l| l.contains("request refused: unauthorized") && l.contains("code=-40001")),
        "{logs}"
    );
    // The handler failure reads once, without a doubled prefix.
    assert!(!logs.contains("handler failed: handler failed"), "{logs}");
}

async fn json_logs_have_every_field_as_a_field_and_access_lines_can_be_silenced() {
    let (captured, guard) = capture(true);
    let app = TestApp::new(config("ack", ""), |b| b);
    deliver(&app, "safe", Mode::Safe, &text(1, "help"), "1").await;
    drop(guard);
    let line = captured
        .text()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["fields"]["message"] == "message answered")
        .expect("the message line");
    let fields = &line["fields"];
    assert_eq!(fields["kind"], "text");
    assert_eq!(fields["attempt"], 1);
    assert_eq!(fields["claim"], "first");
    assert_eq!(fields["answer"], "replied");
    assert!(fields["ms"].is_u64());
    assert_eq!(fields["dedup"].as_str().unwrap().len(), 8);
    assert_eq!(line["span"]["account"], "safe");

    let mut quiet = config("ack", "");
    quiet.log_access = false;
    let (captured, _guard) = capture(false);
    let app = TestApp::new(quiet, |b| b);
    deliver(&app, "safe", Mode::Safe, &text(1, "help"), "1").await;
    assert!(!captured.text().contains("message answered"));
}
