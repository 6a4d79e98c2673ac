//! `wxgate sim load`: a protocol-aware load generator.
//!
//! Generic HTTP load tools replay one request, so a webhook that deduplicates answers all
//! but the first from its cache and the measurement says nothing about the real cost
//! (signature, decryption, parsing, the durable inbox write). This one pre-builds a pool of
//! distinct, correctly signed and encrypted messages — each with its own `MsgId` and
//! follower — as complete HTTP/1.1 requests in one arena, then keeps C keep-alive
//! connections busy for D seconds with the lean client of [`super::http1`], recording every
//! latency in a histogram. Building everything up front keeps SHA1 and AES off the
//! measuring path, so one core can drive tens of thousands of requests per second. When a
//! run needs more requests than the pool holds, the pool is reused and the report says how
//! many requests were repeats.
//!
//! Every `judge_every`-th answer is judged as WeChat would (signature, decryption,
//! recipient), so a fast server that answers garbage does not pass as fast.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;
use wechat_proto::Kind;

use super::http1::Connection;
use super::messages::{inbound, mixed_kind};
use super::report::{LatencyHistogram, Percentiles};
use super::send::with_query;
use super::wechat::{Verdict, WeChatSide};

/// Where the load goes: resolved once, so that no request pays for DNS or URL parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadTarget {
    /// The URL as given.
    pub url: String,
    /// The socket address connected to.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The request target: path and any query of the URL.
    pub path: String,
}

/// Why a load target is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Not an `http://` URL.
    #[error("{0}: the load generator speaks plain http:// only (run it next to the server)")]
    Scheme(String),
    /// The URL could not be read.
    #[error("{url}: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The host did not resolve.
    #[error("{url}: cannot resolve the host: {source}")]
    Resolve {
        /// The URL.
        url: String,
        /// The resolver's error.
        source: std::io::Error,
    },
}

impl LoadTarget {
    /// Parses an `http://host[:port]/path[?query]` URL and resolves the host.
    pub async fn resolve(url: &str) -> Result<LoadTarget, TargetError> {
        let invalid = |reason: &str| TargetError::Invalid {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| TargetError::Scheme(url.to_owned()))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid("no host (or user info, which is not supported)"));
        }
        if path.contains('#') || path.bytes().any(|b| b <= b' ') {
            return Err(invalid("the path must not contain spaces or a fragment"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|source| TargetError::Resolve {
                url: url.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| invalid("the host has no address"))?;
        Ok(LoadTarget {
            url: url.to_owned(),
            addr,
            host: authority.to_owned(),
            path,
        })
    }
}

/// Which messages the pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoadMix {
    /// Text messages only (the common case, and the benchmark's).
    #[default]
    Text,
    /// Every kind and common event in turn.
    Mixed,
}

/// Pre-built requests, back to back in one buffer.
#[derive(Debug)]
pub struct RequestPool {
    arena: Vec<u8>,
    /// Start and length of each request in the arena.
    spans: Vec<(usize, usize)>,
    /// A tag making this run's followers distinct from any other run's.
    run: u32,
}

