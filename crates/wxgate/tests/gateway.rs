//! End-to-end tests of the gateway through its real router (`oneshot`, no socket), with
//! requests built by the simulator's WeChat side from `wechat-proto`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use support::*;
use wechat_proto::{Event, Kind, Reply};
use wxgate::config::Mode;
use wxgate::handler::{HandlerError, Matcher};
use wxgate::sim::wechat::{Unusable, Verdict};
use wxgate::store::{AnswerKind, InboxQuery};

const MODES: [(&str, Mode); 3] = [
    ("plain", Mode::Plaintext),
    ("compat", Mode::Compatible),
    ("safe", Mode::Safe),
];

fn every_kind() -> Vec<Kind> {
    vec![
        Kind::Text {
            content: "  你好 🌏\nline two ]]> <tag> &amp;".to_owned(),
        },
        Kind::Image {
            pic_url: "http://mmbiz.qpic.cn/x".to_owned(),
            media_id: "media".to_owned(),
        },
        Kind::Voice {
            media_id: "m".to_owned(),
            format: "amr".to_owned(),
            recognition: Some("语音识别".to_owned()),
            media_id_16k: None,
        },
        Kind::Voice {
            media_id: "m".to_owned(),
            format: "amr".to_owned(),
            recognition: None,
            media_id_16k: None,
        },
        Kind::Video {
            media_id: "m".to_owned(),
            thumb_media_id: "t".to_owned(),
        },
        Kind::ShortVideo {
            media_id: "m".to_owned(),
            thumb_media_id: "t".to_owned(),
        },
        Kind::Location {
            location_x: 23.134521,
            location_y: 113.358803,
            scale: Some(20.0),
            label: " 广州市海珠区".to_owned(),
        },
        Kind::Link {
            title: "t".to_owned(),
            description: "d".to_owned(),
            url: "https://example.com".to_owned(),
        },
        Kind::Event(Event::Subscribe {
            event_key: Some("qrscene_123".to_owned()),
            scene: Some("123".to_owned()),
            ticket: Some("tk".to_owned()),
        }),
        Kind::Event(Event::Click {
            event_key: "MENU_1".to_owned(),
        }),
    ]
}

