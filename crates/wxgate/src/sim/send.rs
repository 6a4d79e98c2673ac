//! One delivery the way WeChat makes it: the same signed request, re-sent when no answer
//! came in time, until an answer is usable or the retries run out — and the report of
//! every attempt.
//!
//! WeChat waits 5 s per attempt, then drops the connection and re-sends the identical
//! request, up to three more times (docs/protocol.md §6.1). An answer with status 200 ends the
//! delivery whatever it holds: WeChat got an answer, so a bad one is shown to the follower
//! as "该公众号暂时无法提供服务，请稍后再试" rather than retried. A timeout, a failed connection
//! or (by default) a status other than 200 counts as no answer and is retried; WeChat does
//! not document status codes, and wxgate itself answers 503 when its store fails precisely
//! so that WeChat retries.
//!
//! The HTTP client here is `reqwest` (https, redirects off, no proxy: WeChat connects
//! straight to the URL). The load generator uses a leaner client of its own.

use std::time::{Duration, Instant};

use serde::Serialize;
use wechat_proto::Reply;

use super::report::{indent, millis};
use super::wechat::{Judgement, SignedRequest, Unusable, Verdict, WeChatSide};

/// The most response bytes kept per attempt; WeChat's own limit is far below.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// WeChat's retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long one attempt waits for the whole answer (WeChat: 5 s).
    pub timeout: Duration,
    /// How many times the request is re-sent after the first attempt (WeChat: 3).
    pub retries: u32,
    /// Whether a status other than 200 counts as no answer and is retried.
    pub retry_on_status: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(5),
            retries: 3,
            retry_on_status: true,
        }
    }
}

/// The simulator's HTTP client, shared by every delivery of a run.
#[derive(Debug, Clone)]
pub struct Transport {
    client: reqwest::Client,
}

/// One HTTP exchange, before WeChat judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// An HTTP answer.
    Answer {
        /// The status code.
        status: u16,
        /// The body as received (at most [`MAX_RESPONSE_BYTES`]).
        body: Vec<u8>,
    },
    /// No complete answer within the timeout; the connection was dropped.
    TimedOut,
    /// The connection failed before an answer.
    Failed(String),
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// An HTTP answer, judged.
    Answered {
        /// The status code.
        status: u16,
        /// The body as received (at most [`MAX_RESPONSE_BYTES`]).
        body: Vec<u8>,
        /// WeChat's reading of it.
        judgement: Judgement,
    },
    /// No complete answer within the timeout; the connection was dropped.
    TimedOut,
    /// The connection failed before an answer.
    Failed(String),
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// 1 for the first delivery.
    pub number: u32,
    /// When it was sent, counted from the first attempt.
    pub sent_after: Duration,
    /// How long it took to end (answer, timeout or failure).
    pub latency: Duration,
    /// How it ended.
    pub result: AttemptResult,
}

/// A whole delivery: every attempt and what the follower finally sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The final verdict.
    pub verdict: Verdict,
}

impl Transport {
    /// A client without proxies or redirects, as WeChat's fetcher behaves.
    pub fn new() -> Result<Transport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wxgate-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Transport { client })
    }

    /// Sends one attempt and reads the answer within `timeout`.
    pub async fn attempt(
        &self,
        method: reqwest::Method,
        url: &str,
        request: &SignedRequest,
        timeout: Duration,
    ) -> Exchange {
        let url = with_query(url, &request.query);
        let mut builder = self.client.request(method.clone(), url);
        if method == reqwest::Method::POST {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "text/xml")
                .body(request.body.clone());
        }
        let exchange = async {
            let mut response = builder.send().await?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room < chunk.len() {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Exchange::TimedOut,
            Ok(Err(e)) if e.is_timeout() => Exchange::TimedOut,
            Ok(Err(e)) => Exchange::Failed(error_chain(&e)),
            Ok(Ok((status, body))) => Exchange::Answer { status, body },
        }
    }

    /// Delivers `request` with WeChat's retries and judges the answers.
    /// `sender` is the request's `FromUserName`, which a reply must be addressed to.
    pub async fn deliver(
        &self,
        url: &str,
        side: &WeChatSide,
        request: &SignedRequest,
        sender: &str,
        policy: &RetryPolicy,
    ) -> Delivery {
        self.deliver_round_robin(&[url], 0, side, request, sender, policy)
            .await
    }

    /// Like [`Transport::deliver`], with attempt `k` (from 0) sent to
    /// `urls[(start + k) % urls.len()]`: several instances behind one account, each retry
    /// landing on the next one as a load balancer may send it.
    pub async fn deliver_round_robin(
        &self,
        urls: &[&str],
        start: usize,
        side: &WeChatSide,
        request: &SignedRequest,
        sender: &str,
        policy: &RetryPolicy,
    ) -> Delivery {
        let first = Instant::now();
        let mut attempts = Vec::new();
        let total = policy.retries.saturating_add(1);
        for number in 1..=total {
            let sent = Instant::now();
            let url = urls
                .get((start + number as usize - 1) % urls.len().max(1))
                .copied()
                .unwrap_or_default();
            let result = match self
                .attempt(reqwest::Method::POST, url, request, policy.timeout)
                .await
            {
                Exchange::Answer { status, body } => {
                    let judgement = side.judge_detailed(status, &body, sender);
                    AttemptResult::Answered {
                        status,
                        body,
                        judgement,
                    }
                }
                Exchange::TimedOut => AttemptResult::TimedOut,
                Exchange::Failed(why) => AttemptResult::Failed(why),
            };
            let verdict = match &result {
                AttemptResult::Answered {
                    status, judgement, ..
                } => {
                    let retry = *status != 200 && policy.retry_on_status;
                    (!retry).then(|| judgement.verdict.clone())
                }
                _ => None,
            };
            let last_verdict = final_verdict(&result);
            attempts.push(Attempt {
                number,
                sent_after: sent.duration_since(first),
                latency: sent.elapsed(),
                result,
            });
            if let Some(verdict) = verdict {
                return Delivery { attempts, verdict };
            }
            if number == total {
                return Delivery {
                    attempts,
                    verdict: last_verdict,
                };
            }
        }
        Delivery {
            attempts,
            verdict: Verdict::Unusable(Unusable::Timeout),
        }
    }
}

