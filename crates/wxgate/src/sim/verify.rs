//! `wxgate sim verify`: the URL-verification GET WeChat's console sends when a developer
//! saves the server URL, and whether the webhook echoed `echostr` exactly.
//!
//! The same in every mode (docs/protocol.md §2.1): only the token signs it, and the answer must
//! be `echostr` byte for byte, nothing more.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::{indent, millis, ms};
use super::send::{with_query, Exchange, Transport};
use super::wechat::WeChatSide;

/// The report of one verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The full URL with the query.
    pub url: String,
    /// The query string.
    pub query: String,
    /// The `echostr` sent.
    pub echostr: String,
    /// The status, when answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The body, when answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// How long the answer took, in ms.
    pub latency_ms: f64,
    /// Whether WeChat would accept the URL: status 200 and the exact echo.
    pub ok: bool,
    /// In plain words.
    pub verdict: String,
}

/// Sends the verification GET and checks the echo.
pub async fn verify(
    transport: &Transport,
    url: &str,
    side: &WeChatSide,
    timestamp: i64,
    nonce: &str,
    echostr: &str,
    timeout: Duration,
) -> VerifyReport {
    let request = side.verification(timestamp, nonce, echostr);
    let started = Instant::now();
    let result = transport
        .attempt(reqwest::Method::GET, url, &request, timeout)
        .await;
    let latency_ms = millis(started.elapsed());
    let mut report = VerifyReport {
        url: with_query(url, &request.query),
        query: request.query.clone(),
        echostr: echostr.to_owned(),
        status: None,
        response: None,
        latency_ms,
        ok: false,
        verdict: String::new(),
    };
    match result {
        Exchange::Answer { status, body } => {
            let text = String::from_utf8_lossy(&body).into_owned();
            report.ok = status == 200 && body == echostr.as_bytes();
            report.verdict = if report.ok {
                "OK — the echo matched; WeChat would accept this URL".to_owned()
            } else if status != 200 {
                format!("FAILED — HTTP {status}; WeChat's console would say the token check failed (Token 验证失败)")
            } else if text.trim() == echostr {
                "FAILED — the echo has extra whitespace; WeChat compares it exactly".to_owned()
            } else {
                "FAILED — the body is not the echostr; WeChat's console would say the token check failed (Token 验证失败)".to_owned()
            };
            report.status = Some(status);
            report.response = Some(text);
        }
        Exchange::TimedOut => {
            report.verdict = format!("FAILED — no answer within {} ms", timeout.as_millis());
        }
        Exchange::Failed(why) => {
            report.verdict = format!("FAILED — could not connect: {why}");
        }
    }
    report
}

impl VerifyReport {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "GET {}\nquery:\n{}\n",
            self.url,
            indent(&self.query.replace('&', "\n"), "  ")
        );
        if let (Some(status), Some(response)) = (self.status, &self.response) {
            out.push_str(&format!(
                "\nHTTP {status} in {}\n  response:\n{}\n",
                ms(self.latency_ms),
                indent(response, "    ")
            ));
        }
        out.push_str(&format!("\nverdict: {}\n", self.verdict));
        out
    }
}
