//! The `push` answer policy end to end: the gateway, a fake upstream and a fake of
//! WeChat's server API (tokens, customer-service send) on real sockets.

mod fake_wechat;
mod support;

use std::sync::Arc;
use std::time::Duration;

use fake_wechat::{config, forward_table, serve, wechat_post, FakeServer, APP_SECRET};
use support::{now, side, text, TestApp, APP_ID, SENDER};
use wechat_proto::DedupKey;
use wxgate::config::{Mode, Secret, TokenEndpoint};
use wxgate::push::{DeliveryState, RetryPolicy, TokenCache};

use wxgate::sim::wechat::Verdict;
use wxgate::store::StoreKey;

const MEMORY: &str = "[store]\nbackend = \"memory\"";

fn push_keys(fake: &FakeServer) -> String {
    format!(
        "app_secret = \"{APP_SECRET}\"\napi_base = \"{}\"",
        fake.base
    )
}

fn key(msg_id: u64) -> StoreKey {
    StoreKey {
        account: "oa".to_owned(),
        dedup: DedupKey::Message {
            from_user_name: SENDER.to_owned(),
            msg_id,
        },
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_tries: 4,
    }
}

/// Waits until the delivery of `msg_id` is no longer pending; returns its state.
async fn settled(app: &TestApp, msg_id: u64) -> DeliveryState {
    let outbox = Arc::clone(app.gateway.store());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match outbox.state(&key(msg_id)).await.unwrap() {
            Some(DeliveryState::Pending) | None => {}
            Some(state) => return state,
        }
        assert!(tokio::time::Instant::now() < deadline, "delivery settles");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends message `msg_id` as WeChat would and expects `success` within the budget.
async fn deliver_acked(base: &str, msg_id: u64) {
    let side = side(Mode::Plaintext);
    let request = side.message(&text(msg_id, "question"), now(), "p", [7; 16]);
    let started = tokio::time::Instant::now();
    let (status, body) = wechat_post(base, &request).await.expect("answered");
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(
        side.judge(status, body.as_bytes(), SENDER),
        Verdict::Acknowledged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_called_once_and_its_reply_pushed_once() {
    let fake = FakeServer::start().await;
    fake.with(|f| f.upstream.delay = Duration::from_millis(1500));
    let config = config(
        MEMORY,
        "push",
        &push_keys(&fake),
        &forward_table(&fake.base, ""),
    );
    let app = TestApp::new(config, |b| b);
    let base = serve(&app.gateway).await;
    deliver_acked(&base, 1).await;
    // A retry anyway (as if the first answer were lost): it joins the same work.
    deliver_acked(&base, 1).await;
    assert_eq!(settled(&app, 1).await, DeliveryState::Sent);
    fake.with(|f| {
        assert_eq!(f.upstream_calls.len(), 1, "one upstream call");
        assert_eq!(f.send_attempts.len(), 1, "one customer-service send");
        assert_eq!(
            f.sent,
            [serde_json::json!({
                "touser": SENDER,
                "msgtype": "text",
                "text": {"content": "from upstream"}
            })]
        );
        // The default endpoint is stable_token.
        assert_eq!(f.token_fetches, [false]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_ahead_of_expiry_and_after_40001() {
    let fake = FakeServer::start().await;
    fake.with(|f| {
        f.upstream.delay = Duration::from_millis(400);
        f.expires_in = 1;
    });
    let config = config(
        MEMORY,
        "push",
        &push_keys(&fake),
        &forward_table(&fake.base, ""),
    );
    let app = TestApp::new(config, |b| b.push_retry(fast_retries()));
    let base = serve(&app.gateway).await;
    deliver_acked(&base, 1).await;
    assert_eq!(settled(&app, 1).await, DeliveryState::Sent);
    // The token lives one second; the cache replaces it before WeChat would say 42001.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    deliver_acked(&base, 2).await;
    assert_eq!(settled(&app, 2).await, DeliveryState::Sent);
    // WeChat invalidates the token early (another fetcher, a reset): 40001, then a forced
    // refresh and the same message sent once.
    fake.with(|f| {
        f.expires_in = 7200;
        f.tokens.clear();
    });
    deliver_acked(&base, 3).await;
    assert_eq!(settled(&app, 3).await, DeliveryState::Sent);
    fake.with(|f| {
        let codes: Vec<(&str, i64)> = f
            .send_attempts
            .iter()
            .map(|(t, c)| (t.as_str(), *c))
            .collect();
        assert_eq!(
            codes,
            [
                ("TOKEN-1", 0),
                ("TOKEN-2", 0),
                ("TOKEN-2", 40001),
                ("TOKEN-3", 0)
            ]
        );
        assert_eq!(f.token_fetches, [false, false, true]);
        assert_eq!(f.sent.len(), 3);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_callers_cause_one_token_fetch() {
    let fake = FakeServer::start().await;
    fake.with(|f| f.token_delay = Duration::from_millis(300));
    let cache = Arc::new(TokenCache::new(
        reqwest::Client::new(),
        &fake.base,
        APP_ID,
        Secret::new(APP_SECRET),
        TokenEndpoint::Token,
    ));
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get().await.unwrap() })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().expose(), "TOKEN-1");
    }
    assert_eq!(fake.with(|f| f.token_fetches.len()), 1);
    // A wrong secret is a typed error that does not show the secret.
    let wrong = TokenCache::new(
        reqwest::Client::new(),
        &fake.base,
        APP_ID,
        Secret::new("wrong-secret"),
        TokenEndpoint::Token,
    );
    let error = wrong.get().await.unwrap_err().to_string();
    assert!(
        error.contains("40125") && !error.contains("wrong-secret"),
        "{error}"
    );
    assert!(!format!("{wrong:?}").contains("wrong-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_errors_and_undeliverable_replies_are_recorded_transient_ones_retried() {
    let fake = FakeServer::start().await;
    fake.with(|f| f.upstream.delay = Duration::from_millis(400));
    let config = config(
        MEMORY,
        "push",
        &push_keys(&fake),
        &forward_table(&fake.base, ""),
    );
    let app = TestApp::new(config, |b| b.push_retry(fast_retries()));
    let base = serve(&app.gateway).await;

    // Out of the 48-hour window, and over quota: final, one try each.
    for (msg_id, code) in [(1, 45015), (2, 45047), (3, 43004)] {
        fake.with(|f| f.send_errors.push_back(code));
        deliver_acked(&base, msg_id).await;
        match settled(&app, msg_id).await {
            DeliveryState::Failed(reason) => {
                assert!(reason.contains(&code.to_string()), "{reason}")
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }
    assert_eq!(fake.with(|f| f.send_attempts.len()), 3);

    // System busy twice, then accepted: three tries, one message.
    fake.with(|f| f.send_errors.extend([-1, -1]));
    deliver_acked(&base, 4).await;
    assert_eq!(settled(&app, 4).await, DeliveryState::Sent);
    assert_eq!(fake.with(|f| f.send_attempts.len()), 6);
    assert_eq!(fake.with(|f| f.sent.len()), 1);

    // A reply the customer-service API cannot carry.
    fake.with(|f| f.upstream.body = r#"{"type":"transfer_customer_service"}"#.to_owned());
    deliver_acked(&base, 5).await;
    match settled(&app, 5).await {
        DeliveryState::Failed(reason) => assert!(reason.contains("cannot be sent"), "{reason}"),
        other => panic!("expected undeliverable, got {other:?}"),
    }
    // No reply at all: nothing to send.
    fake.with(|f| {
        f.upstream.status = 204;
        f.upstream.body = String::new();
    });
    deliver_acked(&base, 6).await;
    assert_eq!(settled(&app, 6).await, DeliveryState::NothingToSend);
    assert_eq!(fake.with(|f| f.send_attempts.len()), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_pending_push_delivers_it_exactly_once() {
    let fake = FakeServer::start().await;
    fake.with(|f| {
        f.upstream.delay = Duration::from_millis(400);
        // WeChat's API is down (system busy) during the first life.
        f.always_error = Some(-1);
    });
    let dir = tempfile::tempdir().unwrap();
    let store_table = format!(
        "[store]\nbackend = \"sqlite\"\npath = \"{}\"",
        dir.path().join("wxgate.db").display()
    );
    let mut config = config(
        &store_table,
        "push",
        &push_keys(&fake),
        &forward_table(&fake.base, ""),
    );
    config.shutdown_grace = Duration::from_millis(200);
    let slow_retries = RetryPolicy {
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
        max_tries: 1000,
    };

    // First life: the message is acked, its reply computed, the send keeps failing. It
    // runs on its own runtime, so that ending it is like the process going away: every
    // task (the server's included) is dropped, and with them the store and its file lock.
    let first_life = {
        let (config, fake) = (config.clone(), fake.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let store = wxgate::store::open(&config.store, now() * 1000)
                    .await
                    .unwrap();
                let app =
                    TestApp::with_store(config.clone(), store, |b| b.push_retry(slow_retries));
                let base = serve(&app.gateway).await;
                deliver_acked(&base, 1).await;
                fake.until(Duration::from_secs(5), |f| f.send_attempts.len() >= 2)
                    .await;
                app.gateway.shutdown(config.shutdown_grace).await.unwrap();
                assert_eq!(
                    app.gateway.store().state(&key(1)).await.unwrap(),
                    Some(DeliveryState::Pending)
                );
            });
        })
    };
    tokio::task::spawn_blocking(move || first_life.join())
        .await
        .unwrap()
        .expect("the first life ran");
    assert_eq!(fake.with(|f| f.sent.len()), 0);

    // Second life on the same file, WeChat's API back: the pending delivery is resumed
    // and sent once, without running the upstream again.
    fake.with(|f| f.always_error = None);
    let store = wxgate::store::open(&config.store, now() * 1000)
        .await
        .unwrap();
    let app = TestApp::with_store(config.clone(), store, |b| b.push_retry(slow_retries));
    assert_eq!(settled(&app, 1).await, DeliveryState::Sent);
    // A late retry of the message from WeChat gets `success`, not the reply a second time.
    let base = serve(&app.gateway).await;
    let side = side(Mode::Plaintext);
    let request = side.message(&text(1, "question"), now(), "p", [7; 16]);
    let (status, body) = wechat_post(&base, &request).await.expect("answered");
    assert_eq!(
        side.judge(status, body.as_bytes(), SENDER),
        Verdict::Acknowledged
    );
    app.gateway.shutdown(Duration::from_secs(1)).await.unwrap();
    fake.with(|f| {
        assert_eq!(f.sent.len(), 1, "delivered exactly once");
        assert_eq!(f.upstream_calls.len(), 1, "the upstream ran once");
    });
}