#[tokio::test]
async fn every_kind_in_every_mode_gets_the_echo() {
    let config = config("ack", "");
    // An echo handler in code behind the rules, for every account.
    let echo = |_ctx, inbound| async move { Ok(Some(wxgate::handler::rules::echo(&inbound))) };
    let app = TestApp::new(config, |b| {
        b.handler("plain", echo)
            .handler("compat", echo)
            .handler("safe", echo)
    });
    let mut id = 1;
    for (account, mode) in MODES {
        for kind in every_kind() {
            id += 1;
            let inbound = message(id, kind.clone());
            let (status, verdict) = deliver(&app, account, mode, &inbound, "n1").await;
            assert_eq!(status, StatusCode::OK, "{account} {kind:?}");
            let expected = wxgate::handler::rules::echo(&inbound);
            assert_eq!(verdict, Verdict::Reply(expected), "{account} {kind:?}");
        }
    }
    let entries = app
        .store
        .list(&InboxQuery {
            limit: 1000,
            ..InboxQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 3 * every_kind().len());
}

#[tokio::test]
async fn url_verification_echoes_exactly_or_refuses() {
    let app = TestApp::new(config("ack", ""), |b| b);
    let side = side(Mode::Safe);
    let good = side.verification(now(), "12345", "7346 echo+é");
    let (status, body) = app.send("GET", "/wx/safe", &good.query, "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "7346 echo+é"));

    let wrong = support::side_with(Mode::Safe, KEY, APP_ID);
    let mut forged = wrong.verification(now(), "12345", "x");
    forged.query = forged.query.replace("nonce=12345", "nonce=12346");
    let (status, body) = app.send("GET", "/wx/safe", &forged.query, "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _) = app.send("GET", "/wx/safe", "", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.send("GET", "/wx/nope", &good.query, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rejections_get_the_right_status_and_never_reach_the_handler() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let counting = move |_ctx, _inbound| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
    };
    let app = TestApp::new(config("ack", ""), |b| {
        b.handler("safe", counting.clone())
            .handler("plain", counting)
    });
    let safe = side(Mode::Safe);
    let inbound = text(1, "hi");
    let good = safe.message(&inbound, now(), "n", [7; 16]);

    let check = |name: &'static str, status: StatusCode, expected: StatusCode| {
        assert_eq!(status, expected, "{name}");
    };
    // Unknown account.
    check(
        "unknown account",
        app.post("nope", &good).await.0,
        StatusCode::NOT_FOUND,
    );
    // Wrong signature.
    let mut bad = good.clone();
    bad.query = bad.query.replacen("signature=", "signature=0", 1);
    check(
        "bad signature",
        app.post("safe", &bad).await.0,
        StatusCode::UNAUTHORIZED,
    );
    // Stale timestamp, correctly signed.
    let stale = safe.message(&inbound, now() - 301, "n", [7; 16]);
    check(
        "stale timestamp",
        app.post("safe", &stale).await.0,
        StatusCode::UNAUTHORIZED,
    );
    // A plaintext request cannot downgrade a safe-mode account.
    let plain = side(Mode::Plaintext).message(&inbound, now(), "n", [7; 16]);
    check(
        "downgrade",
        app.post("safe", &plain).await.0,
        StatusCode::UNAUTHORIZED,
    );
    // msg_signature over a different Encrypt.
    let mut swapped = good.clone();
    swapped.body = safe.message(&text(2, "other"), now(), "n", [7; 16]).body;
    check(
        "msg_signature",
        app.post("safe", &swapped).await.0,
        StatusCode::UNAUTHORIZED,
    );
    // Encrypted for another AppID.
    let other = side_with(Mode::Safe, KEY, "wx_other_app").message(&inbound, now(), "n", [7; 16]);
    check(
        "wrong appid",
        app.post("safe", &other).await.0,
        StatusCode::UNAUTHORIZED,
    );
    // Encrypted with an unknown key.
    let unknown_key = side_with(
        Mode::Safe,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        APP_ID,
    )
    .message(&inbound, now(), "n", [7; 16]);
    check(
        "unknown key",
        app.post("safe", &unknown_key).await.0,
        StatusCode::BAD_REQUEST,
    );
    // Missing parameters.
    check(
        "no query",
        app.send("POST", "/wx/plain", "", "<xml/>").await.0,
        StatusCode::UNAUTHORIZED,
    );
    // Malformed XML and DOCTYPE, correctly signed.
    let plain_side = side(Mode::Plaintext);
    for (name, body) in [
        ("malformed", "<xml><ToUserName>"),
        ("doctype", "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><ToUserName>&x;</ToUserName></xml>"),
        ("missing fields", "<xml><MsgType>text</MsgType></xml>"),
    ] {
        let request = plain_side.message_xml(body, now(), "n", [0; 16]);
        check(name, app.post("plain", &request).await.0, StatusCode::BAD_REQUEST);
    }
    // Body over the cap.
    let huge = "x".repeat(65 * 1024);
    let request = plain_side.message_xml(&huge, now(), "n", [0; 16]);
    check(
        "too large",
        app.post("plain", &request).await.0,
        StatusCode::PAYLOAD_TOO_LARGE,
    );

    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "no rejected request reached the handler"
    );
    // And the good request goes through.
    assert_eq!(
        app.post("safe", &good).await,
        (StatusCode::OK, "success".to_owned())
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let metrics = app.send("GET", "/metrics", "", "").await.1;
    assert!(
        metrics.contains("wxgate_crypto_failures_total{account=\"safe\",code=\"-40001\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("code=\"-40005\""), "{metrics}");
}

#[tokio::test]
async fn previous_key_is_accepted_during_rotation() {
    let app = TestApp::new(config("ack", ""), |b| b);
    let old = side_with(Mode::Safe, OLD_KEY, APP_ID);
    let request = old.message(&text(5, "help"), now(), "n", [1; 16]);
    let (status, body) = app.post("safe", &request).await;
    assert_eq!(status, StatusCode::OK);
    // The reply is encrypted with the current key.
    let verdict = side(Mode::Safe).judge(200, body.as_bytes(), SENDER);
    assert_eq!(
        reply_text(&verdict),
        Some(format!("help for {SENDER}").as_str())
    );
}

#[tokio::test]
async fn a_retry_after_completion_gets_the_stored_reply_reencrypted() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let handler = move |_ctx, _inbound| {
        let counter = Arc::clone(&counter);
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Ok(Some(Reply::Text {
                content: format!("run {n}"),
            }))
        }
    };
    let app = TestApp::new(config("ack", ""), |b| b.handler("safe", handler));
    let side = side(Mode::Safe);
    let inbound = text(77, "slow?");
    let first = side.message(&inbound, now(), "111", [1; 16]);
    let retry = side.message(&inbound, now(), "222", [2; 16]);
    let (_, body1) = app.post("safe", &first).await;
    let (_, body2) = app.post("safe", &retry).await;
    assert_ne!(body1, body2, "each answer is encrypted for its own request");
    assert!(body2.contains("<Nonce><![CDATA[222]]></Nonce>"), "{body2}");
    for body in [&body1, &body2] {
        assert_eq!(
            reply_text(&side.judge(200, body.as_bytes(), SENDER)),
            Some("run 0")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let entry = &app.store.list(&InboxQuery::default()).await.unwrap()[0];
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.last_answer, Some((AnswerKind::Replied, 2)));
}

