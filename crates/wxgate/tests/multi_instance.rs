//! Several instances on one Redis, as real processes: three `wxgate serve` binaries share a
//! Redis server of the test's own (started on a free port, with an append-only file, and
//! killed by its PID only), every attempt of a message goes to another instance, and the
//! account forwards to an upstream in this process that counts its calls per
//! `Idempotency-Key` and sleeps 0–7 s before answering.
//!
//! One test walks through the phases in order, because each needs the fleet the previous
//! one left: a storm on the healthy fleet, a storm during which one instance is killed
//! with SIGKILL, and Redis itself killed and started again. Nothing here reads a clock to
//! decide an outcome: the storm reports what WeChat would have seen, the upstream what ran,
//! and `wxgate inbox` what was recorded. Real time passes only because the processes are
//! real (WeChat's 5 s attempts, the upstream's sleeps, the 5 s lease of a dead instance);
//! the whole test takes well under a minute.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::watch;

const WXGATE: &str = env!("CARGO_BIN_EXE_wxgate");
const TOKEN: &str = "fleettoken0123456789";
/// The error the store records for a claim whose instance died (`store::sqlite::INTERRUPTED`).
const INTERRUPTED: &str = wxgate::store::sqlite::INTERRUPTED;

/// A child process killed (SIGKILL) and reaped when dropped, by its own handle.
struct Process {
    child: Child,
}

impl Process {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Reads a child's output on a thread until `found` matches a line, returning that
/// line's match; the thread keeps draining the output afterwards, so that the child never
/// blocks on a full pipe.
fn watch_output(
    output: impl std::io::Read + Send + 'static,
    found: impl Fn(&str) -> Option<String> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { return };
            if !sent {
                if let Some(value) = found(&line) {
                    let _ = sender.send(value);
                    sent = true;
                }
            }
        }
    });
    receiver
}

