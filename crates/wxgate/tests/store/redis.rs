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
    assert_eq!(claim(&*b, &key, T0 + 5_000).await, claimed(Claim::InFlight, 2));
    let waiter = {
        let b = Arc::clone(&b);
        let key = key.clone();
        tokio::spawn(async move { b.wait(&key, Duration::from_secs(10)).await })
    };
    // The completion on A is published; B's waiter wakes without polling, long before
    // its deadline.
    let started = std::time::Instant::now();
    a.complete(&key, &replied("from a")).await.expect("complete");
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
    assert_eq!(a.take_deferred(ACCOUNT, "o-alice").await.expect("take"), None);
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
    assert_eq!(survivor.pending().await.expect("pending"), [delivery.clone()]);
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
