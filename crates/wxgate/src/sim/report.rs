//! Shared pieces of the simulator's reports: a latency histogram cheap enough to record
//! every request of a load run, percentiles, and the few formatting helpers the text
//! reports share.
//!
//! Reports are plain data (`serde::Serialize`) so that every subcommand has the same
//! `--json` form as its text form; nothing here does I/O.

use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two: 64 keeps every recorded value within 1.6 %.
const SUB_BITS: u32 = 6;
const SUB_COUNT: usize = 1 << SUB_BITS;
/// Values up to 2^40 µs (12 days) are bucketed; larger ones land in the last bucket.
const MAX_EXPONENT: u32 = 40;
const BUCKETS: usize = SUB_COUNT + (MAX_EXPONENT - SUB_BITS + 1) as usize * SUB_COUNT;

/// A log-linear histogram of latencies in microseconds (an HDR histogram in miniature).
///
/// Recording is a few arithmetic operations and one increment, so a load generator can
/// record every request without measuring itself.
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    count: u64,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("max_us", &self.max_us)
            .finish_non_exhaustive()
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values were recorded.
    pub count: u64,
    /// The mean.
    pub mean_ms: f64,
    /// The median.
    pub p50_ms: f64,
    /// The 90th percentile.
    pub p90_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The 99.9th percentile.
    pub p999_ms: f64,
    /// The largest value (exact).
    pub max_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB_COUNT as u64 {
        return us as usize;
    }
    let exponent = (63 - us.leading_zeros()).min(MAX_EXPONENT);
    let shift = exponent - SUB_BITS;
    let sub = ((us >> shift) as usize).min(2 * SUB_COUNT - 1) - SUB_COUNT;
    SUB_COUNT + (shift as usize) * SUB_COUNT + sub
}

/// The middle of a bucket, in microseconds.
fn bucket_value(index: usize) -> f64 {
    if index < SUB_COUNT {
        return index as f64;
    }
    let shift = ((index - SUB_COUNT) / SUB_COUNT) as u32;
    let sub = ((index - SUB_COUNT) % SUB_COUNT + SUB_COUNT) as u64;
    let low = sub << shift;
    let width = 1u64 << shift;
    low as f64 + (width as f64 - 1.0) / 2.0
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram::default()
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)] += 1;
        self.count += 1;
        self.sum_us += u128::from(us);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at quantile `q` (0..=1), in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Never report beyond the exact extremes.
                return bucket_value(index).clamp(self.min_us as f64, self.max_us as f64);
            }
        }
        self.max_us as f64
    }

    /// The usual percentiles, in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        // Milliseconds with microsecond resolution.
        let ms = |us: f64| (us).round() / 1000.0;
        let mean = if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64
        };
        let max = if self.count == 0 {
            0.0
        } else {
            self.max_us as f64
        };
        Percentiles {
            count: self.count,
            mean_ms: ms(mean),
            p50_ms: ms(self.quantile_us(0.50)),
            p90_ms: ms(self.quantile_us(0.90)),
            p99_ms: ms(self.quantile_us(0.99)),
            p999_ms: ms(self.quantile_us(0.999)),
            max_ms: ms(max),
        }
    }
}

impl Percentiles {
    /// One line: `p50 1.23 ms · p90 … · max …`.
    pub fn line(&self) -> String {
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (mean {}, n = {})",
            ms(self.p50_ms),
            ms(self.p90_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms),
            ms(self.mean_ms),
            self.count
        )
    }
}

/// A duration in milliseconds with three decimals, for JSON.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Milliseconds for people: `0.412 ms`, `12.3 ms`, `5002 ms`.
pub fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.3} ms")
    } else if value < 100.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
    }
}

/// Indents every line of `text` by `prefix`.
pub fn indent(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(prefix);
        out.push_str(line);
    }
    if text.is_empty() {
        out.push_str(prefix);
        out.push_str("(empty)");
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_precision() {
        let mut histogram = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            histogram.record(Duration::from_micros(us));
        }
        let p = histogram.percentiles();
        assert_eq!(p.count, 10_000);
        for (got, want) in [(p.p50_ms, 5.0), (p.p90_ms, 9.0), (p.p99_ms, 9.9)] {
            assert!((got - want).abs() / want < 0.02, "{got} vs {want}");
        }
        assert_eq!(p.max_ms, 10.0);
        assert!((p.mean_ms - 5.0005).abs() < 0.001, "{}", p.mean_ms);
    }

    #[test]
    fn buckets_are_monotonic_and_merge_adds() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let bucket = bucket_of(us);
            assert!(bucket >= last);
            assert!((bucket_value(bucket) - us as f64).abs() <= us as f64 / 60.0 + 1.0);
            last = bucket;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.percentiles().max_ms, 3.0);
        assert_eq!(LatencyHistogram::new().percentiles().p99_ms, 0.0);
    }

    #[test]
    fn text_helpers() {
        assert_eq!(truncate("你好世界", 2), "你好…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(indent("a\nb", "  "), "  a\n  b");
        assert_eq!(ms(0.4123), "0.412 ms");
    }
}
