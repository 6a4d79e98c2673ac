//! `wxgate sim storm`: many distinct messages at once, each delivered with WeChat's retry
//! behaviour, some of them sent twice — the traffic of a busy account on a bad day.
//!
//! Where `send` shows one delivery in detail and `load` measures raw throughput, a storm
//! checks behaviour under concurrency: does every message get an answer in time, and does
//! a duplicate delivery of the same message get the *same* answer (a webhook without
//! single flight runs its logic twice, and a non-deterministic one answers differently)?
//! The plan (which messages, which duplicates) is built before anything is sent, so a run
//! is reproducible apart from timing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde::Serialize;
use wechat_proto::Reply;

use super::messages::{inbound, kind_label, mixed_kind};
use super::report::{millis, LatencyHistogram, Percentiles};
use super::send::{reason, AttemptResult, Delivery, RetryPolicy, Transport};
use super::wechat::{SignedRequest, Verdict, WeChatSide};

/// What a storm sends.
#[derive(Debug, Clone, PartialEq)]
pub struct StormOptions {
    /// How many distinct messages.
    pub messages: usize,
    /// How many deliveries run at once.
    pub concurrency: usize,
    /// The share of messages (0 to 1) that are delivered a second time, as a separate
    /// delivery started right after the first.
    pub duplicate_share: f64,
    /// WeChat's retry timing, for every delivery.
    pub policy: RetryPolicy,
}

/// One delivery of the plan.
#[derive(Debug, Clone)]
pub struct StormJob {
    /// The message's number, from 1.
    pub message: usize,
    /// Whether this is the second delivery of the message.
    pub duplicate: bool,
    /// The kind label, e.g. `text` or `event:scan`.
    pub kind: String,
    /// The `FromUserName` (each message has its own follower).
    pub sender: String,
    /// The signed request.
    pub request: SignedRequest,
}

/// Whether message `index` (from 0) of a storm is duplicated, spreading the duplicates
/// evenly: exactly `round(n × share)` of the first `n` messages are.
pub fn is_duplicated(index: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    let before = (index as f64 * share).round();
    let after = ((index + 1) as f64 * share).round();
    after > before
}

/// Builds the storm: distinct messages of every kind in turn, each from its own follower,
/// `MsgId`s counting up from `first_msg_id`, duplicates right after their original.
pub fn plan(
    side: &WeChatSide,
    options: &StormOptions,
    to_user_name: &str,
    now: i64,
    first_msg_id: u64,
    rng: &mut impl Rng,
) -> Vec<StormJob> {
    let mut jobs = Vec::with_capacity(options.messages * 2);
    let run: u32 = rng.random();
    for index in 0..options.messages {
        let n = index as u64;
        let kind = mixed_kind(n);
        let label = kind_label(&kind);
        let sender = format!("oWxgateStorm{run:08x}{index:08}");
        let message = inbound(
            to_user_name,
            &sender,
            now,
            first_msg_id.wrapping_add(n),
            kind,
        );
        let xml = message.to_xml();
        let copies = if is_duplicated(index, options.duplicate_share) {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let nonce = rng.random_range(100_000_000u32..4_000_000_000).to_string();
            let request = side.message_xml(&xml, now, &nonce, rng.random());
            jobs.push(StormJob {
                message: index + 1,
                duplicate: copy == 1,
                kind: label.clone(),
                sender: sender.clone(),
                request,
            });
        }
    }
    jobs
}

/// One delivery's result, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct MessageOutcome {
    /// The message's number, from 1.
    pub message: usize,
    /// Whether this was the duplicate delivery.
    pub duplicate: bool,
    /// The kind label.
    pub kind: String,
    /// How many attempts the delivery took.
    pub attempts: u32,
    /// `reply`, `acknowledged` or `unusable`.
    pub outcome: &'static str,
    /// What the follower sees, in plain words.
    pub follower_sees: String,
    /// Why WeChat could not use the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reply, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// From the first send to the final verdict, in ms.
    pub total_ms: f64,
}

/// The overall counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormTotals {
    /// Distinct messages.
    pub messages: usize,
    /// Deliveries: messages plus duplicate sends.
    pub deliveries: usize,
    /// Deliveries answered with a passive reply.
    pub answered_passively: usize,
    /// Deliveries acknowledged (`success` or empty).
    pub acknowledged: usize,
    /// Deliveries that left the follower with WeChat's error message.
    pub failed: usize,
    /// HTTP attempts in all.
    pub attempts: usize,
    /// Deliveries that needed more than one attempt.
    pub retried: usize,
}