impl RequestPool {
    /// Builds `count` distinct requests for `side` (spread over `threads` threads).
    ///
    /// Message `i` has `MsgId` `first_msg_id + i` and its own follower, so every request
    /// has its own dedup key: a gateway cannot answer any of them from a cache.
    pub fn build(
        side: &WeChatSide,
        target: &LoadTarget,
        count: usize,
        mix: LoadMix,
        now: i64,
        threads: usize,
    ) -> RequestPool {
        let mut rng = rand::rng();
        let run: u32 = rng.random();
        let first_msg_id: u64 = rng.random_range(1 << 52..1 << 62);
        let threads = threads.clamp(1, 64);
        let per_thread = count.div_ceil(threads).max(1);
        let parts: Vec<RequestPool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .step_by(per_thread)
                .map(|from| {
                    let to = (from + per_thread).min(count);
                    scope.spawn(move || {
                        build_range(side, target, from..to, mix, now, run, first_msg_id)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let total: usize = parts.iter().map(RequestPool::bytes).sum();
        let mut arena = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(count);
        for part in parts {
            let base = arena.len();
            arena.extend_from_slice(&part.arena);
            spans.extend(
                part.spans
                    .into_iter()
                    .map(|(start, len)| (base + start, len)),
            );
        }
        RequestPool { arena, spans, run }
    }

    /// How many distinct requests the pool holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of request `i` (wrapping around the pool).
    pub fn request(&self, i: usize) -> &[u8] {
        let (start, len) = self.spans[i % self.spans.len()];
        &self.arena[start..start + len]
    }

    /// The follower who sent request `i`.
    pub fn sender(&self, i: usize) -> String {
        sender(self.run, i % self.spans.len().max(1))
    }

    /// The total size of the pool, in bytes.
    pub fn bytes(&self) -> usize {
        self.arena.len()
    }
}

fn sender(run: u32, i: usize) -> String {
    format!("oWxgateLoad{run:08x}{i:09}")
}

fn build_range(
    side: &WeChatSide,
    target: &LoadTarget,
    range: std::ops::Range<usize>,
    mix: LoadMix,
    now: i64,
    run: u32,
    first_msg_id: u64,
) -> RequestPool {
    let mut rng = rand::rng();
    let mut arena = Vec::with_capacity(range.len() * 900);
    let mut spans = Vec::with_capacity(range.len());
    for i in range {
        let n = i as u64;
        let kind = match mix {
            LoadMix::Text => Kind::Text {
                content: format!("你好，请问周末门店几点开门？#{n}"),
            },
            LoadMix::Mixed => mixed_kind(n),
        };
        let message = inbound(
            "gh_wxgate_load",
            &sender(run, i),
            now,
            first_msg_id.wrapping_add(n),
            kind,
        );
        let nonce = rng.random_range(100_000_000u32..4_000_000_000).to_string();
        let signed = side.message(&message, now, &nonce, rng.random());
        let start = arena.len();
        let path = with_query(&target.path, &signed.query);
        arena.extend_from_slice(b"POST ");
        arena.extend_from_slice(path.as_bytes());
        arena.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        arena.extend_from_slice(target.host.as_bytes());
        arena.extend_from_slice(
            b"\r\nUser-Agent: wxgate-sim\r\nContent-Type: text/xml\r\nContent-Length: ",
        );
        arena.extend_from_slice(signed.body.len().to_string().as_bytes());
        arena.extend_from_slice(b"\r\n\r\n");
        arena.extend_from_slice(signed.body.as_bytes());
        spans.push((start, arena.len() - start));
    }
    RequestPool { arena, spans, run }
}

/// How to run the load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Connections kept busy.
    pub connections: usize,
    /// The measured time.
    pub duration: Duration,
    /// Time before measuring (connections warm up, caches fill); not counted.
    pub warmup: Duration,
    /// How long a request may take before it counts as a timeout.
    pub timeout: Duration,
    /// Judge every n-th answer as WeChat would (0: never).
    pub judge_every: u64,
}

/// The report of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The URL.
    pub url: String,
    /// The mode requests were sent in.
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// The measured time, in seconds.
    pub duration_s: f64,
    /// The warm-up time, in seconds.
    pub warmup_s: f64,
    /// Distinct pre-built requests.
    pub distinct_messages: usize,
    /// Requests sent in all (warm-up included).
    pub sent: u64,
    /// Requests beyond the pool, which repeat an earlier message (and may hit a dedup
    /// cache); 0 means every request was a new message.
    pub repeated: u64,
    /// Requests completed within the measured time.
    pub requests: u64,
    /// Completed requests per second.
    pub requests_per_second: f64,
    /// Latency of the completed requests.
    pub latency: Percentiles,
    /// Answers with status 200.
    pub status_200: u64,
    /// Failures by kind: `status 503`, `timeout`, `connect: …`, `io: …`.
    pub errors: BTreeMap<String, u64>,
    /// Answers judged as WeChat would.
    pub judged: u64,
    /// Judged answers WeChat could not use, by reason.
    pub unusable: BTreeMap<String, u64>,
    /// Judged answers by verdict: `reply`, `acknowledged`, `unusable`.
    pub verdicts: BTreeMap<String, u64>,
    /// No errors and no unusable answers.
    pub ok: bool,
}

/// What one connection measured.
#[derive(Debug, Default)]
struct ConnectionStats {
    histogram: LatencyHistogram,
    completed: u64,
    status_200: u64,
    errors: BTreeMap<String, u64>,
    judged: u64,
    unusable: BTreeMap<String, u64>,
    verdicts: BTreeMap<String, u64>,
}

/// Runs the load: `options.connections` connections until warm-up plus duration are over.
pub async fn run(
    pool: Arc<RequestPool>,
    target: &LoadTarget,
    side: Arc<WeChatSide>,
    options: &LoadOptions,
) -> LoadReport {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let end = measure_from + options.duration;
    let tasks: Vec<_> = (0..options.connections.max(1))
        .map(|_| {
            let pool = Arc::clone(&pool);
            let side = Arc::clone(&side);
            let next = Arc::clone(&next);
            let options = options.clone();
            let addr = target.addr;
            tokio::spawn(async move {
                drive(addr, &pool, &side, &next, &options, measure_from, end).await
            })
        })
        .collect();
    let mut total = ConnectionStats::default();
    for task in tasks {
        let Ok(stats) = task.await else {
            *total
                .errors
                .entry("load task panicked".to_owned())
                .or_insert(0) += 1;
            continue;
        };
        total.histogram.merge(&stats.histogram);
        total.completed += stats.completed;
        total.status_200 += stats.status_200;
        total.judged += stats.judged;
        for (into, from) in [
            (&mut total.errors, stats.errors),
            (&mut total.unusable, stats.unusable),
            (&mut total.verdicts, stats.verdicts),
        ] {
            for (key, count) in from {
                *into.entry(key).or_insert(0) += count;
            }
        }
    }
    let sent = next.load(Ordering::Relaxed) as u64;
    let duration = options.duration.as_secs_f64();
    LoadReport {
        url: target.url.clone(),
        mode: side.mode.as_str(),
        connections: options.connections,
        duration_s: duration,
        warmup_s: options.warmup.as_secs_f64(),
        distinct_messages: pool.len(),
        sent,
        repeated: sent.saturating_sub(pool.len() as u64),
        requests: total.completed,
        requests_per_second: if duration > 0.0 {
            (total.completed as f64 / duration).round()
        } else {
            0.0
        },
        latency: total.histogram.percentiles(),
        status_200: total.status_200,
        ok: total.errors.is_empty() && total.unusable.is_empty() && total.completed > 0,
        errors: total.errors,
        judged: total.judged,
        unusable: total.unusable,
        verdicts: total.verdicts,
    }
}

/// One connection's loop: send the next pooled request, read the answer, record.
async fn drive(
    addr: SocketAddr,
    pool: &RequestPool,
    side: &WeChatSide,
    next: &AtomicUsize,
    options: &LoadOptions,
    measure_from: Instant,
    end: Instant,
) -> ConnectionStats {
    let mut stats = ConnectionStats::default();
    if pool.is_empty() {
        stats.errors.insert("no request to send".to_owned(), 1);
        return stats;
    }
    let mut connection: Option<Connection> = None;
    let mut answered: u64 = 0;
    let count = |map: &mut BTreeMap<String, u64>, key: String| *map.entry(key).or_insert(0) += 1;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match tokio::time::timeout_at(end, Connection::connect(addr)).await {
                Ok(Ok(conn)) => connection.insert(conn),
                Ok(Err(e)) => {
                    if now >= measure_from {
                        count(&mut stats.errors, format!("connect: {}", e.kind()));
                    }
                    // Back off a little so that a refused connection does not spin.
                    tokio::time::sleep_until((Instant::now() + Duration::from_millis(10)).min(end))
                        .await;
                    continue;
                }
                Err(_) => break,
            },
        };
        let i = next.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let deadline = sent + options.timeout;
        let result =
            tokio::time::timeout_at(deadline.min(end), conn.exchange(pool.request(i))).await;
        let measured = sent >= measure_from;
        match result {
            Err(_) if deadline > end => break,
            Err(_) => {
                connection = None;
                if measured {
                    count(&mut stats.errors, "timeout".to_owned());
                }
            }
            Ok(Err(e)) => {
                connection = None;
                if measured && Instant::now() < end {
                    count(&mut stats.errors, e.kind());
                }
            }
            Ok(Ok(response)) => {
                let latency = sent.elapsed();
                if measured && Instant::now() <= end {
                    stats.histogram.record(latency);
                    stats.completed += 1;
                    if response.status == 200 {
                        stats.status_200 += 1;
                    } else {
                        count(&mut stats.errors, format!("status {}", response.status));
                    }
                    answered += 1;
                    if options.judge_every > 0
                        && answered % options.judge_every == 1 % options.judge_every
                    {
                        stats.judged += 1;
                        let verdict = side.judge(response.status, conn.body(), &pool.sender(i));
                        count(&mut stats.verdicts, verdict.name().to_owned());
                        if let Verdict::Unusable(why) = verdict {
                            count(&mut stats.unusable, why.to_string());
                        }
                    }
                }
                if response.close {
                    connection = None;
                }
            }
        }
    }
    stats
}

