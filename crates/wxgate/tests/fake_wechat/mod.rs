//! A small local HTTP server standing in for two external services that cannot be
//! reached from here: WeChat's server API (token issuance with expiry, the
//! customer-service send with its error codes, slow answers) and a business upstream of
//! the `forward` handler (configurable delay, status and body). It is a fake of those
//! services over a real socket on 127.0.0.1:0, not a mock of wxgate's own code.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fake"
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use wxgate::config::Config;

pub const APP_SECRET: &str = "the-app-secret";
pub const FORWARD_SECRET: &str = "the-forward-secret";

/// How the upstream answers the next calls.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub delay: Duration,
    pub status: u16,
    pub body: String,
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            delay: Duration::ZERO,
            status: 200,
            body: r#"{"type":"text","content":"from upstream"}"#.to_owned(),
        }
    }
}

/// One call the upstream received.
#[derive(Clone, Debug)]
pub struct UpstreamCall {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
pub struct Fake {
    /// Issued tokens and when they expire.
    pub tokens: HashMap<String, Instant>,
    /// How many tokens were issued, and with which `force_refresh`.
    pub token_fetches: Vec<bool>,
    /// The lifetime of the next tokens.
    pub expires_in: u64,
    /// How long the token endpoint takes.
    pub token_delay: Duration,
    /// Error codes the next sends answer, in order (before any success).
    pub send_errors: VecDeque<i64>,
    /// When set, every send answers this error code.
    pub always_error: Option<i64>,
    /// Every send attempt: the access token used and the errcode answered.
    pub send_attempts: Vec<(String, i64)>,
    /// The bodies of accepted sends.
    pub sent: Vec<serde_json::Value>,
    pub upstream: Upstream,
    pub upstream_calls: Vec<UpstreamCall>,
}

#[derive(Clone)]
pub struct FakeServer {
    pub base: String,
    pub state: Arc<Mutex<Fake>>,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let state = Arc::new(Mutex::new(Fake {
            expires_in: 7200,
            ..Fake::default()
        }));
        let app = axum::Router::new()
            .route("/cgi-bin/token", get(token_get))
            .route("/cgi-bin/stable_token", post(token_post))
            .route("/cgi-bin/message/custom/send", post(send))
            .route("/cgi-bin/getcallbackip", get(callback_ips))
            .route("/upstream", post(upstream))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer { base, state }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Waits (up to `limit`) until `condition` holds on the fake's state.
    pub async fn until(&self, limit: Duration, condition: impl Fn(&Fake) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if condition(&self.state.lock().unwrap()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn issue(state: &Arc<Mutex<Fake>>, app_secret: &str, force: bool) -> Response {
    let delay = state.lock().unwrap().token_delay;
    tokio::time::sleep(delay).await;
    if app_secret != APP_SECRET {
        return json(
            StatusCode::OK,
            serde_json::json!({"errcode": 40125, "errmsg": "invalid appsecret"}),
        );
    }
    let mut fake = state.lock().unwrap();
    fake.token_fetches.push(force);
    let token = format!("TOKEN-{}", fake.token_fetches.len());
    let expires_in = fake.expires_in;
    fake.tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    json(
        StatusCode::OK,
        serde_json::json!({"access_token": token, "expires_in": expires_in}),
    )
}

async fn token_get(
    State(state): State<Arc<Mutex<Fake>>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let secret = query.get("secret").cloned().unwrap_or_default();
    issue(&state, &secret, false).await
}

async fn token_post(State(state): State<Arc<Mutex<Fake>>>, body: Bytes) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let secret = request["secret"].as_str().unwrap_or_default().to_owned();
    let force = request["force_refresh"].as_bool().unwrap_or(false);
    issue(&state, &secret, force).await
}

async fn send(
    State(state): State<Arc<Mutex<Fake>>>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let token = query.get("access_token").cloned().unwrap_or_default();
    let mut fake = state.lock().unwrap();
    let code = match fake.tokens.get(&token) {
        None => 40001,
        Some(expiry) if *expiry <= Instant::now() => 42001,
        Some(_) => fake
            .always_error
            .or_else(|| fake.send_errors.pop_front())
            .unwrap_or(0),
    };
    fake.send_attempts.push((token, code));
    if code == 0 {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        fake.sent.push(value);
    }
    json(
        StatusCode::OK,
        serde_json::json!({"errcode": code, "errmsg": if code == 0 { "ok" } else { "fake error" }}),
    )
}

/// WeChat's callback addresses (the shape of the real answer), for a valid token.
pub const CALLBACK_IPS: [&str; 3] = ["101.226.103.0/25", "101.226.62.0/26", "58.251.80.0/27"];

async fn callback_ips(
    State(state): State<Arc<Mutex<Fake>>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let token = query.get("access_token").cloned().unwrap_or_default();
    let valid = state.lock().unwrap().tokens.contains_key(&token);
    let body = if valid {
        serde_json::json!({"ip_list": CALLBACK_IPS})
    } else {
        serde_json::json!({"errcode": 40001, "errmsg": "invalid credential"})
    };
    json(StatusCode::OK, body)
}

async fn upstream(
    State(state): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = {
        let mut fake = state.lock().unwrap();
        fake.upstream_calls.push(UpstreamCall { headers, body });
        fake.upstream.clone()
    };
    tokio::time::sleep(behaviour.delay).await;
    let status =
        StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        behaviour.body,
    )
        .into_response()
}

/// One plaintext account `oa` with the given policy and extra keys, a `help` rule, and a
/// forward upstream at the fake (unless `extra` says otherwise).
pub fn config(store: &str, policy: &str, account_extra: &str, forward: &str) -> Config {
    let text = format!(
        "{store}\n[[accounts]]\nname = \"oa\"\napp_id = \"{app_id}\"\ntoken = \"{token}\"\nmode = \"plaintext\"\nbudget_ms = 200\npolicy = \"{policy}\"\n{account_extra}\n[[accounts.rules]]\nkeyword = \"help\"\nreply = {{ type = \"text\", content = \"help\" }}\n{forward}\n",
        app_id = crate::support::APP_ID,
        token = crate::support::TOKEN,
    );
    Config::from_toml(&text, &BTreeMap::new()).expect("test config is valid")
}

/// The `[accounts.forward]` table pointing at `base`'s upstream.
pub fn forward_table(base: &str, extra: &str) -> String {
    format!("[accounts.forward]\nurl = \"{base}/upstream\"\nsecret = \"{FORWARD_SECRET}\"\n{extra}")
}

/// Serves a gateway's router on 127.0.0.1:0; returns its base URL.
pub async fn serve(gateway: &Arc<wxgate::Gateway>) -> String {
    let router = gateway.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    base
}

/// One delivery as WeChat makes it: it gives up on an answer after 5 seconds (`None`).
pub async fn wechat_post(
    base: &str,
    request: &wxgate::sim::wechat::SignedRequest,
) -> Option<(u16, String)> {
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/wx/oa?{}", request.query))
        .body(request.body.clone())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Checks the upstream call's `X-Wxgate-Signature` as an upstream would.
pub fn signature_is_valid(call: &UpstreamCall) -> bool {
    use hmac::{Hmac, Mac};
    let (Some(timestamp), Some(signature)) = (
        call.headers.get("x-wxgate-timestamp"),
        call.headers.get("x-wxgate-signature"),
    ) else {
        return false;
    };
    let Some(hex_sig) = signature
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(FORWARD_SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&call.body);
    mac.verify_slice(&expected).is_ok()
}