/// How the duplicate deliveries fared against their originals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DuplicateTotals {
    /// Duplicate deliveries sent.
    pub sent: usize,
    /// Both got the same reply (the follower sees it twice, but consistently).
    pub same_reply: usize,
    /// Both got a reply, and they differ: the webhook ran its logic twice.
    pub different_reply: usize,
    /// Any other combination (acknowledged, failed, one reply only).
    pub other: usize,
}

/// The report of a storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// The webhook URL.
    pub url: String,
    /// The mode requests were sent in.
    pub mode: &'static str,
    /// Deliveries at once.
    pub concurrency: usize,
    /// Per-attempt timeout, in ms.
    pub timeout_ms: u64,
    /// Retries per delivery.
    pub retries: u32,
    /// Wall-clock time of the whole storm, in ms.
    pub elapsed_ms: f64,
    /// Whether every delivery succeeded and no duplicate got a different reply.
    pub ok: bool,
    /// The overall counts.
    pub totals: StormTotals,
    /// The duplicates.
    pub duplicates: DuplicateTotals,
    /// Failed deliveries by reason.
    pub failures: BTreeMap<String, usize>,
    /// Latency of every answered attempt.
    pub attempt_latency: Percentiles,
    /// Time from a delivery's first send to its final verdict (retries included).
    pub delivery_time: Percentiles,
    /// Every delivery, in plan order.
    pub deliveries: Vec<MessageOutcome>,
}

/// Runs the plan against `url` and reports.
pub async fn run(
    transport: &Transport,
    url: &str,
    side: &WeChatSide,
    jobs: Vec<StormJob>,
    options: &StormOptions,
) -> StormReport {
    run_fleet(transport, &[url.to_owned()], side, jobs, options).await
}