/// WeChat's timing: attempt k starts at 5·(k-1) seconds and gives up after 5 s.
async fn wechat_attempts(
    app: &TestApp,
    account: &str,
    inbound: &wechat_proto::Inbound,
    attempts: u32,
) -> Vec<(u32, StatusCode, Verdict)> {
    let side = side(Mode::Safe);
    let mut tasks = Vec::new();
    for attempt in 1..=attempts {
        let request = side.message(
            inbound,
            now(),
            &format!("nonce{attempt}"),
            [attempt as u8; 16],
        );
        let router = app.router.clone();
        let side = side.clone();
        let account = account.to_owned();
        let sender = inbound.header.from_user_name.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5 * u64::from(attempt - 1))).await;
            let app = support::RouterOnly(router);
            let started = tokio::time::Instant::now();
            let (status, body) = app.post(&account, &request).await;
            // WeChat only listens for 5 s.
            let verdict = if started.elapsed() > Duration::from_secs(5) {
                Verdict::Unusable(Unusable::Timeout)
            } else {
                side.judge(status.as_u16(), body.as_bytes(), &sender)
            };
            (attempt, status, verdict)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn slow_handler(runs: Arc<AtomicUsize>, delay: Duration) -> impl wxgate::Handler + Clone {
    move |_ctx, _inbound| {
        let runs = Arc::clone(&runs);
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Some(Reply::Text {
                content: "slow answer".to_owned(),
            }))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn ride_retries_delivers_a_slow_reply_on_the_retry_and_runs_the_handler_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = TestApp::new(config("ride_retries", ""), |b| {
        b.handler(
            "safe",
            slow_handler(Arc::clone(&runs), Duration::from_secs(8)),
        )
    });
    let results = wechat_attempts(&app, "safe", &text(900, "slow"), 3).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one handler run for three deliveries"
    );
    // Attempt 1 is held past WeChat's timeout; attempt 2 (at 5 s) gets the reply at 8 s.
    assert_eq!(results[0].2, Verdict::Unusable(Unusable::Timeout));
    assert_eq!(reply_text(&results[1].2), Some("slow answer"));
    // Attempt 3 (sent at 10 s by this test even though WeChat would not) gets it too.
    assert_eq!(reply_text(&results[2].2), Some("slow answer"));
}

