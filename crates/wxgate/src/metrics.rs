//! Prometheus metrics, served as text at `/metrics`.
//!
//! One registry per gateway. Labels are bounded sets (account names from the config,
//! outcomes, policies, official error codes) so cardinality stays fixed; OpenIDs and
//! message ids never become labels.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Buckets around WeChat's 5-second limit, with resolution where answers usually land.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0,
];

/// `account` + `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The account name, or `unknown` for a 404.
    pub account: String,
    /// What the request ended as: an answer kind or a rejection reason.
    pub outcome: String,
}

/// `account` + `policy` + `answer`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// The account name.
    pub account: String,
    /// The account's answer policy.
    pub policy: String,
    /// What the attempt answered.
    pub answer: String,
}

/// `account` + official error `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The account name.
    pub account: String,
    /// The official WXBizMsgCrypt code, e.g. `-40001`.
    pub code: String,
}

/// `account` only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The account name.
    pub account: String,
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests by account and outcome.
    pub requests: Family<OutcomeLabels, Counter>,
    /// Request latency, from the first byte to the answer.
    pub latency: Family<AccountLabels, Histogram>,
    /// Deliveries that found the message already claimed (WeChat retries, coalesced).
    pub retries_coalesced: Family<AccountLabels, Counter>,
    /// Answers by policy.
    pub answers: Family<AnswerLabels, Counter>,
    /// Signature and crypto failures by official code.
    pub crypto_failures: Family<CodeLabels, Counter>,
    /// Handler run time.
    pub handler_duration: Family<AccountLabels, Histogram>,
    /// Handler failures (errors, panics, timeouts).
    pub handler_failures: Family<AccountLabels, Counter>,
    /// Messages in the inbox, refreshed on every scrape from the store's counters.
    pub inbox_size: Gauge,
    /// Claims held live for single flight, refreshed on every scrape.
    pub live_claims: Gauge,
    /// Messages pruned from the inbox since the store opened, refreshed on every scrape.
    pub inbox_pruned: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wxgate");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let latency = Family::<AccountLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let retries_coalesced = Family::<AccountLabels, Counter>::default();
        let answers = Family::<AnswerLabels, Counter>::default();
        let crypto_failures = Family::<CodeLabels, Counter>::default();
        let handler_duration = Family::<AccountLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let handler_failures = Family::<AccountLabels, Counter>::default();
        let inbox_size = Gauge::default();
        let live_claims = Gauge::default();
        let inbox_pruned = Gauge::default();
        registry.register(
            "requests",
            "Webhook requests by account and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to answer",
            latency.clone(),
        );
        registry.register(
            "retries_coalesced",
            "Deliveries of an already-claimed message (WeChat retries) that did not run the handler again",
            retries_coalesced.clone(),
        );
        registry.register(
            "answers",
            "Answers by account, policy and kind",
            answers.clone(),
        );
        registry.register(
            "crypto_failures",
            "Signature and decryption failures by official WXBizMsgCrypt code",
            crypto_failures.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Handler run time",
            handler_duration.clone(),
        );
        registry.register(
            "handler_failures",
            "Handler errors, panics and timeouts",
            handler_failures.clone(),
        );
        registry.register(
            "inbox_messages",
            "Messages recorded in the inbox",
            inbox_size.clone(),
        );
        registry.register(
            "live_claims",
            "Claims held live for single flight (bounded by the claims' retention)",
            live_claims.clone(),
        );
        registry.register(
            "inbox_pruned",
            "Messages pruned from the inbox past inbox_retention_secs since the store opened",
            inbox_pruned.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            retries_coalesced,
            answers,
            crypto_failures,
            handler_duration,
            handler_failures,
            inbox_size,
            live_claims,
            inbox_pruned,
        }
    }

    /// Counts one request outcome.
    pub fn request(&self, account: &str, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabels {
                account: account.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one signature or crypto failure.
    pub fn crypto_failure(&self, account: &str, code: i32) {
        self.crypto_failures
            .get_or_create(&CodeLabels {
                account: account.to_owned(),
                code: code.to_string(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}