/// Runs the plan against several instances of one gateway and reports: the attempts of
/// the delivery in plan position `i` go to `urls[i]`, `urls[i + 1]`, … (round-robin), so
/// that with more than one URL every retry reaches another instance than the attempt
/// before it.
pub async fn run_fleet(
    transport: &Transport,
    urls: &[String],
    side: &WeChatSide,
    jobs: Vec<StormJob>,
    options: &StormOptions,
) -> StormReport {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let urls = &urls;
    let started = Instant::now();
    let policy = options.policy;
    let deliveries: Vec<(usize, StormJob, Delivery, Duration)> =
        futures::stream::iter(jobs.into_iter().enumerate())
            .map(|(order, job)| async move {
                let sent = Instant::now();
                let delivery = transport
                    .deliver_round_robin(urls, order, side, &job.request, &job.sender, &policy)
                    .await;
                (order, job, delivery, sent.elapsed())
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
    let elapsed = started.elapsed();
    let mut deliveries = deliveries;
    deliveries.sort_by_key(|(order, ..)| *order);
    summarize(&urls.join(" "), side, options, &deliveries, elapsed)
}

fn summarize(
    url: &str,
    side: &WeChatSide,
    options: &StormOptions,
    deliveries: &[(usize, StormJob, Delivery, Duration)],
    elapsed: Duration,
) -> StormReport {
    let mut totals = StormTotals {
        deliveries: deliveries.len(),
        ..StormTotals::default()
    };
    let mut duplicates = DuplicateTotals::default();
    let mut failures = BTreeMap::new();
    let mut attempt_latency = LatencyHistogram::new();
    let mut delivery_time = LatencyHistogram::new();
    let mut originals: BTreeMap<usize, &Verdict> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for (_, job, delivery, total) in deliveries {
        totals.attempts += delivery.attempts.len();
        if delivery.attempts.len() > 1 {
            totals.retried += 1;
        }
        for attempt in &delivery.attempts {
            if matches!(attempt.result, AttemptResult::Answered { .. }) {
                attempt_latency.record(attempt.latency);
            }
        }
        delivery_time.record(*total);
        let verdict = &delivery.verdict;
        match verdict {
            Verdict::Reply(_) => totals.answered_passively += 1,
            Verdict::Acknowledged => totals.acknowledged += 1,
            Verdict::Unusable(why) => {
                totals.failed += 1;
                *failures.entry(reason(why, &options.policy)).or_insert(0) += 1;
            }
        }
        if job.duplicate {
            duplicates.sent += 1;
            match (originals.get(&job.message), verdict) {
                (Some(Verdict::Reply(first)), Verdict::Reply(second)) if first == second => {
                    duplicates.same_reply += 1;
                }
                (Some(Verdict::Reply(_)), Verdict::Reply(_)) => duplicates.different_reply += 1,
                _ => duplicates.other += 1,
            }
        } else {
            totals.messages += 1;
            originals.insert(job.message, verdict);
        }
        outcomes.push(MessageOutcome {
            message: job.message,
            duplicate: job.duplicate,
            kind: job.kind.clone(),
            attempts: delivery.attempts.len() as u32,
            outcome: verdict.name(),
            follower_sees: verdict.follower_sees(),
            reason: match verdict {
                Verdict::Unusable(why) => Some(reason(why, &options.policy)),
                _ => None,
            },
            reply: match verdict {
                Verdict::Reply(reply) => Some(reply.clone()),
                _ => None,
            },
            total_ms: millis(*total),
        });
    }
    StormReport {
        url: url.to_owned(),
        mode: side.mode.as_str(),
        concurrency: options.concurrency,
        timeout_ms: options.policy.timeout.as_millis() as u64,
        retries: options.policy.retries,
        elapsed_ms: millis(elapsed),
        ok: totals.failed == 0 && duplicates.different_reply == 0,
        totals,
        duplicates,
        failures,
        attempt_latency: attempt_latency.percentiles(),
        delivery_time: delivery_time.percentiles(),
        deliveries: outcomes,
    }
}

impl StormReport {
    /// The human-readable form; `per_message` adds one line per delivery.
    pub fn to_text(&self, per_message: bool) -> String {
        let mut out = String::new();
        if per_message {
            out.push_str(
                "  msg  dup  kind                 attempts  outcome       ms  the follower sees\n",
            );
            for d in &self.deliveries {
                out.push_str(&format!(
                    "{:>5}  {:<3}  {:<20} {:>8}  {:<12} {:>6.0}  {}{}\n",
                    d.message,
                    if d.duplicate { "yes" } else { "" },
                    d.kind,
                    d.attempts,
                    d.outcome,
                    d.total_ms,
                    super::report::truncate(&d.follower_sees, 60),
                    d.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
            out.push('\n');
        }
        let t = &self.totals;
        out.push_str(&format!(
            "storm against {} ({} mode): {} messages, {} deliveries at concurrency {}, in {:.0} ms\n",
            self.url, self.mode, t.messages, t.deliveries, self.concurrency, self.elapsed_ms
        ));
        out.push_str(&format!(
            "  answered passively {} · acknowledged {} · failed {}\n  attempts {} · deliveries retried {} (timeout {} ms, up to {} retries)\n",
            t.answered_passively, t.acknowledged, t.failed, t.attempts, t.retried, self.timeout_ms, self.retries
        ));
        let d = &self.duplicates;
        if d.sent > 0 {
            out.push_str(&format!(
                "  duplicates sent {} · same reply {} · DIFFERENT reply {} · other {}\n",
                d.sent, d.same_reply, d.different_reply, d.other
            ));
        }
        for (why, count) in &self.failures {
            out.push_str(&format!("  failed ×{count}: {why}\n"));
        }
        out.push_str(&format!(
            "  attempt latency: {}\n  delivery time:   {}\n",
            self.attempt_latency.line(),
            self.delivery_time.line()
        ));
        out.push_str(if self.ok {
            "verdict: OK — every follower got an answer\n"
        } else if self.totals.failed > 0 {
            "verdict: FAILED — some followers see “该公众号暂时无法提供服务，请稍后再试”\n"
        } else {
            "verdict: FAILED — a duplicate delivery got a different reply\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_spread_evenly() {
        let count = |n: usize, share: f64| (0..n).filter(|&i| is_duplicated(i, share)).count();
        assert_eq!(count(100, 0.0), 0);
        assert_eq!(count(100, 0.1), 10);
        assert_eq!(count(100, 1.0), 100);
        assert_eq!(count(7, 0.5), 4);
        let picked: Vec<usize> = (0..10).filter(|&i| is_duplicated(i, 0.2)).collect();
        assert_eq!(picked.len(), 2);
        assert_ne!(picked[0] + 1, picked[1]);
    }
}