/// The verdict an attempt leaves when no retry follows it.
fn final_verdict(result: &AttemptResult) -> Verdict {
    match result {
        AttemptResult::Answered { judgement, .. } => judgement.verdict.clone(),
        AttemptResult::TimedOut => Verdict::Unusable(Unusable::Timeout),
        AttemptResult::Failed(why) => Verdict::Unusable(Unusable::Unreachable(why.clone())),
    }
}

/// `url` with `query` appended (after `?`, or `&` when it already has a query).
pub fn with_query(url: &str, query: &str) -> String {
    if query.is_empty() {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// An error with its causes, on one line (reqwest's top level says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// The report of `wxgate sim send`.

/// The request as sent, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// `POST` (or `GET` for verification).
    pub method: &'static str,
    /// The full URL with the query.
    pub url: String,
    /// The mode the request was built for.
    pub mode: &'static str,
    /// The message kind, e.g. `text` or `event:subscribe`.
    pub kind: String,
    /// The query string.
    pub query: String,
    /// The message XML before encryption.
    pub plaintext: String,
    /// The body as sent (the envelope in compatible and safe modes).
    pub body: String,
    /// Whether the body carries `Encrypt`.
    pub encrypted: bool,
}

/// One attempt, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// 1 for the first delivery.
    pub attempt: u32,
    /// When it was sent, in ms after the first attempt.
    pub sent_at_ms: f64,
    /// How long it took, in ms.
    pub latency_ms: f64,
    /// `answered`, `timeout` or `error`.
    pub result: &'static str,
    /// The HTTP status, when answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The raw response body, when answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The decrypted reply XML, when the answer was an encrypted reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decrypted: Option<String>,
    /// WeChat's reading of the answer: `reply`, `acknowledged` or `unusable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    /// Why the answer is unusable, or the connection error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Whether WeChat re-sends after this attempt.
    pub retried: bool,
}

/// The final outcome, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeView {
    /// Whether the delivery succeeded (a reply or an acknowledgement).
    pub ok: bool,
    /// `reply`, `acknowledged` or `unusable`.
    pub verdict: &'static str,
    /// What the follower sees, in plain words.
    pub follower_sees: String,
    /// Why WeChat could not use the answer, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The parsed reply, in its JSON form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// How many attempts were made.
    pub attempts: u32,
}

/// The whole report of one `sim send`.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    /// What was sent.
    pub request: RequestView,
    /// Every attempt.
    pub attempts: Vec<AttemptView>,
    /// What the follower sees.
    pub outcome: OutcomeView,
}