impl LoadReport {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "load against {} ({} mode): {} connections, {:.1} s measured after {:.1} s warm-up\n",
            self.url, self.mode, self.connections, self.duration_s, self.warmup_s
        );
        out.push_str(&format!(
            "  {:.0} requests/s ({} requests, {} with status 200)\n  latency: {}\n",
            self.requests_per_second,
            self.requests,
            self.status_200,
            self.latency.line()
        ));
        out.push_str(&format!(
            "  {} distinct pre-built messages, {} sent, {} repeated{}\n",
            self.distinct_messages,
            self.sent,
            self.repeated,
            if self.repeated > 0 {
                " (repeats may be answered from a dedup cache: raise --messages)"
            } else {
                ""
            }
        ));
        for (kind, count) in &self.errors {
            out.push_str(&format!("  error ×{count}: {kind}\n"));
        }
        if self.judged > 0 {
            let verdicts: Vec<String> = self
                .verdicts
                .iter()
                .map(|(v, n)| format!("{v} {n}"))
                .collect();
            out.push_str(&format!(
                "  judged {} answers: {}\n",
                self.judged,
                verdicts.join(", ")
            ));
        }
        for (why, count) in &self.unusable {
            out.push_str(&format!("  unusable ×{count}: {why}\n"));
        }
        out.push_str(if self.ok {
            "verdict: OK — no errors\n"
        } else if self.requests == 0 {
            "verdict: FAILED — no request completed\n"
        } else {
            "verdict: FAILED — see the errors above\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_are_parsed() {
        let target = LoadTarget::resolve("http://127.0.0.1:8080/wx/demo?x=1")
            .await
            .unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(target.host, "127.0.0.1:8080");
        assert_eq!(target.path, "/wx/demo?x=1");
        let target = LoadTarget::resolve("http://127.0.0.1").await.unwrap();
        assert_eq!((target.addr.port(), target.path.as_str()), (80, "/"));
        let target = LoadTarget::resolve("http://[::1]:9/a").await.unwrap();
        assert_eq!(target.addr, "[::1]:9".parse().unwrap());
        assert!(matches!(
            LoadTarget::resolve("https://x/").await,
            Err(TargetError::Scheme(_))
        ));
        assert!(LoadTarget::resolve("http:///x").await.is_err());
    }
}
