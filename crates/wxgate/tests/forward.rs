//! The `forward` handler end to end: the gateway and a fake upstream on real sockets, with
//! WeChat's requests built by the simulator's WeChat side.

mod fake_wechat;
mod support;

use std::time::Duration;

use fake_wechat::{config, forward_table, serve, signature_is_valid, wechat_post, FakeServer};
use support::{now, side, text, TestApp, SENDER};
use wechat_proto::Reply;
use wxgate::config::Mode;
use wxgate::sim::wechat::Verdict;
use wxgate::store::{AnswerKind, InboxQuery};

const MEMORY: &str = "[store]\nbackend = \"memory\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_called_once_and_answers_a_retry_under_ride_retries() {
    let fake = FakeServer::start().await;
    fake.with(|f| f.upstream.delay = Duration::from_millis(6500));
    let config = config(MEMORY, "ride_retries", "", &forward_table(&fake.base, ""));
    let app = TestApp::new(config, |b| b);
    let base = serve(&app.gateway).await;
    let side = side(Mode::Plaintext);
    let inbound = text(1, "slow question");
    let request = side.message(&inbound, now(), "1", [1; 16]);

    // WeChat's timing: the first delivery is held past 5 s and WeChat gives up on it...
    assert_eq!(wechat_post(&base, &request).await, None);
    // ...then retries the same request, which gets the upstream's late reply passively.
    let (status, body) = wechat_post(&base, &request).await.expect("answered");
    assert_eq!(
        side.judge(status, body.as_bytes(), SENDER),
        Verdict::Reply(Reply::Text {
            content: "from upstream".to_owned()
        })
    );

    let calls = fake.with(|f| f.upstream_calls.clone());
    assert_eq!(calls.len(), 1, "one upstream call for every retry");
    let call = &calls[0];
    let key = format!("msg:{SENDER}:1");
    assert_eq!(call.headers["idempotency-key"], key.as_str());
    assert!(signature_is_valid(call), "the HMAC verifies");
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["account"], "oa");
    assert_eq!(body["dedup_key"], key.as_str());
    assert_eq!(body["message"]["type"], "text");
    assert_eq!(body["message"]["msg_id"], "1");
    assert_eq!(body["message"]["content"], "slow question");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_replies_of_every_kind_and_204_are_answered_passively() {
    let fake = FakeServer::start().await;
    let config = config(MEMORY, "ack", "", &forward_table(&fake.base, ""));
    let app = TestApp::new(config, |b| b);
    let side = side(Mode::Plaintext);
    let news = r#"{"type":"news","articles":[{"title":"T","description":"D","pic_url":"http://p","url":"http://u"}]}"#;
    let cases: [(u16, &str, Verdict); 4] = [
        (
            200,
            r#"{"type":"text","content":"hi"}"#,
            Verdict::Reply(Reply::Text {
                content: "hi".to_owned(),
            }),
        ),
        (
            200,
            r#"{"type":"image","media_id":"M"}"#,
            Verdict::Reply(Reply::Image {
                media_id: "M".to_owned(),
            }),
        ),
        (
            200,
            news,
            Verdict::Reply(serde_json::from_str(news).unwrap()),
        ),
        (204, "", Verdict::Acknowledged),
    ];
    for (i, (status, body, expected)) in cases.into_iter().enumerate() {
        fake.with(|f| {
            f.upstream.status = status;
            f.upstream.body = body.to_owned();
        });
        let inbound = text(100 + i as u64, "question");
        let request = side.message(&inbound, now(), "n", [2; 16]);
        let (http_status, answer) = app.post("oa", &request).await;
        assert_eq!(
            side.judge(http_status.as_u16(), answer.as_bytes(), SENDER),
            expected,
            "{body}"
        );
    }
    // Rules still come first: `help` never reaches the upstream.
    let calls = fake.with(|f| f.upstream_calls.len());
    let request = side.message(&text(200, "help"), now(), "h", [3; 16]);
    let (_, answer) = app.post("oa", &request).await;
    assert!(answer.contains("help"));
    assert_eq!(fake.with(|f| f.upstream_calls.len()), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hanging_or_garbage_upstreams_still_get_a_correct_answer_in_the_budget() {
    let fake = FakeServer::start().await;
    // A port nobody listens on: bind, note, close.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let side = side(Mode::Plaintext);
    // (what the upstream does: delay in ms, status, body — or nothing listening; the
    // reason recorded)
    type Behaviour = Option<(u64, u16, &'static str)>;
    let cases: [(Behaviour, &str); 5] = [
        (Some((0, 500, "oops")), "upstream answered HTTP 500"),
        (
            Some((0, 200, "<html>not json</html>")),
            "not a valid reply JSON",
        ),
        (
            Some((0, 200, r#"{"type":"hologram","content":"x"}"#)),
            "not a valid reply JSON",
        ),
        (Some((30_000, 200, "{}")), "did not answer within 1 s"),
        (None, "upstream unreachable after 3 tries"),
    ];
    for (i, (behaviour, reason)) in cases.into_iter().enumerate() {
        let forward = match behaviour {
            Some((delay, status, body)) => {
                fake.with(|f| {
                    f.upstream.delay = Duration::from_millis(delay);
                    f.upstream.status = status;
                    f.upstream.body = body.to_owned();
                });
                forward_table(&fake.base, "max_secs = 1")
            }
            None => format!("[accounts.forward]\nurl = \"http://{closed}/upstream\"\nmax_secs = 1"),
        };
        let app = TestApp::new(config(MEMORY, "ack", "", &forward), |b| b);
        let inbound = text(300 + i as u64, "question");
        let request = side.message(&inbound, now(), "f", [4; 16]);
        let started = tokio::time::Instant::now();
        let (status, answer) = app.post("oa", &request).await;
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "answered within the budget: {reason}"
        );
        assert_eq!(
            side.judge(status.as_u16(), answer.as_bytes(), SENDER),
            Verdict::Acknowledged,
            "{reason}"
        );
        // The failure is recorded with its reason once the handler ends.
        let key = wechat_proto::DedupKey::Message {
            from_user_name: SENDER.to_owned(),
            msg_id: 300 + i as u64,
        };
        let store_key = wxgate::store::StoreKey {
            account: "oa".to_owned(),
            dedup: key,
        };
        let completion = app
            .store
            .wait(&store_key, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("the handler ended");
        let error = completion.error.unwrap_or_default();
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
        let entries = app.store.list(&InboxQuery::default()).await.unwrap();
        assert!(matches!(
            entries[0].last_answer,
            Some((AnswerKind::Success | AnswerKind::Acked, 1))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_handler_wins_over_the_configured_upstream() {
    let fake = FakeServer::start().await;
    let config = config(MEMORY, "ack", "", &forward_table(&fake.base, ""));
    let app = TestApp::new(config, |b| {
        b.handler("oa", |_ctx, _inbound| async {
            Ok(Some(Reply::Text {
                content: "code".to_owned(),
            }))
        })
    });
    let side = side(Mode::Plaintext);
    let request = side.message(&text(400, "q"), now(), "c", [5; 16]);
    let (_, answer) = app.post("oa", &request).await;
    assert!(answer.contains("code"));
    assert_eq!(fake.with(|f| f.upstream_calls.len()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_rule_sends_its_messages_upstream_before_the_code_handler() {
    let fake = FakeServer::start().await;
    let rule = "[[accounts.rules]]\nkeyword = \"ask\"\nforward = true";
    let config = config(MEMORY, "ack", rule, &forward_table(&fake.base, ""));
    let app = TestApp::new(config, |b| {
        b.handler("oa", |_ctx, _inbound| async {
            Ok(Some(Reply::Text {
                content: "code".to_owned(),
            }))
        })
    });
    let side = side(Mode::Plaintext);
    let (_, answer) = app
        .post("oa", &side.message(&text(500, "q"), now(), "c", [5; 16]))
        .await;
    assert!(answer.contains("code"), "{answer}");
    assert_eq!(fake.with(|f| f.upstream_calls.len()), 0);
    app.post("oa", &side.message(&text(501, "ask"), now(), "d", [6; 16]))
        .await;
    assert_eq!(
        fake.with(|f| f.upstream_calls.len()),
        1,
        "the rule forwarded"
    );
}
