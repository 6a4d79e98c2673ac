//! The Redis backend: its conformance opener, and what only a shared store can show —
//! instances that see each other's claims and completions, an instance whose lease lapsed,
//! and a server that cannot be reached. Everything runs against a real Redis server.

use super::fixtures::*;
use super::*;
use std::sync::atomic::{AtomicU32, Ordering};
use wxgate::store::redis::{RedisOptions, RedisStore, RedisUrl};
use wxgate::store::{Delivery, DeliveryState};

/// The server the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (or test run) uses.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "wxgate-test:{}:{}:{:08x}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Deletes every key under a test's prefix when dropped.
pub struct TestKeys {
    prefix: String,
}

impl Drop for TestKeys {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = ::redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

fn options(prefix: &str, retention: Duration, lease_ttl: Duration) -> RedisOptions {
    RedisOptions {
        url: RedisUrl::parse(&redis_url()).expect("REDIS_URL is a redis URL"),
        key_prefix: prefix.to_owned(),
        retention: Retention {
            claims: retention,
            ..Retention::default()
        },
        lease_ttl,
    }
}

async fn open_at(prefix: &str, retention: Duration, lease_ttl: Duration) -> RedisStore {
    RedisStore::open(options(prefix, retention, lease_ttl))
        .await
        .expect("the redis store opens (is a server at REDIS_URL?)")
}

/// The conformance opener: a fresh prefix on the shared server. The suites' opener is a
/// plain function, so the store is opened on the test's (multi-thread) runtime in place.
pub fn open_redis(retention: Duration) -> Harness {
    let prefix = unique_prefix();
    let store = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(open_at(
            &prefix,
            retention,
            wxgate::store::redis::LEASE_TTL,
        ))
    });
    Harness {
        store: Arc::new(store),
        _dir: None,
        _keys: Some(TestKeys { prefix }),
    }
}