#[tokio::test(start_paused = true)]
async fn ack_answers_success_in_budget_and_records_the_late_reply() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = TestApp::new(config("ack", ""), |b| {
        b.handler(
            "safe",
            slow_handler(Arc::clone(&runs), Duration::from_secs(8)),
        )
    });
    let results = wechat_attempts(&app, "safe", &text(901, "slow"), 1).await;
    assert_eq!(results[0].2, Verdict::Acknowledged);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let entry = &app.store.list(&InboxQuery::default()).await.unwrap()[0];
    assert_eq!(entry.last_answer, Some((AnswerKind::Acked, 1)));
    let completion = entry.completion.clone().expect("late reply recorded");
    assert_eq!(
        completion.reply,
        Some(Reply::Text {
            content: "slow answer".to_owned()
        })
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn ride_retries_last_attempt_says_still_working_and_the_next_message_gets_the_reply() {
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = slow_handler(Arc::clone(&runs), Duration::from_secs(30));
    let app = TestApp::new(config("ride_retries", ""), |b| {
        b.handler(
            "safe",
            wxgate::Router::new()
                .route(Matcher::keyword("slow"), slow)
                .fallback(|_ctx, _inbound| async {
                    Ok(Some(Reply::Text {
                        content: "fast".to_owned(),
                    }))
                }),
        )
    });
    let results = wechat_attempts(&app, "safe", &text(902, "slow"), 3).await;
    assert_eq!(results[0].2, Verdict::Unusable(Unusable::Timeout));
    assert_eq!(results[1].2, Verdict::Unusable(Unusable::Timeout));
    assert_eq!(
        reply_text(&results[2].2),
        Some(wxgate::config::DEFAULT_STILL_WORKING_TEXT)
    );
    tokio::time::sleep(Duration::from_secs(40)).await;
    // The follower's next message gets the slow reply joined to its own.
    let (_, verdict) = deliver(&app, "safe", Mode::Safe, &text(903, "next"), "n").await;
    assert_eq!(reply_text(&verdict), Some("slow answer\n\nfast"));
    // Delivered once only.
    let (_, verdict) = deliver(&app, "safe", Mode::Safe, &text(904, "again"), "n").await;
    assert_eq!(reply_text(&verdict), Some("fast"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_or_panicking_handler_answers_success_and_is_recorded() {
    let app = TestApp::new(config("ack", ""), |b| {
        b.handler(
            "plain",
            wxgate::Router::new()
                .route(Matcher::keyword("panic"), |_ctx, _inbound| async {
                    panic!("boom")
                })
                .route(Matcher::keyword("fail"), |_ctx, _inbound| async {
                    Err(HandlerError::new("upstream down"))
                })
                .route(Matcher::keyword("long"), |_ctx, _inbound| async {
                    Ok(Some(Reply::Text {
                        content: "x".repeat(2049),
                    }))
                }),
        )
    });
    for (id, word, reason) in [
        (1, "panic", "handler panicked"),
        (2, "fail", "upstream down"),
        (3, "long", "2049"),
    ] {
        let (status, verdict) = deliver(&app, "plain", Mode::Plaintext, &text(id, word), "n").await;
        assert_eq!(
            (status, verdict),
            (StatusCode::OK, Verdict::Acknowledged),
            "{word}"
        );
        let entries = app.store.list(&InboxQuery::default()).await.unwrap();
        let error = entries[0]
            .completion
            .as_ref()
            .and_then(|c| c.error.clone())
            .unwrap_or_default();
        assert!(error.contains(reason), "{word}: {error}");
    }
    // The process is still serving.
    let (_, verdict) = deliver(&app, "plain", Mode::Plaintext, &text(4, "help"), "n").await;
    assert_eq!(
        reply_text(&verdict),
        Some(format!("help for {SENDER}").as_str())
    );
}

#[tokio::test]
async fn distinct_events_in_the_same_second_are_both_handled() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let handler = move |_ctx, _inbound| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
    };
    let app = TestApp::new(config("ack", ""), |b| b.handler("plain", handler));
    for key in ["A", "B", "A"] {
        let inbound = message(
            0,
            Kind::Event(Event::Click {
                event_key: key.to_owned(),
            }),
        );
        deliver(&app, "plain", Mode::Plaintext, &inbound, "n").await;
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the repeated identical event is a retry"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::new(config("ack", ""), |b| b);
    assert_eq!(
        app.send("GET", "/healthz", "", "").await,
        (StatusCode::OK, "ok".to_owned())
    );
    assert_eq!(app.send("GET", "/readyz", "", "").await.0, StatusCode::OK);
    deliver(&app, "plain", Mode::Plaintext, &text(1, "help"), "n").await;
    let metrics = app.send("GET", "/metrics", "", "").await.1;
    for name in [
        "wxgate_requests_total",
        "wxgate_request_duration_seconds_bucket",
        "wxgate_answers_total",
        "wxgate_handler_duration_seconds",
        "wxgate_inbox_messages 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
}
