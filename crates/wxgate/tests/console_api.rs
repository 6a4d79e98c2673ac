//! The console's HTTP surface on a real socket: auth (Bearer, the login cookie, CSRF,
//! the rate limit), every API endpoint with its filters and paging, the debugger's
//! agreement with `wxgate sim send --json`, and a scan of every response for secrets.

mod console_support;

use std::time::Duration;

use console_support::*;
use serde_json::{json, Value};

/// Logs in through the form and returns the cookie header and the page's CSRF token.
async fn login(client: &Client) -> (String, String) {
    let response = client
        .request(
            "POST",
            "/console/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(format!("token={CONSOLE_TOKEN}")),
        )
        .await;
    assert_eq!(response.status, 303, "{response:?}");
    assert_eq!(response.header("location").as_deref(), Some("/console/"));
    let set_cookie = response.header("set-cookie").unwrap();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = client
        .request("GET", "/console/debugger", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(page.status, 200);
    let csrf = page
        .body
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

fn send_text(account: &str, content: &str, from: &str) -> Value {
    json!({"account": account, "kind": "text", "content": content, "from": from, "retries": 0})
}

#[tokio::test]
async fn auth_guards_every_route() {
    let running = start().await;
    let client = Client::new(&running.base);
    // No credentials: the API says 401 in JSON, pages send to the login page.
    for path in [
        "/console/api/messages",
        "/console/api/overview",
        "/console/api/events",
        "/console/api/messages/msg:o:1",
    ] {
        let response = client.request("GET", path, &[], None).await;
        assert_eq!(response.status, 401, "{path}");
        assert!(response.json()["error"]
            .as_str()
            .unwrap()
            .contains("log in"));
    }
    for path in [
        "/console/",
        "/console/debugger",
        "/console/inbox",
        "/console/message",
    ] {
        let response = client.request("GET", path, &[], None).await;
        assert_eq!(response.status, 303, "{path}");
        assert_eq!(
            response.header("location").as_deref(),
            Some("/console/login")
        );
    }
    let post = client
        .request(
            "POST",
            "/console/api/sim/send",
            &[("content-type", "application/json")],
            Some("{}".into()),
        )
        .await;
    assert_eq!(post.status, 401);
    // A wrong or malformed bearer token, and a cookie that is no session.
    for header in ["Bearer wrong-token-0123456789", "Basic abc", CONSOLE_TOKEN] {
        let response = client
            .request(
                "GET",
                "/console/api/overview",
                &[("authorization", header)],
                None,
            )
            .await;
        assert_eq!(response.status, 401, "{header}");
    }
    let response = client
        .request(
            "GET",
            "/console/api/overview",
            &[("cookie", "wxgate_console=forged")],
            None,
        )
        .await;
    assert_eq!(response.status, 401);
    // A login posted from another site is refused, even with the right token.
    let cross_site = client
        .request(
            "POST",
            "/console/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://evil.example"),
            ],
            Some(format!("token={CONSOLE_TOKEN}")),
        )
        .await;
    assert_eq!(cross_site.status, 403);
    assert!(cross_site.header("set-cookie").is_none());
    // The login page and the assets need nothing.
    assert_eq!(
        client
            .request("GET", "/console/login", &[], None)
            .await
            .status,
        200
    );
    let script = client
        .request("GET", "/console/assets/console.js", &[], None)
        .await;
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(
        client
            .request("GET", "/console/assets/nope.js", &[], None)
            .await
            .status,
        404
    );
    running.shutdown().await;
}