impl SendReport {
    /// Builds the report of a delivery.
    pub fn new(request: RequestView, delivery: &Delivery, policy: &RetryPolicy) -> SendReport {
        let count = delivery.attempts.len();
        let attempts = delivery
            .attempts
            .iter()
            .enumerate()
            .map(|(i, attempt)| attempt_view(attempt, i + 1 < count, policy))
            .collect();
        SendReport {
            request,
            attempts,
            outcome: outcome_view(&delivery.verdict, count as u32, policy),
        }
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let r = &self.request;
        let mut out = format!(
            "{} {}\n  mode {}, {}\n\nquery:\n{}\n",
            r.method,
            r.url,
            r.mode,
            r.kind,
            indent(&r.query.replace('&', "\n"), "  ")
        );
        if r.encrypted {
            out.push_str(&format!(
                "message (decrypted):\n{}\nbody (as sent, encrypted):\n{}\n",
                indent(&r.plaintext, "  "),
                indent(&r.body, "  ")
            ));
        } else if !r.body.is_empty() || r.method == "POST" {
            out.push_str(&format!("body (as sent):\n{}\n", indent(&r.body, "  ")));
        }
        for attempt in &self.attempts {
            out.push('\n');
            out.push_str(&attempt_text(attempt));
        }
        let o = &self.outcome;
        out.push_str(&format!(
            "\nverdict: {} — the follower sees {}",
            if o.ok { "OK" } else { "FAILED" },
            o.follower_sees
        ));
        if let Some(reason) = &o.reason {
            out.push_str(&format!("\n  because {reason}"));
        }
        out.push_str(&format!(
            "\n  after {} attempt{}\n",
            o.attempts,
            if o.attempts == 1 { "" } else { "s" }
        ));
        out
    }
}

fn attempt_text(a: &AttemptView) -> String {
    let head = format!("attempt {} at +{:.0} ms: ", a.attempt, a.sent_at_ms);
    let mut out = match a.result {
        "answered" => format!(
            "{head}HTTP {} in {}\n  response:\n{}\n",
            a.status.unwrap_or_default(),
            super::report::ms(a.latency_ms),
            indent(a.response.as_deref().unwrap_or_default(), "    ")
        ),
        "timeout" => format!(
            "{head}no answer; WeChat dropped the connection after {}\n",
            super::report::ms(a.latency_ms)
        ),
        _ => format!(
            "{head}connection failed after {}: {}\n",
            super::report::ms(a.latency_ms),
            a.problem.as_deref().unwrap_or_default()
        ),
    };
    if let Some(decrypted) = &a.decrypted {
        out.push_str(&format!(
            "  reply (decrypted):\n{}\n",
            indent(decrypted, "    ")
        ));
    }
    if a.result == "answered" {
        match (a.verdict, &a.problem) {
            (Some("unusable"), Some(problem)) => {
                out.push_str(&format!("  unusable: {problem}\n"));
            }
            (Some(verdict), _) => out.push_str(&format!("  read as: {verdict}\n")),
            _ => {}
        }
    }
    if a.retried {
        out.push_str("  → WeChat re-sends the identical request\n");
    }
    out
}

fn attempt_view(attempt: &Attempt, retried: bool, policy: &RetryPolicy) -> AttemptView {
    let mut view = AttemptView {
        attempt: attempt.number,
        sent_at_ms: millis(attempt.sent_after),
        latency_ms: millis(attempt.latency),
        result: "answered",
        status: None,
        response: None,
        decrypted: None,
        verdict: None,
        problem: None,
        retried,
    };
    match &attempt.result {
        AttemptResult::Answered {
            status,
            body,
            judgement,
        } => {
            view.status = Some(*status);
            view.response = Some(String::from_utf8_lossy(body).into_owned());
            view.decrypted = judgement.decrypted.clone();
            view.verdict = Some(judgement.verdict.name());
            if let Verdict::Unusable(why) = &judgement.verdict {
                view.problem = Some(reason(why, policy));
            }
        }
        AttemptResult::TimedOut => view.result = "timeout",
        AttemptResult::Failed(why) => {
            view.result = "error";
            view.problem = Some(why.clone());
        }
    }
    view
}

/// Why an answer is unusable, with the configured timeout rather than WeChat's 5 s.
pub fn reason(why: &Unusable, policy: &RetryPolicy) -> String {
    match why {
        Unusable::Timeout => format!(
            "no answer within {} ms on any attempt",
            policy.timeout.as_millis()
        ),
        other => other.to_string(),
    }
}

fn outcome_view(verdict: &Verdict, attempts: u32, policy: &RetryPolicy) -> OutcomeView {
    OutcomeView {
        ok: !verdict.is_failure(),
        verdict: verdict.name(),
        follower_sees: verdict.follower_sees(),
        reason: match verdict {
            Verdict::Unusable(why) => Some(reason(why, policy)),
            _ => None,
        },
        reply: match verdict {
            Verdict::Reply(reply) => Some(reply.clone()),
            _ => None,
        },
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_appended() {
        assert_eq!(with_query("http://h/wx/a", "x=1"), "http://h/wx/a?x=1");
        assert_eq!(
            with_query("http://h/wx/a?k=v", "x=1"),
            "http://h/wx/a?k=v&x=1"
        );
        assert_eq!(with_query("http://h/wx/a", ""), "http://h/wx/a");
    }
}
