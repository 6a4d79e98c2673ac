//! The last 15 minutes of the overview's charts: requests per second, answers by kind,
//! p50/p99 time to answer, retries coalesced, crypto failures by official code and
//! handler failures.
//!
//! One sampler task listens to the gateway's webhook events and, once a second, reads
//! the two counters that events do not carry (retries coalesced, handler failures) from
//! the metrics. Figures are kept per second in a ring of [`SECONDS`] buckets, each with
//! at most [`LATENCY_SAMPLES`] latencies, so memory is fixed whatever the traffic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::gateway::{Gateway, WebhookEvent};
use crate::metrics::AccountLabels;

/// How many seconds are kept: 15 minutes.
pub const SECONDS: usize = 900;
/// How many seconds one chart point covers.
pub const POINT_SECONDS: i64 = 10;
/// The most latencies kept per second (the first ones of that second).
pub const LATENCY_SAMPLES: usize = 256;

/// One second of figures.
#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Unix seconds.
    second: i64,
    requests: u64,
    answers: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
    retries_coalesced: u64,
    crypto_failures: BTreeMap<i32, u64>,
    handler_failures: u64,
}

/// The per-second ring.
#[derive(Debug, Default)]
pub struct Series {
    buckets: Mutex<VecDeque<Bucket>>,
}

/// One point of the charts: [`POINT_SECONDS`] seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// The first second it covers, Unix seconds.
    pub t: i64,
    /// Webhook requests per second (every outcome).
    pub requests_per_s: f64,
    /// Answers by kind (`replied`, `success`, …), rejections by outcome.
    pub answers: BTreeMap<String, u64>,
    /// The median time to answer, in ms (0 without requests).
    pub p50_ms: f64,
    /// The 99th percentile time to answer, in ms.
    pub p99_ms: f64,
    /// Retries of a claimed message that waited for the same work.
    pub retries_coalesced: u64,
    /// Signature and crypto failures by official code.
    pub crypto_failures: BTreeMap<String, u64>,
    /// Handler errors, panics and timeouts.
    pub handler_failures: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unix seconds now.
pub fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Series {
    /// An empty ring.
    pub fn new() -> Series {
        Series::default()
    }

    /// The bucket of `second`, created (and the ring trimmed) when new. Seconds older
    /// than the ring are dropped.
    fn with_bucket(&self, second: i64, update: impl FnOnce(&mut Bucket)) {
        let mut buckets = lock(&self.buckets);
        let newest = buckets.back().map_or(second, |b| b.second.max(second));
        if second <= newest - SECONDS as i64 {
            return;
        }
        let index = match buckets.iter().rposition(|b| b.second <= second) {
            Some(i) if buckets[i].second == second => i,
            Some(i) => {
                buckets.insert(
                    i + 1,
                    Bucket {
                        second,
                        ..Bucket::default()
                    },
                );
                i + 1
            }
            None => {
                buckets.push_front(Bucket {
                    second,
                    ..Bucket::default()
                });
                0
            }
        };
        update(&mut buckets[index]);
        while buckets
            .front()
            .is_some_and(|b| b.second <= newest - SECONDS as i64)
        {
            buckets.pop_front();
        }
    }

    /// Counts one webhook request.
    pub fn record(&self, event: &WebhookEvent) {
        self.with_bucket(event.at_ms.div_euclid(1000), |bucket| {
            bucket.requests += 1;
            *bucket.answers.entry(event.outcome.clone()).or_default() += 1;
            if bucket.latencies_ms.len() < LATENCY_SAMPLES {
                bucket.latencies_ms.push(event.latency_ms);
            }
            if let Some(code) = event.crypto_code {
                *bucket.crypto_failures.entry(code).or_default() += 1;
            }
        });
    }

    /// Adds the counter increases seen in `second`.
    pub fn add_counters(&self, second: i64, retries_coalesced: u64, handler_failures: u64) {
        if retries_coalesced == 0 && handler_failures == 0 {
            return;
        }
        self.with_bucket(second, |bucket| {
            bucket.retries_coalesced += retries_coalesced;
            bucket.handler_failures += handler_failures;
        });
    }

    /// The chart points of the 15 minutes up to `now` (Unix seconds), oldest first, one
    /// per [`POINT_SECONDS`], empty ones included so that time runs evenly.
    pub fn points(&self, now: i64) -> Vec<Point> {
        let buckets = lock(&self.buckets);
        let last = now.div_euclid(POINT_SECONDS) * POINT_SECONDS;
        let count = SECONDS as i64 / POINT_SECONDS;
        (0..count)
            .rev()
            .map(|back| {
                let start = last - back * POINT_SECONDS;
                let mut latencies = Vec::new();
                let mut point = Point {
                    t: start,
                    requests_per_s: 0.0,
                    answers: BTreeMap::new(),
                    p50_ms: 0.0,
                    p99_ms: 0.0,
                    retries_coalesced: 0,
                    crypto_failures: BTreeMap::new(),
                    handler_failures: 0,
                };
                let mut requests = 0;
                for bucket in buckets
                    .iter()
                    .filter(|b| (start..start + POINT_SECONDS).contains(&b.second))
                {
                    requests += bucket.requests;
                    for (answer, n) in &bucket.answers {
                        *point.answers.entry(answer.clone()).or_default() += n;
                    }
                    for (code, n) in &bucket.crypto_failures {
                        *point.crypto_failures.entry(code.to_string()).or_default() += n;
                    }
                    point.retries_coalesced += bucket.retries_coalesced;
                    point.handler_failures += bucket.handler_failures;
                    latencies.extend_from_slice(&bucket.latencies_ms);
                }
                point.requests_per_s = requests as f64 / POINT_SECONDS as f64;
                latencies.sort_by(f64::total_cmp);
                point.p50_ms = quantile(&latencies, 0.50);
                point.p99_ms = quantile(&latencies, 0.99);
                point
            })
            .collect()
    }
}

