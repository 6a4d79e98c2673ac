//! The rig of the console's tests: the real gateway with its console on a real socket
//! (SQLite store in a temporary directory), a deliberately broken webhook, and an HTTP
//! client that keeps every response so the secret scan can read them all.

#![allow(dead_code, reason = "shared by the API and browser test binaries")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use wxgate::config::Config;
use wxgate::serve::Bound;
use wxgate::GatewayBuilder;

pub const CONSOLE_TOKEN: &str = "console-admin-token-0123456789";
pub const TOKEN: &str = "spamtestToken42";
pub const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const OLD_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
pub const APP_ID: &str = "wx2c2769f8efd9abc2";
pub const APP_SECRET: &str = "app-secret-4f1c2a9e7b";
pub const FORWARD_SECRET: &str = "forward-secret-8d3e6f";

/// Every secret of the configuration; no console response may contain any of them.
pub const SECRETS: [&str; 6] = [
    CONSOLE_TOKEN,
    TOKEN,
    KEY,
    OLD_KEY,
    APP_SECRET,
    FORWARD_SECRET,
];

/// A running gateway with its console.
pub struct Running {
    /// `http://127.0.0.1:port` of the console.
    pub base: String,
    /// `http://127.0.0.1:port` of the webhook (the same unless `[console] listen`).
    pub webhook: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Shuts down gracefully (open event streams must not hold it up) and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// The config: `plain` (plaintext) and `safe` (safe mode, rotating keys) with the echo
/// rule, and `pushy` with an AppSecret and a forward upstream whose secret is set.
pub fn config_text(extra: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
[console]
enabled = true
token = "{CONSOLE_TOKEN}"
{extra}
[store]
backend = "sqlite"
path = "PLACEHOLDER"
[[accounts]]
name = "plain"
app_id = "{APP_ID}"
token = "{TOKEN}"
encoding_aes_key = "{KEY}"
mode = "plaintext"
[[accounts.rules]]
echo = true
[[accounts]]
name = "safe"
app_id = "{APP_ID}"
token = "{TOKEN}"
encoding_aes_key = "{KEY}"
previous_encoding_aes_key = "{OLD_KEY}"
mode = "safe"
[[accounts.rules]]
echo = true
[[accounts]]
name = "pushy"
app_id = "{APP_ID}"
token = "{TOKEN}"
encoding_aes_key = "{KEY}"
mode = "safe"
policy = "push"
app_secret = "{APP_SECRET}"
api_base = "http://127.0.0.1:9"
[accounts.forward]
url = "http://127.0.0.1:9/upstream"
secret = "{FORWARD_SECRET}"
"#
    )
}

/// Starts the gateway with its console on 127.0.0.1:0.
pub async fn start() -> Running {
    start_with("").await
}

/// Starts it with `extra` lines in `[console]`.
pub async fn start_with(extra: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("console.db");
    let text = config_text(extra).replace("PLACEHOLDER", db.to_str().unwrap());
    let config = Config::from_toml(&text, &BTreeMap::new()).unwrap();
    let store = wxgate::store::open(
        &config.store,
        wxgate::clock::WallClock::now_ms(&wxgate::clock::SystemClock),
    )
    .await
    .unwrap();
    let bound = Bound::bind(GatewayBuilder::new(config.clone(), store), config)
        .await
        .unwrap();
    let addr = bound.console_addr().unwrap().unwrap();
    let webhook = format!("http://{}", bound.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        webhook,
        _dir: dir,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A webhook that answers every POST with HTTP 200 and an HTML page, as a misconfigured
/// server does: WeChat cannot use it.
pub async fn broken_webhook() -> SocketAddr {
    let app = axum::Router::new().route(
        "/wechat",
        axum::routing::any(|| async {
            (
                StatusCode::OK,
                "<html><body>Whitelabel Error Page</body></html>",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One response as received: status, headers and body as text.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    }
}

/// A client that records every response (for the secret scan) and never follows
/// redirects (so that they can be checked).
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            seen: Arc::default(),
        }
    }

    /// Sends a request; `auth` is a list of headers (`Authorization`, `Cookie`, …).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Seen {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect();
        let body = response.text().await.unwrap();
        let seen = Seen {
            status,
            headers,
            body,
        };
        self.seen.lock().unwrap().push(seen.clone());
        seen
    }

    pub async fn get_bearer(&self, path: &str) -> Seen {
        let auth = format!("Bearer {CONSOLE_TOKEN}");
        self.request("GET", path, &[("authorization", &auth)], None)
            .await
    }

    pub async fn post_bearer(&self, path: &str, json: serde_json::Value) -> Seen {
        let auth = format!("Bearer {CONSOLE_TOKEN}");
        self.request(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(json.to_string()),
        )
        .await
    }
}