#[tokio::test]
async fn the_cookie_session_needs_csrf_on_posts_and_ends_at_logout() {
    let running = start().await;
    let client = Client::new(&running.base);
    let (cookie, csrf) = login(&client).await;
    let overview = client
        .request("GET", "/console/api/overview", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(overview.status, 200);
    let body = send_text("plain", "csrf", "oCsrf").to_string();
    let json_type = ("content-type", "application/json");
    // Without the token, with a wrong one, or from another origin: refused.
    for headers in [
        vec![("cookie", cookie.as_str()), json_type],
        vec![
            ("cookie", cookie.as_str()),
            json_type,
            ("x-csrf-token", "wrong"),
        ],
        vec![
            ("cookie", cookie.as_str()),
            json_type,
            ("x-csrf-token", csrf.as_str()),
            ("origin", "http://evil.example"),
        ],
    ] {
        let response = client
            .request(
                "POST",
                "/console/api/sim/send",
                &headers,
                Some(body.clone()),
            )
            .await;
        assert_eq!(response.status, 403, "{headers:?}");
        assert!(response.json()["error"].as_str().unwrap().contains("CSRF"));
    }
    let origin = running.base.clone();
    let ok = client
        .request(
            "POST",
            "/console/api/sim/send",
            &[
                ("cookie", &cookie),
                json_type,
                ("x-csrf-token", &csrf),
                ("origin", &origin),
            ],
            Some(body),
        )
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["outcome"]["ok"], true);
    // Logging out also needs the token, then ends the session.
    let refused = client
        .request("POST", "/console/logout", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(refused.status, 403);
    let out = client
        .request(
            "POST",
            "/console/logout",
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            None,
        )
        .await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = client
        .request("GET", "/console/api/overview", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(after.status, 401);
    running.shutdown().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let running = start().await;
    let client = Client::new(&running.base);
    let form = ("content-type", "application/x-www-form-urlencoded");
    for _ in 0..5 {
        let response = client
            .request(
                "POST",
                "/console/login",
                &[form],
                Some("token=wrong".into()),
            )
            .await;
        assert_eq!(response.status, 401);
        assert!(response.body.contains("Wrong token"));
        assert!(response.header("set-cookie").is_none());
    }
    // Now even the right token waits, and so does a bearer request.
    let limited = client
        .request(
            "POST",
            "/console/login",
            &[form],
            Some(format!("token={CONSOLE_TOKEN}")),
        )
        .await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(client.get_bearer("/console/api/overview").await.status, 429);
    running.shutdown().await;
}

#[tokio::test]
async fn messages_filter_and_page() {
    let running = start().await;
    let client = Client::new(&running.base);
    for (account, content, from) in [
        ("plain", "apple pie", "oAlice000000000000000000001"),
        ("plain", "banana", "oBob00000000000000000000002"),
        ("safe", "cherry 樱桃", "oAlice000000000000000000001"),
        ("safe", "date", "oCarol00000000000000000003"),
        ("pushy", "elderberry", "oCarol00000000000000000003"),
    ] {
        let report = client
            .post_bearer("/console/api/sim/send", send_text(account, content, from))
            .await;
        assert_eq!(report.status, 200, "{report:?}");
    }
    let click = client
        .post_bearer(
            "/console/api/sim/send",
            json!({"account": "plain", "kind": "click", "key": "MENU_1", "retries": 0}),
        )
        .await;
    assert_eq!(click.status, 200);
    let list = |query: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .get_bearer(&format!("/console/api/messages{query}"))
                .await;
            assert_eq!(response.status, 200, "{query}: {response:?}");
            let json = response.json();
            let summaries: Vec<String> = json["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["summary"].as_str().unwrap().to_owned())
                .collect();
            (summaries, json)
        }
    };
    let (all, json) = list("").await;
    assert_eq!(
        all,
        [
            "click MENU_1",
            "elderberry",
            "date",
            "cherry 樱桃",
            "banana",
            "apple pie"
        ]
    );
    let row = &json["messages"][1];
    assert_eq!(row["account"], "pushy");
    assert_eq!(row["sender"], "oCar…0003");
    assert_eq!(row["attempts"], 1);
    assert!(row["error"].as_str().unwrap().contains("upstream"), "{row}");
    assert_eq!(json["messages"][2]["answer"], "replied");
    assert_eq!(list("?account=safe").await.0, ["date", "cherry 樱桃"]);
    assert_eq!(list("?kind=event").await.0, ["click MENU_1"]);
    assert_eq!(list("?kind=event:click").await.0, ["click MENU_1"]);
    assert_eq!(
        list("?kind=text&account=plain").await.0,
        ["banana", "apple pie"]
    );
    assert_eq!(list("?answer=failed").await.0, ["elderberry"]);
    assert_eq!(
        list("?answer=replied&account=plain").await.0,
        ["click MENU_1", "banana", "apple pie"]
    );
    assert_eq!(
        list("?sender=oAlice000000000000000000001").await.0,
        ["cherry 樱桃", "apple pie"]
    );
    assert_eq!(list("?text=%E6%A8%B1%E6%A1%83").await.0, ["cherry 樱桃"]);
    // The time range, from the rows' own times.
    let times: Vec<i64> = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["received_at_ms"].as_i64().unwrap())
        .collect();
    let ranged = client
        .get_bearer(&format!(
            "/console/api/messages?since={}&until={}",
            times[4], times[2]
        ))
        .await
        .json();
    let ranged: Vec<&str> = ranged["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["summary"].as_str().unwrap())
        .collect();
    // Rows of one millisecond may share a time; the range holds at least these.
    for wanted in ["date", "cherry 樱桃", "banana"] {
        assert!(ranged.contains(&wanted), "{ranged:?}");
    }
    assert!(!ranged.contains(&"apple pie") || times[5] == times[4]);
    // Paging: two at a time, through everything, in order, without repeats.
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/console/api/messages?limit=2&cursor={c}"),
            None => "/console/api/messages?limit=2".to_owned(),
        };
        let page = client.get_bearer(&path).await.json();
        for m in page["messages"].as_array().unwrap() {
            paged.push(m["summary"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(paged.len() < 10, "paging does not end");
    }
    assert_eq!(paged, all);
    // Bad queries are 400s that say why.
    for (query, says) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?cursor=garbage", "cursor"),
        ("?answer=maybe", "answer"),
        ("?bogus=1", "bogus"),
        ("?since=yesterday", "since"),
    ] {
        let response = client
            .get_bearer(&format!("/console/api/messages{query}"))
            .await;
        assert_eq!(response.status, 400, "{query}");
        assert!(
            response.json()["error"].as_str().unwrap().contains(says),
            "{query}: {response:?}"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn one_message_in_detail() {
    let running = start().await;
    let client = Client::new(&running.base);
    let report = client
        .post_bearer(
            "/console/api/sim/send",
            send_text("safe", "detail me", "oDetail000000000000000000001"),
        )
        .await
        .json();
    assert!(report["outcome"]["follower_sees"]
        .as_str()
        .unwrap()
        .contains("detail me"));
    let list = client
        .get_bearer("/console/api/messages?account=safe")
        .await
        .json();
    let key = list["messages"][0]["dedup_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded = key.replace(':', "%3A");
    for path in [
        format!("/console/api/messages/{encoded}?account=safe"),
        format!("/console/api/messages/{encoded}"),
    ] {
        let detail = client.get_bearer(&path).await;
        assert_eq!(detail.status, 200, "{path}");
        let d = detail.json();
        assert_eq!(d["row"]["dedup_key"], key.as_str());
        assert_eq!(d["sender"], "oDetail000000000000000000001");
        assert_eq!(d["message"]["content"], "detail me");
        assert!(d["xml"]
            .as_str()
            .unwrap()
            .contains("<Content><![CDATA[detail me]]></Content>"));
        assert_eq!(d["attempts"]["count"], 1);
        assert_eq!(d["attempts"]["last_answer"], "replied");
        assert_eq!(d["attempts"]["last_answer_attempt"], 1);
        let answers = d["attempts"]["answers"].as_array().expect("every attempt");
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0]["attempt"], 1);
        assert_eq!(answers[0]["answer"], "replied");
        assert!(
            answers[0]["at_ms"].as_i64().unwrap()
                >= d["attempts"]["first_received_at_ms"].as_i64().unwrap(),
            "answered after it arrived"
        );
        assert!(d["handler"]["error"].is_null());
        assert_eq!(d["reply"]["type"], "text");
        assert!(d["reply_xml"]
            .as_str()
            .unwrap()
            .contains("<ToUserName><![CDATA[oDetail000000000000000000001]]>"));
        assert!(d["forward"].is_null());
        assert!(d["push"].is_null());
    }
    // The push account: its forward call and delivery state are shown.
    client
        .post_bearer(
            "/console/api/sim/send",
            send_text("pushy", "to upstream", "oPush0000000000000000000001"),
        )
        .await;
    let list = client
        .get_bearer("/console/api/messages?account=pushy")
        .await
        .json();
    let key = list["messages"][0]["dedup_key"]
        .as_str()
        .unwrap()
        .replace(':', "%3A");
    let d = client
        .get_bearer(&format!("/console/api/messages/{key}?account=pushy"))
        .await
        .json();
    assert_eq!(d["forward"]["url"], "http://127.0.0.1:9/upstream");
    assert!(d["handler"]["error"].as_str().unwrap().contains("upstream"));
    assert!(d["push"]["state"].is_string(), "{d}");
    // Unknown keys and accounts are 404s.
    let missing = client.get_bearer("/console/api/messages/msg%3Ao%3A1").await;
    assert_eq!(missing.status, 404);
    let no_account = client
        .get_bearer(&format!("/console/api/messages/{key}?account=nobody"))
        .await;
    assert_eq!(no_account.status, 404);
    running.shutdown().await;
}

#[tokio::test]
async fn events_stream_every_answer_and_end_at_shutdown() {
    let running = start().await;
    let client = Client::new(&running.base);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut stream = http
        .get(format!("{}/console/api/events", running.base))
        .bearer_auth(CONSOLE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    client
        .post_bearer("/console/api/sim/send", send_text("plain", "live", "oLive"))
        .await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: message\ndata: {"), "{text}");
    let data: Value =
        serde_json::from_str(text.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(data["account"], "plain");
    assert_eq!(data["outcome"], "replied");
    // Shutdown is not held up by the open stream, and the stream ends.
    let shutdown = tokio::spawn(running.shutdown());
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(_) => break,
            Err(_) => panic!("the event stream did not end at shutdown"),
        }
    }
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown within 10 s")
        .unwrap();
}

#[tokio::test]
async fn the_debugger_agrees_with_the_cli() {
    let running = start().await;
    let client = Client::new(&running.base);
    // The same message through the console (an account target) and the CLI binary.
    let console = client
        .post_bearer(
            "/console/api/sim/send",
            json!({"account": "safe", "kind": "text", "content": "same engine", "retries": 0}),
        )
        .await;
    assert_eq!(console.status, 200);
    let console = console.json();
    // Asynchronously: the gateway answers on this same runtime.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxgate"))
        .args([
            "sim",
            "send",
            "--url",
            &format!("{}/wx/safe", running.base),
            "--token",
            TOKEN,
            "--app-id",
            APP_ID,
            "--aes-key",
            KEY,
            "--mode",
            "safe",
            "--retries",
            "0",
            "--json",
            "text",
            "same engine",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), shape(v))).collect(),
            Value::Array(items) => items.iter().map(shape).collect(),
            _ => Value::Null,
        }
    }
    assert_eq!(shape(&console), shape(&cli));
    for pointer in [
        "/outcome/follower_sees",
        "/outcome/verdict",
        "/request/mode",
        "/request/kind",
        "/attempts/0/verdict",
    ] {
        assert_eq!(console.pointer(pointer), cli.pointer(pointer), "{pointer}");
    }
    assert!(console["attempts"][0]["decrypted"]
        .as_str()
        .unwrap()
        .contains("same engine"));
    assert_eq!(console["request"]["encrypted"], true);

    // Any URL with typed-in credentials, every mode, and kinds with their fields.
    for mode in ["plaintext", "compatible", "safe"] {
        let account = if mode == "plaintext" { "plain" } else { "safe" };
        let report = client
            .post_bearer(
                "/console/api/sim/send",
                json!({"url": format!("{}/wx/{account}", running.base), "token": TOKEN,
                       "app_id": APP_ID, "aes_key": KEY, "mode": mode, "kind": "location",
                       "label": "广州", "retries": 0}),
            )
            .await
            .json();
        assert_eq!(report["request"]["mode"], mode, "{report}");
        assert_eq!(report["request"]["kind"], "location");
        assert_eq!(report["outcome"]["ok"], true, "{report}");
    }
    let raw = client
        .post_bearer(
            "/console/api/sim/send",
            json!({"account": "plain", "retries": 0, "xml":
                "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oRaw]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[raw xml]]></Content><MsgId>77</MsgId></xml>"}),
        )
        .await
        .json();
    assert!(
        raw["outcome"]["follower_sees"]
            .as_str()
            .unwrap()
            .contains("raw xml"),
        "{raw}"
    );

    // A broken webhook: a failing verdict that says why.
    let broken = broken_webhook().await;
    let report = client
        .post_bearer(
            "/console/api/sim/send",
            json!({"url": format!("http://{broken}/wechat"), "token": "anything", "kind": "text",
                   "content": "hello", "retries": 0}),
        )
        .await
        .json();
    assert_eq!(report["outcome"]["ok"], false);
    assert!(
        report["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("XML"),
        "{report}"
    );
    assert!(report["outcome"]["follower_sees"]
        .as_str()
        .unwrap()
        .contains("该公众号暂时无法提供服务"));

    // Mistakes are 400s (404 for an unknown account) that say what is wrong.
    for (body, status, says) in [
        (
            json!({"account": "safe", "token": "x", "kind": "text", "content": "a"}),
            400,
            "token",
        ),
        (
            json!({"account": "nobody", "kind": "text", "content": "a"}),
            404,
            "nobody",
        ),
        (
            json!({"account": "plain", "kind": "teleport"}),
            400,
            "teleport",
        ),
        (
            json!({"account": "plain", "kind": "text", "colour": "red"}),
            400,
            "colour",
        ),
        (json!({"account": "plain", "kind": "text"}), 400, "CONTENT"),
        (json!({"account": "plain"}), 400, "KIND"),
        (
            json!({"url": "ftp://x", "token": "t", "kind": "unsubscribe"}),
            400,
            "http",
        ),
        (
            json!({"account": "plain", "kind": "text", "content": "a", "retries": "many"}),
            400,
            "retries",
        ),
    ] {
        let response = client
            .post_bearer("/console/api/sim/send", body.clone())
            .await;
        assert_eq!(response.status, status, "{body}: {response:?}");
        assert!(
            response.json()["error"].as_str().unwrap().contains(says),
            "{body}: {response:?}"
        );
    }
    let not_json = client
        .request(
            "POST",
            "/console/api/sim/send",
            &[
                ("authorization", &format!("Bearer {CONSOLE_TOKEN}")),
                ("content-type", "application/json"),
            ],
            Some("{".into()),
        )
        .await;
    assert_eq!(not_json.status, 400);
    running.shutdown().await;
}

#[tokio::test]
async fn url_verification_from_the_console() {
    let running = start().await;
    let client = Client::new(&running.base);
    let ok = client
        .post_bearer(
            "/console/api/sim/verify",
            json!({"account": "safe", "echostr": "12345"}),
        )
        .await
        .json();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["response"], "12345");
    let wrong = client
        .post_bearer(
            "/console/api/sim/verify",
            json!({"url": format!("{}/wx/plain", running.base), "token": "not-the-token"}),
        )
        .await
        .json();
    assert_eq!(wrong["ok"], false);
    assert!(
        wrong["verdict"]
            .as_str()
            .unwrap()
            .contains("Token 验证失败"),
        "{wrong}"
    );
    let bad = client
        .post_bearer(
            "/console/api/sim/verify",
            json!({"account": "plain", "colour": 1}),
        )
        .await;
    assert_eq!(bad.status, 400);
    running.shutdown().await;
}

#[tokio::test]
async fn the_overview_shows_accounts_health_and_live_charts() {
    let running = start().await;
    let client = Client::new(&running.base);
    let overview = client.get_bearer("/console/api/overview").await.json();
    let accounts = overview["accounts"].as_array().unwrap();
    let names: Vec<&str> = accounts
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plain", "pushy", "safe"]);
    assert_eq!(accounts[2]["mode"], "safe");
    assert_eq!(accounts[2]["key_rotation"], "rotating");
    assert_eq!(accounts[2]["path"], "/wx/safe");
    assert_eq!(accounts[1]["policy"], "push");
    assert_eq!(accounts[0]["key_rotation"], "single_key");
    assert_eq!(overview["health"]["store"]["ok"], true);
    assert_eq!(overview["series"]["points"].as_array().unwrap().len(), 90);
    // A request with a bad signature shows in the charts by its official code.
    client
        .request(
            "POST",
            "/wx/plain?signature=0&timestamp=1&nonce=1",
            &[],
            Some("<xml/>".into()),
        )
        .await;
    client
        .post_bearer(
            "/console/api/sim/send",
            send_text("plain", "count me", "oCount"),
        )
        .await;
    // The sampler counts asynchronously: poll the API within a bound.
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let overview = client.get_bearer("/console/api/overview").await.json();
            let points = overview["series"]["points"].as_array().unwrap().clone();
            let sum = |f: &dyn Fn(&Value) -> u64| points.iter().map(f).sum::<u64>();
            let replied = sum(&|p| p["answers"]["replied"].as_u64().unwrap_or(0));
            let crypto = sum(&|p| p["crypto_failures"]["-40001"].as_u64().unwrap_or(0));
            if replied >= 1 && crypto >= 1 {
                return overview;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the charts count the requests within 10 s");
    assert_eq!(counted["health"]["inbox_size"], 1);
    running.shutdown().await;
}

#[tokio::test]
async fn a_separate_console_address_serves_only_the_console() {
    let dir_free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dir_free.local_addr().unwrap().port();
    drop(dir_free);
    let running = start_with(&format!("listen = \"127.0.0.1:{port}\"")).await;
    let console = Client::new(&format!("http://127.0.0.1:{port}"));
    assert_eq!(
        console.get_bearer("/console/api/overview").await.status,
        200
    );
    assert_eq!(
        console.request("GET", "/healthz", &[], None).await.status,
        404
    );
    // The webhook's address has no console, and the debugger still reaches the webhook.
    let webhook = Client::new(&running.webhook);
    assert_eq!(
        webhook.get_bearer("/console/api/overview").await.status,
        404
    );
    let report = console
        .post_bearer(
            "/console/api/sim/send",
            send_text("plain", "across", "oAcross"),
        )
        .await
        .json();
    assert_eq!(report["outcome"]["ok"], true, "{report}");
    running.shutdown().await;
}

/// Every page and endpoint, successful or not, scanned for every configured secret.
#[tokio::test]
async fn no_response_contains_a_secret() {
    let running = start().await;
    let client = Client::new(&running.base);
    let (cookie, csrf) = login(&client).await;
    for account in ["plain", "safe", "pushy"] {
        client
            .post_bearer(
                "/console/api/sim/send",
                send_text(account, "secret scan", "oScan0000000000000000000001"),
            )
            .await;
        client
            .post_bearer("/console/api/sim/verify", json!({"account": account}))
            .await;
    }
    client
        .post_bearer(
            "/console/api/sim/send",
            json!({"account": "safe", "mode": "compatible", "kind": "subscribe", "retries": 0}),
        )
        .await;
    client
        .post_bearer(
            "/console/api/sim/send",
            json!({"account": "safe", "token": "x"}),
        )
        .await;
    let list = client.get_bearer("/console/api/messages").await.json();
    let keys: Vec<(String, String)> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["account"].as_str().unwrap().to_owned(),
                m["dedup_key"].as_str().unwrap().replace(':', "%3A"),
            )
        })
        .collect();
    for (account, key) in &keys {
        client
            .get_bearer(&format!("/console/api/messages/{key}?account={account}"))
            .await;
        client
            .request(
                "GET",
                &format!("/console/message?account={account}&key={key}"),
                &[("cookie", &cookie)],
                None,
            )
            .await;
    }
    for path in [
        "/console/",
        "/console/debugger",
        "/console/inbox",
        "/console/login",
        "/console/assets/console.js",
        "/console/assets/console.css",
        "/console/api/overview",
    ] {
        client
            .request("GET", path, &[("cookie", &cookie)], None)
            .await;
        client.get_bearer(path).await;
    }
    client
        .request("GET", "/console/api/overview", &[], None)
        .await;
    client
        .request(
            "POST",
            "/console/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some("token=wrong".into()),
        )
        .await;
    client
        .request(
            "POST",
            "/console/api/sim/send",
            &[("cookie", &cookie)],
            Some("{}".into()),
        )
        .await;
    client
        .request(
            "POST",
            "/console/logout",
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            None,
        )
        .await;
    // The event stream, up to its first event.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut stream = http
        .get(format!("{}/console/api/events", running.base))
        .bearer_auth(CONSOLE_TOKEN)
        .send()
        .await
        .unwrap();
    client
        .post_bearer(
            "/console/api/sim/send",
            send_text("safe", "streamed", "oScan0000000000000000000001"),
        )
        .await;
    let mut events = String::new();
    while !events.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let mut seen = client.seen.lock().unwrap().clone();
    seen.push(Seen {
        status: 200,
        headers: String::new(),
        body: events,
    });
    assert!(seen.len() >= 30, "{}", seen.len());
    for response in &seen {
        for secret in SECRETS {
            assert!(
                !response.body.contains(secret) && !response.headers.contains(secret),
                "a response contains a configured secret: {response:?}"
            );
        }
    }
    running.shutdown().await;
}