/// The nearest-rank quantile of sorted values; 0 when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] * 1000.0).round() / 1000.0
}

/// The totals of the two counters the events do not carry, over every account.
fn counter_totals(gateway: &Gateway) -> (u64, u64) {
    gateway
        .accounts()
        .fold((0, 0), |(retries, failures), account| {
            let labels = AccountLabels {
                account: account.config.name.clone(),
            };
            (
                retries
                    + gateway
                        .metrics
                        .retries_coalesced
                        .get_or_create(&labels)
                        .get(),
                failures
                    + gateway
                        .metrics
                        .handler_failures
                        .get_or_create(&labels)
                        .get(),
            )
        })
}

/// Starts the sampler: it ends when `stop` is cancelled or the gateway is dropped.
pub fn spawn_sampler(gateway: &Arc<Gateway>, series: Arc<Series>, stop: CancellationToken) {
    let mut events = gateway.subscribe();
    // Only a weak reference, so that the sampler does not keep a dropped gateway alive.
    let weak = Arc::downgrade(gateway);
    let mut totals = counter_totals(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) => series.record(&event),
                    // A burst larger than the backlog loses chart samples only.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let Some(gateway) = weak.upgrade() else { return };
                    let now = counter_totals(&gateway);
                    series.add_counters(
                        unix_seconds(),
                        now.0.saturating_sub(totals.0),
                        now.1.saturating_sub(totals.1),
                    );
                    totals = now;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: i64, outcome: &str, latency_ms: f64, code: Option<i32>) -> WebhookEvent {
        WebhookEvent {
            account: "a".to_owned(),
            outcome: outcome.to_owned(),
            at_ms,
            latency_ms,
            crypto_code: code,
        }
    }

    #[test]
    fn points_cover_fifteen_minutes_and_add_up() {
        let series = Series::new();
        let now = 1_700_000_000;
        for i in 0..100 {
            series.record(&event(
                now * 1000 - 5_000,
                "replied",
                f64::from(i + 1),
                None,
            ));
        }
        series.record(&event(now * 1000, "rejected_401", 0.5, Some(-40001)));
        series.add_counters(now, 2, 1);
        let points = series.points(now);
        assert_eq!(points.len(), 90);
        assert!(points.windows(2).all(|w| w[1].t - w[0].t == POINT_SECONDS));
        let last = &points[89];
        assert_eq!(last.t, 1_700_000_000);
        assert_eq!(last.answers.get("rejected_401"), Some(&1));
        assert_eq!(last.crypto_failures.get("-40001"), Some(&1));
        assert_eq!((last.retries_coalesced, last.handler_failures), (2, 1));
        let before = &points[88];
        assert_eq!(before.requests_per_s, 10.0);
        assert_eq!((before.p50_ms, before.p99_ms), (50.0, 99.0));
    }

    #[test]
    fn old_seconds_fall_out_of_the_ring() {
        let series = Series::new();
        let now = 1_700_000_000;
        series.record(&event((now - 2_000) * 1000, "success", 1.0, None));
        series.record(&event(now * 1000, "success", 1.0, None));
        // Older than the newest second by more than the ring: ignored.
        series.record(&event((now - 1_000) * 1000, "success", 1.0, None));
        assert_eq!(lock(&series.buckets).len(), 1);
        let total: f64 = series.points(now).iter().map(|p| p.requests_per_s).sum();
        assert_eq!(total, 0.1);
    }
}