/// The test's own Redis server: an append-only file synced on every write, so that a
/// kill loses nothing Redis acknowledged.
struct OwnRedis {
    port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let mut redis = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().expect("a directory for redis"),
            process: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server on its port and directory (reloading the append-only file) and
    /// returns once it accepts connections.
    fn restart(&mut self) {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (install it, or set REDIS_SERVER)");
        let stdout = child.stdout.take().expect("redis' stdout");
        let ready = watch_output(stdout, |line| {
            line.contains("Ready to accept connections")
                .then(String::new)
        });
        self.process = Some(Process { child });
        ready
            .recv_timeout(Duration::from_secs(20))
            .expect("redis-server starts");
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

/// The upstream service: counts calls per `Idempotency-Key`, sleeps 0–7 s (chosen by the
/// key), then answers a text reply naming the key.
#[derive(Default)]
struct Upstream {
    calls: Mutex<HashMap<String, u32>>,
    total: Mutex<Option<watch::Sender<usize>>>,
}

impl Upstream {
    fn calls(&self) -> HashMap<String, u32> {
        self.calls.lock().expect("the upstream's counts").clone()
    }
}

/// 0 to 7 seconds, spread over the keys (FNV-1a of the key), so that some replies are
/// ready within the first attempt and many only for a retry.
fn upstream_sleep(key: &str) -> Duration {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Duration::from_millis(hash % 7_001)
}

async fn upstream_call(
    State(upstream): State<Arc<Upstream>>,
    headers: HeaderMap,
) -> ([(&'static str, &'static str); 1], String) {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let total = {
        let mut calls = upstream.calls.lock().expect("the upstream's counts");
        *calls.entry(key.clone()).or_default() += 1;
        calls.values().map(|count| *count as usize).sum()
    };
    if let Some(sender) = &*upstream.total.lock().expect("the call counter") {
        sender.send_replace(total);
    }
    tokio::time::sleep(upstream_sleep(&key)).await;
    let reply = json!({ "type": "text", "content": format!("done {key}") });
    ([("content-type", "application/json")], reply.to_string())
}

async fn start_upstream() -> (Arc<Upstream>, watch::Receiver<usize>, u16) {
    let (sender, receiver) = watch::channel(0);
    let upstream = Arc::new(Upstream {
        calls: Mutex::default(),
        total: Mutex::new(Some(sender)),
    });
    let app = axum::Router::new()
        .route("/wechat", post(upstream_call))
        .with_state(Arc::clone(&upstream));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the upstream binds");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (upstream, receiver, port)
}

fn write_config(dir: &Path, redis_url: &str, upstream_port: u16) -> PathBuf {
    let path = dir.join("wxgate.toml");
    let text = format!(
        r#"
listen = "127.0.0.1:0"
log_format = "json"
shutdown_grace_secs = 1
[store]
backend = "redis"
url = "{redis_url}"
key_prefix = "wxgate-fleet:"
[[accounts]]
name = "fleet"
app_id = "wx0123456789abcdef"
token = "{TOKEN}"
mode = "plaintext"
policy = "ride_retries"
[accounts.forward]
url = "http://127.0.0.1:{upstream_port}/wechat"
max_secs = 30
"#
    );
    std::fs::write(&path, text).expect("write the config");
    path
}

/// Starts `wxgate serve` and returns it with its webhook URL (read from its log).
fn start_instance(config: &Path) -> (Process, String) {
    let mut child = Command::new(WXGATE)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("WXGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wxgate serve starts");
    // The log goes to standard error.
    let log = child.stderr.take().expect("its log");
    let url = watch_output(log, |line| {
        let line: Value = serde_json::from_str(line).ok()?;
        line["fields"]["url"].as_str().map(str::to_owned)
    });
    let process = Process { child };
    let url = url
        .recv_timeout(Duration::from_secs(20))
        .expect("the instance logs its URL");
    (process, url)
}

/// Runs `wxgate sim storm` over `urls` and returns its JSON report.
async fn storm(urls: &[String], messages: usize) -> Value {
    let mut command = tokio::process::Command::new(WXGATE);
    command.args([
        "sim",
        "storm",
        "--token",
        TOKEN,
        "--mode",
        "plaintext",
        "--json",
    ]);
    command.args(["-n", &messages.to_string(), "-c", &messages.to_string()]);
    for url in urls {
        command.args(["--url", url]);
    }
    let output = command.output().await.expect("the storm runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the storm's report ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Everything the inbox holds, through `wxgate inbox` (the read-only path).
fn inbox(config: &Path) -> Vec<Value> {
    let output = Command::new(WXGATE)
        .args(["inbox", "--json", "--limit", "10000", "--config"])
        .arg(config)
        .env_clear()
        .output()
        .expect("wxgate inbox runs");
    assert!(
        output.status.success(),
        "wxgate inbox: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).expect("the inbox as JSON")
}

/// The storm's index of a message (its sender is `oWxgateStorm<run><index:08>`).
fn storm_index(entry: &Value) -> usize {
    let sender = entry["from_user_name"].as_str().expect("a sender");
    sender[sender.len() - 8..].parse().expect("a storm sender")
}

fn deliveries(report: &Value) -> &Vec<Value> {
    report["deliveries"]
        .as_array()
        .expect("the storm's deliveries")
}

async fn status_of(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_redis_through_a_storm_a_kill_and_a_redis_restart() {
    let mut redis = OwnRedis::start();
    let (upstream, mut upstream_total, upstream_port) = start_upstream().await;
    let dir = tempfile::tempdir().expect("a directory");
    let config = write_config(dir.path(), &redis.url(), upstream_port);
    let mut instances = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (process, url) = start_instance(&config);
        instances.push(Some(process));
        urls.push(url);
    }

    // Phase 1: a storm on the healthy fleet. Every attempt goes to another instance, so a
    // retry finds the claim made elsewhere and is woken by a completion made elsewhere.
    const FIRST: usize = 45;
    let report = storm(&urls, FIRST).await;
    let calls = upstream.calls();
    assert_eq!(calls.len(), FIRST, "the upstream saw every message");
    assert!(
        calls.values().all(|count| *count == 1),
        "no handler ran twice: {calls:?}"
    );
    // Every reply is ready within 7 s, inside WeChat's window of four attempts, so every
    // one reached the follower through some attempt.
    for delivery in deliveries(&report) {
        assert_eq!(delivery["outcome"], "reply", "{delivery}");
    }
    let retried = deliveries(&report)
        .iter()
        .filter(|delivery| delivery["attempts"].as_u64() > Some(1))
        .count();
    assert!(retried > 0, "some replies took longer than an attempt");
    let first_keys: HashSet<String> = calls.keys().cloned().collect();
    eprintln!(
        "phase 1: {FIRST} messages, {} attempts over 3 instances, {retried} retried, {} upstream calls",
        report["totals"]["attempts"],
        calls.values().sum::<u32>()
    );

    // Phase 2: a storm during which instance 0 is killed (SIGKILL) once the upstream has
    // seen half of the storm's calls, while many of its handlers still run.
    const SECOND: usize = 45;
    let second = tokio::spawn({
        let urls = urls.clone();
        async move { storm(&urls, SECOND).await }
    });
    upstream_total
        .wait_for(|total| *total >= FIRST + SECOND / 2)
        .await
        .expect("the upstream counts");
    instances[0].take().expect("instance 0").kill();
    let report = second.await.expect("the second storm finishes");

    let entries: Vec<Value> = inbox(&config)
        .into_iter()
        .filter(|entry| !first_keys.contains(entry["dedup_key"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        entries.len(),
        SECOND,
        "every message of the storm is in the inbox"
    );
    let calls = upstream.calls();
    let mut interrupted = 0;
    for entry in &entries {
        let key = entry["dedup_key"].as_str().expect("a key");
        let index = storm_index(entry);
        let error = entry["completion"]["error"].as_str();
        assert!(
            !entry["completion"].is_null(),
            "every claim is settled: {entry}"
        );
        if error == Some(INTERRUPTED) {
            interrupted += 1;
            assert_eq!(
                index % 3,
                0,
                "only the dead instance's messages are interrupted"
            );
            assert_eq!(
                deliveries(&report)[index]["outcome"],
                "acknowledged",
                "a retry of an interrupted message is answered success"
            );
            assert!(calls.get(key).copied().unwrap_or(0) <= 1);
        } else {
            assert_eq!(error, None, "{entry}");
            assert_eq!(calls.get(key), Some(&1), "the handler ran exactly once");
            assert_eq!(deliveries(&report)[index]["outcome"], "reply");
        }
    }
    assert!(interrupted > 0, "the killed instance had handlers running");
    assert!(
        calls.values().all(|count| *count == 1),
        "no handler ran twice: {calls:?}"
    );
    for delivery in deliveries(&report) {
        assert_ne!(delivery["outcome"], "unusable", "{delivery}");
    }
    eprintln!(
        "phase 2: {SECOND} messages, {} attempts, instance 0 killed; {} upstream calls, {interrupted} interrupted, {} replied",
        report["totals"]["attempts"],
        calls.values().sum::<u32>() as usize - FIRST,
        deliveries(&report).iter().filter(|d| d["outcome"] == "reply").count()
    );
    let before_restart = inbox(&config).len();
    assert_eq!(before_restart, FIRST + SECOND);

    // Phase 3: Redis dies. The instances refuse new messages with 503 (WeChat retries)
    // and fail /readyz; when Redis is back they recover by themselves, with nothing
    // acknowledged lost.
    let live: Vec<String> = urls[1..].to_vec();
    let client = reqwest::Client::new();
    let readyz = |url: &str| url.replace("/wx/fleet", "/readyz");
    redis.kill();
    let sent = Command::new(WXGATE)
        .args([
            "sim",
            "send",
            "--token",
            TOKEN,
            "--mode",
            "plaintext",
            "--json",
        ])
        .args(["--retries", "0", "--no-retry-on-status", "--url", &live[0]])
        .args(["text", "while redis is down"])
        .output()
        .expect("sim send runs");
    let sent: Value = serde_json::from_slice(&sent.stdout).expect("the send report");
    assert_eq!(sent["attempts"][0]["status"], 503, "{sent}");
    assert_eq!(status_of(&client, readyz(&live[1])).await, 503);

    redis.restart();
    // Recovery is the instances' own: they reconnect within a few seconds, and /readyz
    // says so. The loop only bounds how long the test waits for that.
    let mut ready = false;
    for _ in 0..100 {
        if status_of(&client, readyz(&live[0])).await == 200
            && status_of(&client, readyz(&live[1])).await == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the instances recover when redis is back");
    let report = storm(&live, 6).await;
    for delivery in deliveries(&report) {
        assert_eq!(delivery["outcome"], "reply", "{delivery}");
    }
    assert_eq!(
        inbox(&config).len(),
        FIRST + SECOND + 6,
        "nothing acknowledged before the restart was lost"
    );
}
