//! Day-one operations through the real router: the per-message log line and what logs
//! must never contain, refusal diagnostics, the per-account handler cap under a burst,
//! `allow_ips`, and an in-process reload.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;
use wechat_proto::{Event, Inbound, Kind, Reply};
use wxgate::config::Mode;
use wxgate::handler::{HandlerContext, HandlerError};
use wxgate::sim::wechat::{SignedRequest, Verdict};
use wxgate::store::InboxQuery;

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

fn ops_config() -> wxgate::Config {
    let fwd = format!(
        "[[accounts]]\nname = \"fwd\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\npolicy = \"push\"\napp_secret = \"{APP_SECRET}\"\napi_base = \"http://127.0.0.1:9\"\n[accounts.forward]\nurl = \"http://127.0.0.1:9/upstream\"\nsecret = \"{FORWARD_SECRET}\"\nmax_secs = 1\n"
    );
    config("ack", &fwd)
}

#[tokio::test]
async fn logs_carry_one_line_per_message_and_never_a_secret_or_an_openid() {
    let (captured, _guard) = capture(false);
    let app = TestApp::new(ops_config(), |b| b);
    traffic(&app).await;
    // Let the failing forward and the push worker finish their logging.
    app.gateway.shutdown(Duration::from_secs(15)).await.unwrap();
    let logs = captured.text();

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
    // 6 messages, 1 retry, 1 event, 1 forwarded: one line per attempt.
    assert_eq!(lines.len(), 9, "{logs}");
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

#[tokio::test]
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

#[tokio::test]
async fn simulator_verdicts_explain_refusals() {
    let app = TestApp::new(config("ack", ""), |b| b);
    let mut wrong = side(Mode::Safe);
    wrong.token = wechat_proto::Token::new("not-the-token").unwrap();
    let cases: [(&str, SignedRequest, &str); 2] = [
        (
            "safe",
            wrong.message(&text(1, "x"), now(), "1", [0; 16]),
            "check --token",
        ),
        (
            "nobody",
            side(Mode::Safe).message(&text(1, "x"), now(), "1", [0; 16]),
            "account path",
        ),
    ];
    for (account, request, hint) in cases {
        let (status, body) = app.post(account, &request).await;
        let verdict = wrong.judge(status.as_u16(), body.as_bytes(), SENDER);
        let Verdict::Unusable(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(why.to_string().contains(hint), "{why}");
    }
}

#[tokio::test(start_paused = true)]
async fn past_the_handler_cap_every_message_is_recorded_and_answered_in_time() {
    let extra = format!(
        "[[accounts]]\nname = \"capped\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\nmax_concurrent_handlers = 2\n"
    );
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    let app = TestApp::new(config("ack", &extra), move |b| {
        b.handler("capped", move |_: HandlerContext, _: Inbound| {
            let (running, peak) = (Arc::clone(&r), Arc::clone(&p));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(Some(Reply::Text {
                    content: "done".into(),
                }))
            }
        })
    });
    let router = RouterOnly(app.router.clone());
    let started = tokio::time::Instant::now();
    let burst = (0..20u64).map(|id| {
        let request = side(Mode::Plaintext).message(&text(100 + id, "go"), now(), "1", [0; 16]);
        let router = &router;
        async move {
            let (status, body) = router.post("capped", &request).await;
            (status, body, started.elapsed())
        }
    });
    let answers = futures::future::join_all(burst).await;
    let budget = wxgate::config::DEFAULT_BUDGET;
    for (status, body, elapsed) in &answers {
        assert_eq!(*status, StatusCode::OK);
        // The first two replied within the budget; the rest were acknowledged at it.
        assert!(body == "success" || body.contains("done"), "{body}");
        assert!(*elapsed <= budget, "answered after {elapsed:?}");
    }
    // Every message is in the inbox, and every handler ran, two at a time.
    app.gateway.shutdown(Duration::from_secs(60)).await.unwrap();
    let recorded = app
        .store
        .list(&InboxQuery {
            account: Some("capped".into()),
            limit: 100,
            ..InboxQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(recorded.len(), 20);
    for entry in &recorded {
        let completion = entry.completion.as_ref().expect("the handler ran");
        assert_eq!(
            completion.reply,
            Some(Reply::Text {
                content: "done".into()
            })
        );
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

async fn post_from(
    app: &TestApp,
    peer: Option<&str>,
    forwarded: Option<&str>,
    request: &SignedRequest,
) -> StatusCode {
    let mut http = Request::builder()
        .method("POST")
        .uri(format!("/wx/plain?{}", request.query));
    if let Some(forwarded) = forwarded {
        http = http.header("x-forwarded-for", forwarded);
    }
    let mut http = http.body(Body::from(request.body.clone())).unwrap();
    if let Some(peer) = peer {
        let ip: std::net::IpAddr = peer.parse().unwrap();
        let addr = SocketAddr::new(ip, 40000);
        http.extensions_mut().insert(ConnectInfo(addr));
    }
    let response = app.router.clone().oneshot(http).await.unwrap();
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn allow_ips_admits_only_listed_networks_through_trusted_proxies() {
    let mut config = config("ack", "");
    let global = wxgate::Config::from_toml(
        &format!(
            "allow_ips = [\"101.226.103.0/25\", \"2001:db8::1\"]\ntrusted_proxies = [\"127.0.0.1\"]\n[[accounts]]\nname = \"x\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\n"
        ),
        &Default::default(),
    )
    .unwrap();
    config.trusted_proxies = global.trusted_proxies.clone();
    config.accounts[0].allow_ips = global.accounts[0].allow_ips.clone();
    let app = TestApp::new(config, |b| b);
    let cases = [
        (Some("101.226.103.5"), None, StatusCode::OK),
        (Some("2001:db8::1"), None, StatusCode::OK),
        (Some("8.8.8.8"), None, StatusCode::FORBIDDEN),
        // A client cannot claim an address unless its peer is a trusted proxy.
        (
            Some("8.8.8.8"),
            Some("101.226.103.5"),
            StatusCode::FORBIDDEN,
        ),
        (Some("127.0.0.1"), Some("101.226.103.5"), StatusCode::OK),
        (Some("127.0.0.1"), Some("8.8.8.8"), StatusCode::FORBIDDEN),
        // Without a known peer an account with allow_ips refuses.
        (None, None, StatusCode::FORBIDDEN),
    ];
    for (i, (peer, forwarded, expected)) in cases.into_iter().enumerate() {
        let request = side(Mode::Plaintext).message(&text(i as u64, "help"), now(), "1", [0; 16]);
        assert_eq!(
            post_from(&app, peer, forwarded, &request).await,
            expected,
            "{peer:?} {forwarded:?}"
        );
    }
    // Accounts without allow_ips take any address.
    let request = side(Mode::Safe).message(&text(99, "help"), now(), "1", [0; 16]);
    assert_eq!(app.post("safe", &request).await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_reload_swaps_accounts_while_requests_in_flight_keep_theirs() {
    let app = TestApp::new(config("ack", ""), |b| b);
    // Rotate the safe account's key, drop compat, add a new account.
    let mut next = config("ack", &format!(
        "[[accounts]]\nname = \"new\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\n[[accounts.rules]]\necho = true\n"
    ));
    next.accounts.retain(|a| a.name != "compat");
    let safe = next.accounts.iter_mut().find(|a| a.name == "safe").unwrap();
    safe.previous_aes_key = None;
    safe.aes_key = Some(wechat_proto::AesKey::parse(OLD_KEY).unwrap());
    next.listen = "127.0.0.1:1".parse().unwrap();
    let before = app.gateway.account("safe").unwrap();
    let report = app.gateway.reload(next).unwrap();
    assert_eq!(report.added, ["new"]);
    assert_eq!(report.removed, ["compat"]);
    assert_eq!(report.changed, ["safe"]);
    assert_eq!(report.needs_restart, ["listen"]);
    // The request that loaded the old account still holds it.
    assert_eq!(before.ciphers.len(), 2);
    assert_eq!(app.gateway.account("safe").unwrap().ciphers.len(), 1);
    // New traffic sees the new config.
    let (status, verdict) = deliver(&app, "new", Mode::Plaintext, &text(1, "hi"), "1").await;
    assert_eq!((status, reply_text(&verdict)), (StatusCode::OK, Some("hi")));
    let (status, _) = deliver(&app, "compat", Mode::Compatible, &text(2, "hi"), "2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The current key is the rotated one: the old current key no longer decrypts.
    let (status, _) = deliver(&app, "safe", Mode::Safe, &text(3, "help"), "3").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let request =
        side_with(Mode::Safe, OLD_KEY, APP_ID).message(&text(4, "help"), now(), "4", [0; 16]);
    assert_eq!(app.post("safe", &request).await.0, StatusCode::OK);
    // The listen address in force is still the one the server bound.
    assert_ne!(app.gateway.config().listen.port(), 1);
}
