//! The simulator proven end to end: against the real gateway on a real socket
//! (127.0.0.1:0, memory store), and against small deliberately broken servers, so that
//! every verdict and the retry behaviour are shown to be what WeChat would do.
//!
//! Timeouts are shortened (150 ms instead of WeChat's 5 s) so that the slow servers cost
//! little; nothing sleeps to wait for anything.

mod sim_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use sim_support::*;
use wechat_proto::Reply;
use wxgate::config::Mode;
use wxgate::sim::cli::{run, SimCommand};
use wxgate::sim::load::{LoadMix, LoadOptions, LoadTarget, RequestPool};
use wxgate::sim::messages::{inbound, mixed_kind};
use wxgate::sim::send::{AttemptResult, RetryPolicy, Transport};
use wxgate::sim::storm::{plan, StormOptions};
use wxgate::sim::wechat::{Unusable, Verdict};
use wxgate::store::memory::MemoryStore;
use wxgate::store::{Completion, InboxQuery, NewMessage, Store, StoreKey};
use wxgate::tools::{decrypt, inbox, DecryptArgs, InboxArgs, FOLLOW_INTERVAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_in_every_mode_gets_the_gateways_echo() {
    let gateway = gateway().await;
    let kinds: Vec<(Vec<&str>, &str)> = vec![
        (vec!["text", "你好 ]]> <b>"], "你好 ]]> <b>"),
        (vec!["image"], "收到一张图片"),
        (vec!["voice", "--recognition", "语音"], "你说：语音"),
        (vec!["voice"], "收到一条语音（amr）"),
        (vec!["video"], "收到一段视频"),
        (vec!["shortvideo"], "收到一段小视频"),
        (
            vec!["location", "--latitude", "-33.5", "--label", "悉尼"],
            "你的位置：悉尼（-33.5, 113.358803）",
        ),
        (
            vec!["link", "https://example.com/a", "--title", "标题"],
            "收到链接：标题 https://example.com/a",
        ),
        (vec!["subscribe"], "欢迎关注！发送任意文字，我会原样回复。"),
        (
            vec!["subscribe", "--scene", "42"],
            "欢迎关注！发送任意文字，我会原样回复。",
        ),
        (vec!["unsubscribe"], "收到事件：unsubscribe"),
        (vec!["scan", "42"], "收到事件：SCAN"),
        (vec!["location-event"], "收到事件：LOCATION"),
        (vec!["click", "MENU_1"], "收到事件：CLICK"),
        (vec!["view", "https://example.com/menu"], "收到事件：VIEW"),
    ];
    for mode in ["plaintext", "compatible", "safe"] {
        for (kind, expected) in &kinds {
            let mut args = vec!["send".to_owned()];
            args.extend(account_flags(&gateway, mode));
            args.extend(kind.iter().map(|s| (*s).to_owned()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, report) = cli(&args).await;
            assert!(ok, "{mode} {kind:?}: {report:#}");
            assert_eq!(report["outcome"]["verdict"], "reply", "{mode} {kind:?}");
            assert_eq!(
                report["outcome"]["reply"]["content"], *expected,
                "{mode} {kind:?}"
            );
            assert_eq!(report["attempts"].as_array().unwrap().len(), 1);
            let encrypted = mode != "plaintext";
            assert_eq!(report["request"]["encrypted"], encrypted, "{mode}");
            if mode == "safe" {
                let body = report["request"]["body"].as_str().unwrap();
                assert!(
                    body.contains("<Encrypt>") && !body.contains("MsgType"),
                    "{body}"
                );
                assert!(report["attempts"][0]["decrypted"]
                    .as_str()
                    .unwrap()
                    .contains("<Content>"));
            }
        }
    }
    let stored = gateway
        .store
        .list(&InboxQuery {
            limit: 1000,
            ..InboxQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        3 * kinds.len(),
        "every send is a distinct message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_xml_is_sent_as_is() {
    let gateway = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event.xml");
    std::fs::write(
        &path,
        format!("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{SENDER}]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[brand_new_event]]></Event><Extra>1</Extra></xml>"),
    )
    .unwrap();
    let url = format!("{}/wx/safe", gateway.base);
    let path = path.to_str().unwrap();
    let (ok, report) = cli(&[
        "send",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--app-id",
        APP_ID,
        "--aes-key",
        KEY,
        "--xml",
        path,
    ])
    .await;
    assert!(ok, "{report:#}");
    assert_eq!(report["request"]["mode"], "safe");
    assert_eq!(
        report["outcome"]["reply"]["content"],
        "收到事件：brand_new_event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_matches_only_with_the_right_token() {
    let gateway = gateway().await;
    let url = format!("{}/wx/safe", gateway.base);
    let (ok, report) = cli(&[
        "verify",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--echostr",
        "hello 你好",
    ])
    .await;
    assert!(ok, "{report:#}");
    assert_eq!(report["response"], "hello 你好");
    let (ok, report) = cli(&["verify", "--url", &url, "--token", "wrong"]).await;
    assert!(!ok);
    assert_eq!(report["status"], 401);
    assert!(report["verdict"].as_str().unwrap().starts_with("FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_errors_not_panics() {
    let gateway = gateway().await;
    let url = format!("{}/wx/safe", gateway.base);
    let attempts: [&[&str]; 6] = [
        &[
            "send", "--url", &url, "--token", TOKEN, "--mode", "safe", "text", "x",
        ],
        &[
            "send",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--aes-key",
            KEY,
            "text",
            "x",
        ],
        &[
            "send",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--app-id",
            APP_ID,
            "--aes-key",
            "short",
            "text",
            "x",
        ],
        &["send", "--url", &url, "--token", "has space", "text", "x"],
        &["send", "--url", &url, "--token", TOKEN],
        &["send", "--url", "ftp://x", "--token", TOKEN, "text", "x"],
    ];
    for args in attempts {
        let command = {
            #[derive(Parser)]
            struct Sim {
                #[command(subcommand)]
                command: SimCommand,
            }
            let argv: Vec<&str> = std::iter::once("sim").chain(args.iter().copied()).collect();
            Sim::try_parse_from(argv).unwrap().command
        };
        let result = tokio::task::spawn_blocking(move || {
            run(command, &mut Vec::new(), &mut std::io::sink())
        })
        .await
        .unwrap();
        let error = result.expect_err("refused");
        assert!(!error.to_string().is_empty(), "{args:?}");
    }
}

/// (server behaviour, the account's mode, the verdict, the attempts WeChat makes).
const VERDICTS: [(&str, Mode, &str, usize); 15] = [
    ("success", Mode::Safe, "acknowledged", 1),
    ("empty", Mode::Safe, "acknowledged", 1),
    ("text-reply", Mode::Plaintext, "reply: hello", 1),
    ("text-reply", Mode::Compatible, "reply: hello", 1),
    ("encrypted-reply", Mode::Safe, "reply: hello", 1),
    ("encrypted-reply", Mode::Compatible, "reply: hello", 1),
    ("text-reply", Mode::Safe, "not encrypted", 1),
    ("wrong-signature", Mode::Safe, "wrong signature", 1),
    ("wrong-key", Mode::Safe, "wrong encryption", 1),
    ("wrong-recipient", Mode::Plaintext, "wrong recipient", 1),
    ("bad-xml", Mode::Plaintext, "invalid xml", 1),
    ("bad-xml", Mode::Safe, "invalid xml", 1),
    ("json", Mode::Safe, "invalid xml", 1),
    ("json-500", Mode::Plaintext, "status 500", 4),
    ("slow", Mode::Safe, "timeout", 4),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verdict_is_what_wechat_would_decide() {
    let (base, seen) = broken_server().await;
    let transport = Transport::new().unwrap();
    for (i, (path, mode, expected, attempts)) in VERDICTS.into_iter().enumerate() {
        let side = side(mode);
        let request = hello_request(&side, i as u64 + 1);
        let url = format!("{base}/{path}");
        let delivery = transport
            .deliver(&url, &side, &request, SENDER, &FAST)
            .await;
        let context = format!("{path} in {mode:?}: {:?}", delivery.verdict);
        assert_eq!(label(&delivery.verdict), expected, "{context}");
        assert_eq!(delivery.attempts.len(), attempts, "{context}");
        let error_message = "“该公众号暂时无法提供服务，请稍后再试”";
        assert_eq!(
            delivery.verdict.follower_sees() == error_message,
            delivery.verdict.is_failure(),
            "{context}"
        );
    }
    // Every re-sent attempt is the identical request, as WeChat re-sends it.
    for path in ["json-500", "slow"] {
        let requests = seen.for_path(path);
        assert_eq!(requests.len(), 4, "{path}");
        assert!(requests.windows(2).all(|pair| pair[0] == pair[1]), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_attempt_is_retried_and_the_retry_answers() {
    let (base, seen) = broken_server().await;
    let transport = Transport::new().unwrap();
    let side = side(Mode::Safe);
    let request = hello_request(&side, 7);
    let delivery = transport
        .deliver(&format!("{base}/slow-once"), &side, &request, SENDER, &FAST)
        .await;
    assert!(
        matches!(&delivery.verdict, Verdict::Reply(Reply::Text { content }) if content == "hello")
    );
    assert_eq!(delivery.attempts.len(), 2);
    assert_eq!(delivery.attempts[0].result, AttemptResult::TimedOut);
    assert!(delivery.attempts[0].latency >= FAST.timeout);
    assert!(delivery.attempts[1].sent_after >= FAST.timeout);
    let requests = seen.for_path("slow-once");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0], requests[1],
        "the retry is the identical request"
    );
    assert_eq!(requests[0].0, request.query);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_count_and_status_policy_are_configurable() {
    let (base, seen) = broken_server().await;
    let transport = Transport::new().unwrap();
    let side = side(Mode::Plaintext);
    let request = hello_request(&side, 9);
    let once = RetryPolicy { retries: 0, ..FAST };
    let delivery = transport
        .deliver(&format!("{base}/slow"), &side, &request, SENDER, &once)
        .await;
    assert_eq!(
        (delivery.attempts.len(), delivery.verdict.clone()),
        (1, Verdict::Unusable(Unusable::Timeout))
    );
    let no_status_retry = RetryPolicy {
        retry_on_status: false,
        ..FAST
    };
    let delivery = transport
        .deliver(
            &format!("{base}/json-500"),
            &side,
            &request,
            SENDER,
            &no_status_retry,
        )
        .await;
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(seen.for_path("json-500").len(), 1);
    // Nobody listening: every attempt fails to connect, and WeChat gives up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let delivery = transport
        .deliver(
            &format!("http://127.0.0.1:{port}/wx"),
            &side,
            &request,
            SENDER,
            &FAST,
        )
        .await;
    assert_eq!(delivery.attempts.len(), 4);
    assert!(
        matches!(
            delivery.verdict,
            Verdict::Unusable(Unusable::Unreachable(_))
        ),
        "{:?}",
        delivery.verdict
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_every_attempt_and_fails_on_a_bad_answer() {
    let (base, _) = broken_server().await;
    let url = format!("{base}/slow");
    let (ok, report) = cli(&[
        "send",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--timeout-ms",
        "100",
        "--retries",
        "2",
        "text",
        "hi",
    ])
    .await;
    assert!(!ok);
    let attempts = report["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a["result"] == "timeout"));
    assert_eq!(attempts[0]["retried"], true);
    assert_eq!(attempts[2]["retried"], false);
    assert_eq!(
        report["outcome"]["follower_sees"],
        "“该公众号暂时无法提供服务，请稍后再试”"
    );
    assert!(report["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("100 ms"));

    let url = format!("{base}/json");
    let (ok, report) = cli(&["send", "--url", &url, "--token", TOKEN, "click", "K"]).await;
    assert!(!ok);
    assert_eq!(
        report["attempts"][0]["response"],
        r#"{"errcode":0,"errmsg":"ok"}"#
    );
    assert_eq!(report["outcome"]["verdict"], "unusable");

    let url = format!("{base}/success");
    let (ok, report) = cli(&["send", "--url", &url, "--token", TOKEN, "unsubscribe"]).await;
    assert!(ok);
    assert_eq!(
        report["outcome"]["follower_sees"],
        "nothing (the answer was `success` or empty)"
    );
}

// ---------------------------------------------------------------------------------------
// Storm and load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_with_duplicates_gets_one_consistent_answer_each_from_the_gateway() {
    let gateway = gateway().await;
    let url = format!("{}/wx/safe", gateway.base);
    let (ok, report) = cli(&[
        "storm",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--app-id",
        APP_ID,
        "--aes-key",
        KEY,
        "-n",
        "45",
        "-c",
        "8",
        "--duplicates",
        "0.2",
    ])
    .await;
    assert!(ok, "{report:#}");
    let totals = &report["totals"];
    assert_eq!(totals["messages"], 45);
    assert_eq!(totals["deliveries"], 54);
    assert_eq!(totals["answered_passively"], 54);
    assert_eq!(totals["failed"], 0);
    assert_eq!(report["duplicates"]["sent"], 9);
    assert_eq!(report["duplicates"]["same_reply"], 9);
    assert_eq!(report["duplicates"]["different_reply"], 0);
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 54);
    // Duplicates are deduplicated by the gateway: 45 inbox entries, 9 with two attempts.
    let stored = gateway
        .store
        .list(&InboxQuery {
            limit: 1000,
            ..InboxQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 45);
    assert_eq!(stored.iter().filter(|e| e.attempts == 2).count(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_catches_a_webhook_that_answers_a_duplicate_differently() {
    let (base, _) = broken_server().await;
    let side = side(Mode::Safe);
    let options = StormOptions {
        messages: 10,
        concurrency: 4,
        duplicate_share: 0.5,
        policy: FAST,
    };
    // The broken server always answers SENDER, so make every message come from SENDER.
    let mut jobs = plan(&side, &options, "gh_test", now(), 1, &mut rand::rng());
    for job in &mut jobs {
        let message = inbound("gh_test", SENDER, now(), job.message as u64, mixed_kind(0));
        job.request = side.message(&message, now(), "1", [0; 16]);
        job.sender = SENDER.to_owned();
    }
    let report = wxgate::sim::storm::run(
        &Transport::new().unwrap(),
        &format!("{base}/counter"),
        &side,
        jobs,
        &options,
    )
    .await;
    assert_eq!(report.duplicates.sent, 5);
    assert_eq!(report.duplicates.different_reply, 5);
    assert!(!report.ok);
    assert!(report.to_text(false).contains("DIFFERENT reply 5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drives_distinct_messages_through_the_gateway() {
    let gateway = gateway().await;
    let side = Arc::new(side(Mode::Safe));
    let target = LoadTarget::resolve(&format!("{}/wx/safe", gateway.base))
        .await
        .unwrap();
    let pool = Arc::new(RequestPool::build(
        &side,
        &target,
        20_000,
        LoadMix::Mixed,
        now(),
        2,
    ));
    let options = LoadOptions {
        connections: 4,
        duration: Duration::from_millis(400),
        warmup: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        judge_every: 1,
    };
    let report =
        wxgate::sim::load::run(Arc::clone(&pool), &target, Arc::clone(&side), &options).await;
    assert!(report.ok, "{}", report.to_text());
    assert!(report.requests > 0);
    assert_eq!(report.repeated, 0);
    assert_eq!(report.judged, report.requests);
    assert_eq!(report.verdicts.get("reply").copied(), Some(report.requests));
    assert_eq!(report.latency.count, report.requests);
    // No request hit a dedup cache: every one sent is its own inbox entry.
    let stored = gateway.store.stats().messages;
    assert!(
        stored >= report.requests && stored <= report.sent,
        "{stored} vs {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_errors_and_unusable_answers_by_kind() {
    let (base, _) = broken_server().await;
    let side = Arc::new(side(Mode::Safe));
    let options = LoadOptions {
        connections: 2,
        duration: Duration::from_millis(200),
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(1),
        judge_every: 1,
    };
    for (path, error) in [
        ("json", None),
        ("json-500", Some("status 500")),
        ("nope", Some("status 404")),
    ] {
        let target = LoadTarget::resolve(&format!("{base}/{path}"))
            .await
            .unwrap();
        let pool = Arc::new(RequestPool::build(
            &side,
            &target,
            100,
            LoadMix::Text,
            now(),
            1,
        ));
        let report = wxgate::sim::load::run(pool, &target, Arc::clone(&side), &options).await;
        assert!(!report.ok, "{path}");
        assert!(report.requests > 0, "{path}");
        match error {
            Some(kind) => assert_eq!(
                report.errors.get(kind).copied(),
                Some(report.requests),
                "{path}: {:?}",
                report.errors
            ),
            None => assert_eq!(
                report.verdicts.get("unusable").copied(),
                Some(report.requests),
                "{path}"
            ),
        }
    }
    // Nothing listening: connection errors, no requests, a failing verdict.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = LoadTarget::resolve(&format!("http://127.0.0.1:{port}/wx"))
        .await
        .unwrap();
    let pool = Arc::new(RequestPool::build(
        &side,
        &target,
        10,
        LoadMix::Text,
        now(),
        1,
    ));
    let report = wxgate::sim::load::run(pool, &target, side, &options).await;
    assert_eq!(report.requests, 0);
    assert!(
        report.errors.keys().any(|k| k.starts_with("connect")),
        "{:?}",
        report.errors
    );
    assert!(!report.ok);
}

// ---------------------------------------------------------------------------------------
// decrypt and inbox.

fn decrypt_args(encrypt: Option<String>, body: Option<std::path::PathBuf>) -> DecryptArgs {
    DecryptArgs {
        aes_key: KEY.to_owned(),
        app_id: Some(APP_ID.to_owned()),
        encrypt,
        body,
        token: None,
        query: None,
        json: true,
    }
}

#[test]
fn decrypt_opens_captures_or_names_the_official_error() {
    let side = side(Mode::Safe);
    let request = hello_request(&side, 5);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.xml");
    std::fs::write(&body, &request.body).unwrap();

    let mut args = decrypt_args(None, Some(body.clone()));
    args.token = Some(TOKEN.to_owned());
    args.query = Some(request.query.clone());
    let report = decrypt(&args).unwrap();
    assert!(report.ok, "{}", report.to_text());
    assert_eq!(report.input, "request");
    assert_eq!(report.signature.as_deref(), Some("ok"));
    assert_eq!(report.app_id.as_deref(), Some(APP_ID));
    assert_eq!(report.parsed.as_ref().unwrap()["content"], "hi");

    // The signature of another request: -40001.
    args.query = Some(request.query.replace("nonce=4242", "nonce=4243"));
    let report = decrypt(&args).unwrap();
    assert_eq!(report.error.as_ref().map(|e| e.code), Some(-40001));

    // Another AppID: -40005, with the AppID found shown.
    let mut args = decrypt_args(None, Some(body));
    args.app_id = Some("wxsomeoneelse".to_owned());
    let report = decrypt(&args).unwrap();
    let error = report.error.clone().unwrap();
    assert_eq!((error.code, error.name), (-40005, "ValidateAppid_Error"));
    assert_eq!(report.app_id.as_deref(), Some(APP_ID));
    assert!(report
        .to_text()
        .contains("error -40005 (ValidateAppid_Error)"));

    // A broken ciphertext, bad base64, a bad key, a body without Encrypt.
    let envelope = wechat_proto::RequestEnvelope::parse(request.body.as_bytes()).unwrap();
    let cut = envelope.encrypt[..envelope.encrypt.len() - 8].to_owned() + "AAAAAAA=";
    for (encrypt, codes) in [
        (cut, &[-40007, -40008][..]),
        ("%%%".to_owned(), &[-40010][..]),
        (envelope.encrypt[4..].to_owned(), &[-40007, -40010][..]),
    ] {
        let report = decrypt(&decrypt_args(Some(encrypt.clone()), None)).unwrap();
        let code = report.error.as_ref().map(|e| e.code).unwrap_or(0);
        assert!(!report.ok && codes.contains(&code), "{encrypt}: {code}");
    }
    let mut args = decrypt_args(Some(envelope.encrypt.clone()), None);
    args.aes_key = "tooshort".to_owned();
    assert_eq!(decrypt(&args).unwrap().error.map(|e| e.code), Some(-40004));
    let plain = dir.path().join("plain.xml");
    std::fs::write(&plain, "<xml><ToUserName>x</ToUserName></xml>").unwrap();
    assert_eq!(
        decrypt(&decrypt_args(None, Some(plain)))
            .unwrap()
            .error
            .map(|e| e.code),
        Some(-40002)
    );
    assert!(decrypt(&decrypt_args(None, Some(dir.path().join("missing.xml")))).is_err());
}

#[test]
fn decrypt_checks_a_captured_encrypted_reply() {
    let query: HashMap<String, String> = [("timestamp", "1700000000"), ("nonce", "99")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (tamper, ok) in [(false, true), (true, false)] {
        let path = dir.path().join("reply.xml");
        std::fs::write(
            &path,
            encrypted(&query, &reply_xml(SENDER, "回复"), KEY, tamper),
        )
        .unwrap();
        let mut args = decrypt_args(None, Some(path));
        args.token = Some(TOKEN.to_owned());
        let report = decrypt(&args).unwrap();
        assert_eq!(report.ok, ok, "{}", report.to_text());
        assert_eq!(report.input, "reply");
        if ok {
            assert_eq!(report.parsed.unwrap()["content"], "回复");
        } else {
            assert_eq!(report.error.unwrap().code, -40001);
        }
    }
}

fn inbox_args(follow: bool, json: bool) -> InboxArgs {
    InboxArgs {
        config: None,
        account: Some("safe".to_owned()),
        since: Some("1h".to_owned()),
        limit: 50,
        follow,
        json,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_lists_what_the_gateway_recorded() {
    let gateway = gateway().await;
    let transport = Transport::new().unwrap();
    let side = side(Mode::Safe);
    let url = format!("{}/wx/safe", gateway.base);
    let first = hello_request(&side, 31);
    transport
        .deliver(&url, &side, &first, SENDER, &RetryPolicy::default())
        .await;

    let mut out = Vec::new();
    inbox(
        &*gateway.store,
        &inbox_args(false, false),
        now() * 1000,
        &mut out,
        async {},
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("safe  text «hi»"), "{text}");
    assert!(
        text.contains("replied on attempt 1; reply: the text “hi”"),
        "{text}"
    );

    let mut out = Vec::new();
    inbox(
        &*gateway.store,
        &inbox_args(false, true),
        now() * 1000,
        &mut out,
        async {},
    )
    .await
    .unwrap();
    let entries: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(entries[0]["from_user_name"], SENDER);
}

/// A message recorded straight into a store, as the gateway's claim records it.
fn recorded(msg_id: u64) -> NewMessage {
    let message = inbound(
        "gh_test",
        SENDER,
        1,
        msg_id,
        wechat_proto::Kind::Text {
            content: format!("m{msg_id}"),
        },
    );
    let xml = message.to_xml();
    NewMessage {
        key: StoreKey {
            account: "safe".to_owned(),
            dedup: message.dedup_key(xml.as_bytes()),
        },
        from_user_name: SENDER.to_owned(),
        kind: "text".to_owned(),
        inbound_json: serde_json::to_string(&message).unwrap(),
        received_at_ms: now() * 1000,
    }
}

#[tokio::test(start_paused = true)]
async fn inbox_follow_prints_new_messages_and_changes_until_stopped() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Duration::from_secs(600)));
    for msg_id in 1..=3 {
        store.claim(&recorded(msg_id)).await.unwrap();
    }
    let output = SharedOutput::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = {
        let mut output = output.clone();
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.await;
            };
            let args = InboxArgs {
                limit: 1,
                ..inbox_args(true, true)
            };
            inbox(&*store, &args, now() * 1000, &mut output, stop).await
        })
    };
    // Let the watch list what is there, then record a new message. The watch polls once a
    // second of (paused, virtual) time.
    tokio::time::sleep(FOLLOW_INTERVAL / 2).await;
    let second = recorded(4);
    store.claim(&second).await.unwrap();
    tokio::time::sleep(FOLLOW_INTERVAL * 2).await;
    store
        .complete(
            &second.key,
            &Completion {
                reply: Some(Reply::Text {
                    content: "done".to_owned(),
                }),
                error: None,
                handler_ms: 3,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(FOLLOW_INTERVAL * 2).await;
    stop.send(()).unwrap();
    follower.await.unwrap().unwrap();
    let lines: Vec<Value> = output
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "--limit 1 shows the newest old message only, then what is new: {}",
        output.text()
    );
    assert_eq!(
        lines[0]["message"]["content"], "m3",
        "the message is a JSON object"
    );
    assert_eq!(lines[1]["message"]["content"], "m4");
    assert_eq!(lines[1]["completion"], Value::Null);
    assert_eq!(
        lines[2]["completion"]["reply"]["content"], "done",
        "the change is printed"
    );
}