fn raw_connection() -> ::redis::Connection {
    ::redis::Client::open(redis_url())
        .and_then(|client| client.get_connection())
        .expect("a direct connection to the test server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_single_flight_and_a_completion_wakes_the_other() {
    let prefix = unique_prefix();
    let _keys = TestKeys {
        prefix: prefix.clone(),
    };
    let a = Arc::new(open_at(&prefix, DEFAULT_RETENTION, Duration::from_secs(5)).await);
    let b = Arc::new(open_at(&prefix, DEFAULT_RETENTION, Duration::from_secs(5)).await);
    let key = message_key(ACCOUNT, "o-alice", 1);

    assert_eq!(claim(&*a, &key, T0).await, claimed(Claim::First, 1));
    assert_eq!(
        claim(&*b, &key, T0 + 5_000).await,
        claimed(Claim::InFlight, 2)
    );
    let waiter = {
        let b = Arc::clone(&b);
        let key = key.clone();
        tokio::spawn(async move { b.wait(&key, Duration::from_secs(10)).await })
    };
    // The completion on A is published; B's waiter wakes without polling, long before
    // its deadline.
    let started = std::time::Instant::now();
    a.complete(&key, &replied("from a"))
        .await
        .expect("complete");
    let waited = waiter.await.expect("the waiter finishes").expect("wait");
    assert_eq!(waited, Some(replied("from a")));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        claim(&*b, &key, T0 + 10_000).await,
        claimed(Claim::Done(replied("from a")), 3)
    );
    let listed = b.list(&by_account(ACCOUNT)).await.expect("list");
    assert_eq!(listed.len(), 1, "one inbox for every instance");
    assert_eq!(listed[0].attempts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferral_made_on_one_instance_is_taken_on_another() {
    let prefix = unique_prefix();
    let _keys = TestKeys {
        prefix: prefix.clone(),
    };
    let a = open_at(&prefix, DEFAULT_RETENTION, Duration::from_secs(5)).await;
    let b = open_at(&prefix, DEFAULT_RETENTION, Duration::from_secs(5)).await;
    let key = message_key(ACCOUNT, "o-alice", 2);
    claim(&a, &key, T0).await;
    a.defer_reply(&key).await.expect("defer");
    a.complete(&key, &replied("late")).await.expect("complete");
    assert_eq!(
        b.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
        Some((key, text("late")))
    );
    assert_eq!(
        a.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_claims_are_settled_and_its_deliveries_taken_over() {
    let prefix = unique_prefix();
    let _keys = TestKeys {
        prefix: prefix.clone(),
    };
    let lease = Duration::from_millis(500);
    let dead = open_at(&prefix, DEFAULT_RETENTION, lease).await;
    let survivor = Arc::new(open_at(&prefix, DEFAULT_RETENTION, lease).await);
    let key = message_key(ACCOUNT, "o-alice", 3);
    assert_eq!(claim(&dead, &key, T0).await, claimed(Claim::First, 1));
    let delivery = Delivery {
        key: key.clone(),
        to_user: "o-alice".to_owned(),
        created_at_ms: T0,
    };
    assert!(dead.enqueue(&delivery).await.expect("enqueue"));
    assert!(
        survivor.pending().await.expect("pending").is_empty(),
        "a live instance's delivery is never taken over"
    );

    // The instance dies: its heartbeat stops and its lease is gone, as when it expires.
    let dead_id = dead.instance_id().to_owned();
    drop(dead);
    let _: () = ::redis::cmd("DEL")
        .arg(format!("{prefix}lease:{dead_id}"))
        .query(&mut raw_connection())
        .expect("delete the lease");

    // The survivor settles the claim once it has held its own lease for a whole lease;
    // the settlement is published, so this wait ends on it, not on its deadline.
    let waited = survivor
        .wait(&key, Duration::from_secs(10))
        .await
        .expect("wait");
    let settled = waited.expect("the dead instance's claim is settled");
    assert_eq!(settled.error.as_deref(), Some(INTERRUPTED));
    assert_eq!(settled.reply, None);
    assert_eq!(
        claim(&*survivor, &key, T0 + 5_000).await,
        claimed(Claim::Done(settled), 2),
        "a retry is answered, and the handler never runs again"
    );
    assert_eq!(survivor.pending().await.expect("pending"), [delivery]);
    survivor
        .finish(&key, &DeliveryState::NothingToSend)
        .await
        .expect("finish");
    assert!(survivor.pending().await.expect("pending").is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    // Port 1 on the loopback refuses connections.
    let url = RedisUrl::parse("redis://:s3cret-pass@127.0.0.1:1/0").expect("a redis URL");
    assert!(!format!("{url:?}").contains("s3cret"));
    let error = RedisStore::open(RedisOptions::new(url))
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(message.contains("redis://:***@127.0.0.1:1/0"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

fn config_with_store(store: &str) -> String {
    format!(
        "[store]\n{store}\n[[accounts]]\nname = \"demo\"\napp_id = \"wx0123456789abcdef\"\n\
         token = \"token0123\"\nmode = \"plaintext\"\n"
    )
}

#[test]
fn the_redis_section_has_defaults_an_env_override_and_a_masked_password() {
    use std::collections::BTreeMap;
    use wxgate::config::{Config, StoreConfig};

    let config = Config::from_toml(&config_with_store("backend = \"redis\""), &BTreeMap::new())
        .expect("a redis config");
    let StoreConfig::Redis {
        url, key_prefix, ..
    } = &config.store
    else {
        panic!("the redis backend: {:?}", config.store);
    };
    assert_eq!(url.expose(), "redis://127.0.0.1:6379/0");
    assert_eq!(key_prefix, "wxgate:");

    let env = BTreeMap::from([(
        "WXGATE_STORE_URL".to_owned(),
        "rediss://:hunter2-secret@cache.internal:6380/2".to_owned(),
    )]);
    let text = config_with_store(
        "backend = \"redis\"\nurl = \"redis://other:6379\"\nkey_prefix = \"gw1:\"",
    );
    let config = Config::from_toml(&text, &env).expect("a redis config");
    let StoreConfig::Redis {
        url, key_prefix, ..
    } = &config.store
    else {
        panic!("the redis backend: {:?}", config.store);
    };
    assert_eq!(
        url.expose(),
        "rediss://:hunter2-secret@cache.internal:6380/2"
    );
    assert_eq!(url.masked(), "rediss://:***@cache.internal:6380/2");
    assert_eq!(key_prefix, "gw1:");
    assert!(!format!("{config:?}").contains("hunter2"));

    let error = Config::from_toml(
        &config_with_store("backend = \"redis\"\nurl = \"http://:hunter2@cache:6379\""),
        &BTreeMap::new(),
    )
    .expect_err("not a redis URL");
    assert_eq!(error.field, "store.url");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// A Redis server of this test's own, with an append-only file, killed by its PID.
struct OwnServer {
    port: u16,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start() -> OwnServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = OwnServer {
            port,
            dir: tempfile::tempdir().expect("a directory"),
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        use std::io::BufRead;
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut child = std::process::Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (install it, or set REDIS_SERVER)");
        let stdout = child.stdout.take().expect("its output");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let ready =
            lines.any(|line| line.is_ok_and(|line| line.contains("Ready to accept connections")));
        assert!(ready, "redis-server starts");
        // The rest of the output is drained, so that the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_made_while_redis_is_down_is_kept_answered_and_written_later() {
    let mut server = OwnServer::start();
    let url = RedisUrl::parse(&format!("redis://127.0.0.1:{}/0", server.port)).expect("a URL");
    let open = || async {
        RedisStore::open(RedisOptions::new(url.clone()))
            .await
            .expect("the store opens")
    };
    let store = open().await;
    let key = message_key(ACCOUNT, "o-alice", 4);
    assert_eq!(claim(&store, &key, T0).await, claimed(Claim::First, 1));

    server.kill();
    assert!(
        store.ping().await.is_err(),
        "readiness fails while redis is down"
    );
    assert!(
        store
            .claim(&message(&message_key(ACCOUNT, "o-bob", 5), T0))
            .await
            .is_err(),
        "a new message is refused (503), so that WeChat retries it"
    );
    store
        .complete(&key, &replied("kept"))
        .await
        .expect("a completion is kept when redis is down");
    assert!(matches!(
        store.health(),
        wxgate::store::Health::Degraded { waiting: 1, .. }
    ));
    assert_eq!(
        store
            .wait(&key, Duration::from_secs(1))
            .await
            .expect("wait"),
        Some(replied("kept")),
        "this instance answers it from memory meanwhile"
    );

    server.restart();
    // The connection comes back by itself; `flush` writes what waits once it has.
    let mut flushed = false;
    for _ in 0..50 {
        if store.flush().await.is_ok() {
            flushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(flushed, "the store recovers when redis is back");
    assert_eq!(store.health(), wxgate::store::Health::Ok);
    let other = open().await;
    assert_eq!(
        claim(&other, &key, T0 + 5_000).await,
        claimed(Claim::Done(replied("kept")), 2),
        "the kept completion reached redis, and every instance answers it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_fails_the_call_instead_of_holding_the_attempt() {
    let server = OwnServer::start();
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let store = RedisStore::open(RedisOptions::new(RedisUrl::parse(&url).expect("a URL")))
        .await
        .expect("the store opens");
    // The server stalls for 3 s (a real stall: `DEBUG SLEEP` blocks it), far longer than
    // a call may take; the claim fails (the gateway answers 503) instead of waiting for it.
    let stall = std::thread::spawn(move || {
        let mut conn = ::redis::Client::open(url)
            .and_then(|client| client.get_connection())
            .expect("a direct connection");
        let _: Result<(), _> = ::redis::cmd("DEBUG").arg("SLEEP").arg(3).query(&mut conn);
    });
    // The stall has begun once a second connection's PING goes unanswered; the test
    // waits for that, not for a time.
    let probe = RedisUrl::parse(&format!("redis://127.0.0.1:{}/0", server.port)).expect("a URL");
    let mut probe = ::redis::Client::open(probe.expose())
        .and_then(|client| client.get_connection())
        .expect("a probe connection");
    probe
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a read timeout");
    let stalled_server =
        (0..10_000).any(|_| ::redis::cmd("PING").query::<String>(&mut probe).is_err());
    assert!(stalled_server, "DEBUG SLEEP stalls the server");
    let stalled = store
        .claim(&message(&message_key(ACCOUNT, "o-alice", 6), T0))
        .await;
    let error = stalled.expect_err("a stalled redis fails the claim");
    assert!(error.to_string().contains("redis"), "{error}");
    stall.join().expect("the stall ends");
    // Once the stall is over, the store answers again without being reopened.
    let mut answered = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the store answers again after the stall");
    assert_eq!(
        claim(&store, &message_key(ACCOUNT, "o-bob", 7), T0).await,
        claimed(Claim::First, 1)
    );
}
