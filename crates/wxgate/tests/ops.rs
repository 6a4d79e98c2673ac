//! Day-one operations through the real router: simulator verdicts on refusals, the
//! per-account handler cap under a burst, `allow_ips`, and an in-process reload. (The log
//! line and what logs must never contain: `tests/logs.rs`.)

mod fake_wechat;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tower::ServiceExt;
use wechat_proto::{Inbound, Reply};
use wxgate::config::Mode;
use wxgate::handler::{HandlerContext, HandlerError};
use wxgate::sim::wechat::{SignedRequest, Verdict};
use wxgate::store::InboxQuery;

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
    assert_eq!(before.endpoint.ciphers().count(), 2);
    assert_eq!(
        app.gateway
            .account("safe")
            .unwrap()
            .endpoint
            .ciphers()
            .count(),
        1
    );
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

#[tokio::test]
async fn ips_fetches_wechats_callback_addresses_as_an_allow_ips_line() {
    let fake = fake_wechat::FakeServer::start().await;
    let config = fake_wechat::config(
        "[store]\nbackend = \"memory\"",
        "ack",
        &format!(
            "app_secret = \"{}\"\napi_base = \"{}\"",
            fake_wechat::APP_SECRET,
            fake.base
        ),
        "",
    );
    let list = wxgate::ips::fetch(&wxgate::forward::http_client(), &config.accounts[0])
        .await
        .unwrap();
    assert_eq!(list.ip_list, fake_wechat::CALLBACK_IPS);
    // The printed line is valid config as it stands.
    let text = format!(
        "{}[[accounts]]\nname = \"x\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\n",
        list.to_toml()
    );
    let config = wxgate::Config::from_toml(&text, &Default::default()).unwrap();
    assert_eq!(config.accounts[0].allow_ips.len(), 3);
    // Without an AppSecret there is no token to ask with.
    let plain = fake_wechat::config("[store]\nbackend = \"memory\"", "ack", "", "");
    let error = wxgate::ips::fetch(&wxgate::forward::http_client(), &plain.accounts[0])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no app_secret"), "{error}");
}
