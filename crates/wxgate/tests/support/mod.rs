//! Shared test rig: a gateway built from a TOML snippet, driven through its real router
//! with requests signed and encrypted by the simulator's WeChat side.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the rig"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use wechat_proto::{AesKey, AppId, Header, Inbound, Kind, MessageCipher, Token};
use wxgate::config::{Config, Mode};
use wxgate::sim::wechat::{SignedRequest, Verdict, WeChatSide};
use wxgate::store::memory::MemoryStore;
use wxgate::store::Store;
use wxgate::{Gateway, GatewayBuilder};

pub const TOKEN: &str = "spamtest";
pub const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const OLD_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
pub const APP_ID: &str = "wx2c2769f8efd9abc2";
pub const SENDER: &str = "oyORnuP8q7ou2gfYjqLzSIWZf0rs";

/// One account per mode, plus `extra` TOML appended (more accounts or rules).
pub fn config(policy: &str, extra: &str) -> Config {
    let mut text = String::from("[store]\nbackend = \"memory\"\n");
    for (name, mode) in [
        ("plain", "plaintext"),
        ("compat", "compatible"),
        ("safe", "safe"),
    ] {
        text.push_str(&format!(
            "[[accounts]]\nname = \"{name}\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\nprevious_encoding_aes_key = \"{OLD_KEY}\"\nmode = \"{mode}\"\npolicy = \"{policy}\"\n[[accounts.rules]]\nkeyword = \"help\"\nreply = {{ type = \"text\", content = \"help for {{from_user_name}}\" }}\n"
        ));
    }
    text.push_str(extra);
    Config::from_toml(&text, &BTreeMap::new()).expect("test config is valid")
}

pub struct TestApp {
    pub gateway: Arc<Gateway>,
    pub router: axum::Router,
    pub store: Arc<dyn Store>,
}

impl TestApp {
    pub fn new(config: Config, build: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> TestApp {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(std::time::Duration::from_secs(600)));
        TestApp::with_store(config, store, build)
    }

    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        build: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
    ) -> TestApp {
        let gateway = Arc::new(build(GatewayBuilder::new(config, Arc::clone(&store))).build());
        let router = gateway.router();
        TestApp {
            gateway,
            router,
            store,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, String) {
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body.into())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn post(&self, account: &str, request: &SignedRequest) -> (StatusCode, String) {
        self.send(
            "POST",
            &format!("/wx/{account}"),
            &request.query,
            request.body.clone(),
        )
        .await
    }
}

pub fn side(mode: Mode) -> WeChatSide {
    side_with(mode, KEY, APP_ID)
}

pub fn side_with(mode: Mode, key: &str, app_id: &str) -> WeChatSide {
    WeChatSide {
        token: Token::new(TOKEN).unwrap(),
        mode,
        cipher: Some(MessageCipher::new(
            &AesKey::parse(key).unwrap(),
            AppId::new(app_id).unwrap(),
        )),
    }
}

pub fn now() -> i64 {
    wxgate::pipeline::unix_now()
}

pub fn message(msg_id: u64, kind: Kind) -> Inbound {
    let is_event = matches!(kind, Kind::Event(_));
    Inbound {
        header: Header {
            to_user_name: "gh_10f6c3c3ac5a".to_owned(),
            from_user_name: SENDER.to_owned(),
            create_time: 1_409_735_668,
            msg_id: (!is_event).then_some(msg_id),
            msg_data_id: None,
            idx: None,
        },
        kind,
        extra: Vec::new(),
    }
}

pub fn text(msg_id: u64, content: &str) -> Inbound {
    message(
        msg_id,
        Kind::Text {
            content: content.to_owned(),
        },
    )
}

/// Sends a typed message as WeChat would in `mode` to account `account`, and judges it.
pub async fn deliver(
    app: &TestApp,
    account: &str,
    mode: Mode,
    inbound: &Inbound,
    nonce: &str,
) -> (StatusCode, Verdict) {
    let side = side(mode);
    let request = side.message(inbound, now(), nonce, *b"0123456789abcdef");
    let (status, body) = app.post(account, &request).await;
    (
        status,
        side.judge(
            status.as_u16(),
            body.as_bytes(),
            &inbound.header.from_user_name,
        ),
    )
}

pub fn reply_text(verdict: &Verdict) -> Option<&str> {
    match verdict {
        Verdict::Reply(wechat_proto::Reply::Text { content }) => Some(content),
        _ => None,
    }
}

/// A bare router, for tasks that cannot borrow the app.
pub struct RouterOnly(pub axum::Router);

impl RouterOnly {
    pub async fn post(&self, account: &str, request: &SignedRequest) -> (StatusCode, String) {
        let uri = format!("/wx/{account}?{}", request.query);
        let http = Request::builder()
            .method("POST")
            .uri(uri)
            .body(Body::from(request.body.clone()))
            .unwrap();
        let response = self.0.clone().oneshot(http).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}
