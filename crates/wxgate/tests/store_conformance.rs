//! The store conformance suite: every backend must behave the same through the `Store`
//! trait.
//!
//! The suite is written once against `Arc<dyn Store>` (module `suite`) and instantiated per
//! backend by `conformance_suite!`, which also says whether the backend can run under
//! tokio's paused clock. A new backend (Redis) adds one macro line. Tests that only make
//! sense for one backend (SQLite restarts and sharing a file) follow the suite.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use wechat_proto::{DedupKey, Reply};
use wxgate::store::memory::MemoryStore;
use wxgate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous, INTERRUPTED};
use wxgate::store::{
    AnswerKind, Claim, Claimed, Completion, InboxQuery, NewMessage, Store, StoreKey,
    DEFAULT_RETENTION,
};

/// A store under test, with whatever must outlive it (the SQLite file's directory).
struct Harness {
    store: Arc<dyn Store>,
    /// Declared after `store` so that the store is dropped (and its file closed) first.
    _dir: Option<TempDir>,
}

/// Opens a fresh, empty store of one backend with the given retention.
type Opener = fn(Duration) -> Harness;

fn open_memory(retention: Duration) -> Harness {
    Harness {
        store: Arc::new(MemoryStore::new(retention)),
        _dir: None,
    }
}

fn open_sqlite(retention: Duration) -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open_sqlite_at(&dir.path().join("wxgate.db"), retention);
    Harness {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

fn open_sqlite_at(path: &Path, retention: Duration) -> SqliteStore {
    let options = SqliteOptions {
        retention,
        ..SqliteOptions::default()
    };
    SqliteStore::open(path, options).expect("the sqlite store opens")
}

/// Instantiates every suite test for one backend. `paused` is `true` when the backend can
/// run under tokio's paused clock (then timeouts cost no real time).
macro_rules! conformance_suite {
    ($backend:ident, $open:path, paused = $paused:tt) => {
        mod $backend {
            use super::*;

            #[tokio::test(start_paused = $paused)]
            async fn first_then_in_flight_then_done() {
                suite::first_then_in_flight_then_done($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_claimers_get_exactly_one_first() {
                suite::concurrent_claimers_get_exactly_one_first($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn distinct_keys_do_not_interfere() {
                suite::distinct_keys_do_not_interfere($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn wait_returns_a_later_completion() {
                suite::wait_returns_a_later_completion($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn wait_times_out_while_running() {
                suite::wait_times_out_while_running($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn wait_returns_at_once_when_complete() {
                suite::wait_returns_at_once_when_complete($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn wait_on_an_unclaimed_key_returns_none_at_once() {
                suite::wait_on_an_unclaimed_key_returns_none_at_once($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn expired_claims_start_over_and_keep_history() {
                suite::expired_claims_start_over_and_keep_history($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn a_failed_handler_is_done_with_its_error() {
                suite::a_failed_handler_is_done_with_its_error($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn writes_to_unclaimed_keys_fail() {
                suite::writes_to_unclaimed_keys_fail($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn the_inbox_records_attempts_completion_and_answer() {
                suite::the_inbox_records_attempts_completion_and_answer($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn a_deferred_reply_is_taken_once_by_its_sender() {
                suite::a_deferred_reply_is_taken_once_by_its_sender($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn deferred_replies_are_taken_oldest_first() {
                suite::deferred_replies_are_taken_oldest_first($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn a_deferred_message_without_reply_is_never_taken() {
                suite::a_deferred_message_without_reply_is_never_taken($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn list_filters_and_orders() {
                suite::list_filters_and_orders($open).await;
            }

            #[tokio::test(start_paused = $paused)]
            async fn count_ping_and_flush() {
                suite::count_ping_and_flush($open).await;
            }
        }
    };
}

conformance_suite!(memory, open_memory, paused = true);
// The SQLite writer is a real thread, which paused time cannot wait for: a paused clock
// would fire timeouts while a commit is still on its way.
conformance_suite!(sqlite, open_sqlite, paused = false);

/// Builders shared by the suite and the SQLite tests.
mod fixtures {
    use super::*;

    pub const ACCOUNT: &str = "demo";
    /// A point in time for the tests; the store never reads the clock for expiry.
    pub const T0: i64 = 1_700_000_000_000;

    pub fn message_key(account: &str, from_user_name: &str, msg_id: u64) -> StoreKey {
        StoreKey {
            account: account.to_owned(),
            dedup: DedupKey::Message {
                from_user_name: from_user_name.to_owned(),
                msg_id,
            },
        }
    }

    pub fn event_key(account: &str, from_user_name: &str, create_time: i64) -> StoreKey {
        StoreKey {
            account: account.to_owned(),
            dedup: DedupKey::Event {
                from_user_name: from_user_name.to_owned(),
                create_time,
                xml_sha1: [0xab; 20],
            },
        }
    }

    pub fn sender(key: &StoreKey) -> String {
        match &key.dedup {
            DedupKey::Message { from_user_name, .. } | DedupKey::Event { from_user_name, .. } => {
                from_user_name.clone()
            }
        }
    }

    pub fn message(key: &StoreKey, received_at_ms: i64) -> NewMessage {
        NewMessage {
            key: key.clone(),
            from_user_name: sender(key),
            kind: "text".to_owned(),
            inbound_json: format!(r#"{{"content":"message {received_at_ms}"}}"#),
            received_at_ms,
        }
    }

    pub fn text(content: &str) -> Reply {
        serde_json::from_value(serde_json::json!({ "type": "text", "content": content }))
            .expect("a text reply in its JSON form")
    }

    pub fn replied(content: &str) -> Completion {
        Completion {
            reply: Some(text(content)),
            error: None,
            handler_ms: 12,
        }
    }

    pub fn failed(error: &str) -> Completion {
        Completion {
            reply: None,
            error: Some(error.to_owned()),
            handler_ms: 7,
        }
    }

    pub async fn claim(store: &dyn Store, key: &StoreKey, received_at_ms: i64) -> Claimed {
        store
            .claim(&message(key, received_at_ms))
            .await
            .expect("claim")
    }

    pub fn claimed(claim: Claim, attempt: u32) -> Claimed {
        Claimed { claim, attempt }
    }

    pub fn by_account(account: &str) -> InboxQuery {
        InboxQuery {
            account: Some(account.to_owned()),
            ..InboxQuery::default()
        }
    }
}

/// The tests every backend must pass, written against the trait only.
mod suite {
    use super::fixtures::*;
    use super::*;
    use tokio::time::Instant;

    pub async fn first_then_in_flight_then_done(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let key = message_key(ACCOUNT, "o-alice", 1);

        assert_eq!(claim(store, &key, T0).await, claimed(Claim::First, 1));
        assert_eq!(
            claim(store, &key, T0 + 5_000).await,
            claimed(Claim::InFlight, 2)
        );
        store
            .complete(&key, &replied("hi"))
            .await
            .expect("complete");
        assert_eq!(
            claim(store, &key, T0 + 10_000).await,
            claimed(Claim::Done(replied("hi")), 3)
        );
    }

    pub async fn concurrent_claimers_get_exactly_one_first(open: Opener) {
        const CLAIMERS: u32 = 64;
        let harness = open(DEFAULT_RETENTION);
        let key = message_key(ACCOUNT, "o-alice", 2);
        let start = Arc::new(tokio::sync::Barrier::new(CLAIMERS as usize));
        let claimers: Vec<_> = (0..CLAIMERS)
            .map(|_| {
                let store = Arc::clone(&harness.store);
                let key = key.clone();
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    store.claim(&message(&key, T0)).await.expect("claim")
                })
            })
            .collect();
        let mut results = Vec::new();
        for claimer in claimers {
            results.push(claimer.await.expect("the claimer finishes"));
        }

        let firsts: Vec<&Claimed> = results
            .iter()
            .filter(|claimed| claimed.claim == Claim::First)
            .collect();
        assert_eq!(firsts.len(), 1, "exactly one claimer runs the handler");
        assert_eq!(firsts[0].attempt, 1);
        assert!(results
            .iter()
            .all(|claimed| matches!(claimed.claim, Claim::First | Claim::InFlight)));
        let mut attempts: Vec<u32> = results.iter().map(|claimed| claimed.attempt).collect();
        attempts.sort_unstable();
        assert_eq!(attempts, (1..=CLAIMERS).collect::<Vec<_>>());
        let entries = harness
            .store
            .list(&by_account(ACCOUNT))
            .await
            .expect("list");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].attempts, CLAIMERS);
    }

    pub async fn distinct_keys_do_not_interfere(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let alice = message_key(ACCOUNT, "o-alice", 3);
        let same_id_other_sender = message_key(ACCOUNT, "o-bob", 3);
        let same_key_other_account = message_key("other", "o-alice", 3);
        let event = event_key(ACCOUNT, "o-alice", 3);

        for key in [
            &alice,
            &same_id_other_sender,
            &same_key_other_account,
            &event,
        ] {
            assert_eq!(claim(store, key, T0).await, claimed(Claim::First, 1));
        }
        store
            .complete(&alice, &replied("alice"))
            .await
            .expect("complete");

        assert_eq!(
            claim(store, &alice, T0 + 1).await,
            claimed(Claim::Done(replied("alice")), 2)
        );
        for key in [&same_id_other_sender, &same_key_other_account, &event] {
            assert_eq!(claim(store, key, T0 + 1).await, claimed(Claim::InFlight, 2));
            let waited = store
                .wait(key, Duration::from_millis(60))
                .await
                .expect("wait");
            assert_eq!(waited, None, "completing another key wakes nobody here");
        }
    }

    pub async fn wait_returns_a_later_completion(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let key = message_key(ACCOUNT, "o-alice", 4);
        claim(&*harness.store, &key, T0).await;

        let completer = {
            let store = Arc::clone(&harness.store);
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                store.complete(&key, &replied("later")).await
            })
        };
        let timeout = Duration::from_secs(3);
        let started = Instant::now();
        let waited = harness.store.wait(&key, timeout).await.expect("wait");
        assert_eq!(waited, Some(replied("later")));
        assert!(
            started.elapsed() < timeout,
            "the waiter was woken by the completion, not by its timeout"
        );
        completer
            .await
            .expect("the completer finishes")
            .expect("complete");
    }

    pub async fn wait_times_out_while_running(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let key = message_key(ACCOUNT, "o-alice", 5);
        claim(&*harness.store, &key, T0).await;

        let timeout = Duration::from_millis(150);
        let started = Instant::now();
        let waited = harness.store.wait(&key, timeout).await.expect("wait");
        assert_eq!(waited, None);
        assert!(
            started.elapsed() >= timeout,
            "the waiter used its whole budget"
        );
        // The key is still running: a retry is still in flight.
        assert_eq!(
            claim(&*harness.store, &key, T0 + 1).await,
            claimed(Claim::InFlight, 2)
        );
    }

    pub async fn wait_returns_at_once_when_complete(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let key = message_key(ACCOUNT, "o-alice", 6);
        claim(&*harness.store, &key, T0).await;
        harness
            .store
            .complete(&key, &replied("ready"))
            .await
            .expect("complete");

        let timeout = Duration::from_secs(30);
        let started = Instant::now();
        let waited = harness.store.wait(&key, timeout).await.expect("wait");
        assert_eq!(waited, Some(replied("ready")));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    pub async fn wait_on_an_unclaimed_key_returns_none_at_once(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let key = message_key(ACCOUNT, "o-nobody", 7);
        let started = Instant::now();
        let waited = harness
            .store
            .wait(&key, Duration::from_secs(30))
            .await
            .expect("wait");
        assert_eq!(waited, None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    pub async fn expired_claims_start_over_and_keep_history(open: Opener) {
        let retention = Duration::from_secs(60);
        let harness = open(retention);
        let store = &*harness.store;
        let key = message_key(ACCOUNT, "o-alice", 8);
        let retention_ms = 60_000;

        assert_eq!(claim(store, &key, T0).await, claimed(Claim::First, 1));
        store
            .complete(&key, &replied("old"))
            .await
            .expect("complete");
        assert_eq!(
            claim(store, &key, T0 + retention_ms - 1).await,
            claimed(Claim::Done(replied("old")), 2),
            "still live just inside the retention"
        );
        assert_eq!(
            claim(store, &key, T0 + retention_ms + 1).await,
            claimed(Claim::First, 1),
            "expired just past the retention, measured from the first arrival"
        );
        assert_eq!(
            claim(store, &key, T0 + retention_ms + 2).await,
            claimed(Claim::InFlight, 2),
            "the new claim is the live one, and not yet complete"
        );
        assert_eq!(
            store
                .wait(&key, Duration::from_millis(60))
                .await
                .expect("wait"),
            None
        );
        store
            .complete(&key, &replied("new"))
            .await
            .expect("complete");

        let entries = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert_eq!(entries.len(), 2, "the expired message stays in the inbox");
        assert_eq!(entries[0].received_at_ms, T0 + retention_ms + 1);
        assert_eq!(entries[0].completion, Some(replied("new")));
        assert_eq!(entries[0].attempts, 2);
        assert_eq!(entries[1].received_at_ms, T0);
        assert_eq!(entries[1].completion, Some(replied("old")));
        assert_eq!(entries[1].attempts, 2);
    }

    pub async fn a_failed_handler_is_done_with_its_error(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let key = message_key(ACCOUNT, "o-alice", 9);
        claim(store, &key, T0).await;
        let failure = failed("upstream answered 500");
        store.complete(&key, &failure).await.expect("complete");

        assert_eq!(
            claim(store, &key, T0 + 5_000).await,
            claimed(Claim::Done(failure.clone()), 2)
        );
        assert_eq!(
            store
                .wait(&key, Duration::from_secs(1))
                .await
                .expect("wait"),
            Some(failure)
        );
    }

    pub async fn writes_to_unclaimed_keys_fail(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let key = message_key(ACCOUNT, "o-nobody", 10);
        assert!(store.complete(&key, &replied("lost")).await.is_err());
        assert!(store
            .record_answer(&key, AnswerKind::Replied, 1)
            .await
            .is_err());
        assert!(store.defer_reply(&key).await.is_err());
        assert_eq!(
            store.count().await.expect("count"),
            0,
            "nothing was recorded"
        );
    }

    pub async fn the_inbox_records_attempts_completion_and_answer(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let key = message_key(ACCOUNT, "o-alice", 11);
        let first = message(&key, T0);
        store.claim(&first).await.expect("claim");

        let entries = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert_eq!(
            entries.len(),
            1,
            "the message is recorded as soon as it is claimed"
        );
        assert_eq!(entries[0].completion, None);
        assert_eq!(entries[0].last_answer, None);

        store
            .record_answer(&key, AnswerKind::Held, 1)
            .await
            .expect("record_answer");
        claim(store, &key, T0 + 5_000).await;
        store
            .complete(&key, &replied("hi"))
            .await
            .expect("complete");
        store
            .record_answer(&key, AnswerKind::Replied, 2)
            .await
            .expect("record_answer");

        let entries = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.account, ACCOUNT);
        assert_eq!(entry.dedup_key, key.dedup.stable_text());
        assert_eq!(entry.from_user_name, first.from_user_name);
        assert_eq!(entry.kind, first.kind);
        assert_eq!(entry.inbound_json, first.inbound_json);
        assert_eq!(
            entry.received_at_ms, T0,
            "the first arrival, not the retry's"
        );
        assert_eq!(entry.attempts, 2);
        assert_eq!(entry.completion, Some(replied("hi")));
        assert_eq!(entry.last_answer, Some((AnswerKind::Replied, 2)));
        assert!(!entry.deferred);
    }

    pub async fn a_deferred_reply_is_taken_once_by_its_sender(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        // An event key, so that its text form must come back as the same typed key.
        let key = event_key(ACCOUNT, "o-alice", 1_700_000_000);
        claim(store, &key, T0).await;
        // `ride_retries` defers on the last attempt, while the handler still works.
        store.defer_reply(&key).await.expect("defer_reply");
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            None,
            "nothing to deliver before the handler finished"
        );
        store
            .complete(&key, &replied("late"))
            .await
            .expect("complete");
        let listed = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert!(listed[0].deferred);

        assert_eq!(
            store.take_deferred("other", "o-alice").await.expect("take"),
            None,
            "another account's follower"
        );
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-bob").await.expect("take"),
            None,
            "another follower"
        );
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            Some((key.clone(), text("late")))
        );
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            None,
            "a deferred reply is delivered once"
        );
        let listed = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert!(!listed[0].deferred);
        assert_eq!(
            listed[0].completion,
            Some(replied("late")),
            "still on record"
        );
    }

    pub async fn deferred_replies_are_taken_oldest_first(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let older = message_key(ACCOUNT, "o-alice", 12);
        let newer = message_key(ACCOUNT, "o-alice", 13);
        // Claimed and deferred newest first, so that only the arrival time orders them.
        for (key, received_at_ms, content) in [(&newer, T0 + 1_000, "newer"), (&older, T0, "older")]
        {
            claim(store, key, received_at_ms).await;
            store
                .complete(key, &replied(content))
                .await
                .expect("complete");
            store.defer_reply(key).await.expect("defer_reply");
        }

        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            Some((older, text("older")))
        );
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            Some((newer, text("newer")))
        );
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            None
        );
    }

    pub async fn a_deferred_message_without_reply_is_never_taken(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        let deferred_then_failed = message_key(ACCOUNT, "o-alice", 14);
        let failed_then_deferred = message_key(ACCOUNT, "o-alice", 15);

        claim(store, &deferred_then_failed, T0).await;
        store
            .defer_reply(&deferred_then_failed)
            .await
            .expect("defer");
        store
            .complete(&deferred_then_failed, &failed("boom"))
            .await
            .expect("complete");
        claim(store, &failed_then_deferred, T0 + 1).await;
        store
            .complete(&failed_then_deferred, &failed("boom"))
            .await
            .expect("complete");
        store
            .defer_reply(&failed_then_deferred)
            .await
            .expect("defer");

        assert_eq!(
            store.take_deferred(ACCOUNT, "o-alice").await.expect("take"),
            None
        );
        let listed = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert!(
            listed.iter().all(|entry| !entry.deferred),
            "nothing waits for the follower's next message"
        );
    }

    pub async fn list_filters_and_orders(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        // Claimed out of order, so that the listing order comes from the arrival times. The
        // order of messages received in the same millisecond is left to each backend.
        let arrivals = [
            ("a", 3, T0 + 3_000),
            ("b", 1, T0 + 1_500),
            ("a", 2, T0 + 2_000),
            ("a", 1, T0 + 1_000),
            ("b", 4, T0 + 4_000),
        ];
        for (account, msg_id, received_at_ms) in arrivals {
            claim(
                store,
                &message_key(account, "o-alice", msg_id),
                received_at_ms,
            )
            .await;
        }
        let listed = |query: InboxQuery| async move {
            store
                .list(&query)
                .await
                .expect("list")
                .into_iter()
                .map(|entry| (entry.account, entry.received_at_ms))
                .collect::<Vec<_>>()
        };
        let a = |offset: i64| ("a".to_owned(), T0 + offset);
        let b = |offset: i64| ("b".to_owned(), T0 + offset);

        assert_eq!(
            listed(InboxQuery::default()).await,
            vec![b(4_000), a(3_000), a(2_000), b(1_500), a(1_000)],
            "newest first"
        );
        assert_eq!(
            listed(by_account("a")).await,
            vec![a(3_000), a(2_000), a(1_000)]
        );
        assert_eq!(
            listed(InboxQuery {
                since_ms: Some(T0 + 2_000),
                ..InboxQuery::default()
            })
            .await,
            vec![b(4_000), a(3_000), a(2_000)],
            "since is inclusive"
        );
        assert_eq!(
            listed(InboxQuery {
                account: Some("a".to_owned()),
                since_ms: Some(T0 + 2_000),
                limit: 0,
            })
            .await,
            vec![a(3_000), a(2_000)]
        );
        assert_eq!(
            listed(InboxQuery {
                limit: 2,
                ..InboxQuery::default()
            })
            .await,
            vec![b(4_000), a(3_000)],
            "the newest ones"
        );
        assert_eq!(listed(by_account("nobody")).await, vec![]);
    }

    pub async fn count_ping_and_flush(open: Opener) {
        let harness = open(DEFAULT_RETENTION);
        let store = &*harness.store;
        store.ping().await.expect("ping");
        assert_eq!(store.count().await.expect("count"), 0);
        let key = message_key(ACCOUNT, "o-alice", 16);
        claim(store, &key, T0).await;
        claim(store, &key, T0 + 1).await;
        claim(store, &message_key(ACCOUNT, "o-bob", 16), T0).await;
        assert_eq!(
            store.count().await.expect("count"),
            2,
            "messages, not deliveries"
        );
        store.flush().await.expect("flush");
        store.ping().await.expect("ping");
    }
}

/// What only the SQLite store promises: restarts and processes sharing one file.
mod sqlite_only {
    use super::fixtures::*;
    use super::*;

    #[tokio::test]
    async fn claims_completions_answers_and_deferred_replies_survive_a_restart() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("wxgate.db");
        let answered = message_key(ACCOUNT, "o-alice", 1);
        let deferred = message_key(ACCOUNT, "o-bob", 2);
        {
            let store = open_sqlite_at(&path, DEFAULT_RETENTION);
            claim(&store, &answered, T0).await;
            store
                .complete(&answered, &replied("kept"))
                .await
                .expect("complete");
            store
                .record_answer(&answered, AnswerKind::Replied, 1)
                .await
                .expect("record_answer");
            claim(&store, &deferred, T0 + 1).await;
            store.defer_reply(&deferred).await.expect("defer");
            store
                .complete(&deferred, &replied("for later"))
                .await
                .expect("complete");
            store.flush().await.expect("flush");
        }

        let store = open_sqlite_at(&path, DEFAULT_RETENTION);
        assert_eq!(
            claim(&store, &answered, T0 + 5_000).await,
            claimed(Claim::Done(replied("kept")), 2),
            "the retry after a restart answers the stored reply; the handler does not run again"
        );
        assert_eq!(
            store.take_deferred(ACCOUNT, "o-bob").await.expect("take"),
            Some((deferred.clone(), text("for later")))
        );
        let entries = store.list(&by_account(ACCOUNT)).await.expect("list");
        assert_eq!(entries.len(), 2);
        let answered_entry = entries
            .iter()
            .find(|entry| entry.dedup_key == answered.dedup.stable_text())
            .expect("the answered message is listed");
        assert_eq!(answered_entry.last_answer, Some((AnswerKind::Replied, 1)));
        assert_eq!(answered_entry.attempts, 2);
    }

    #[tokio::test]
    async fn a_claim_running_when_the_store_closed_is_recorded_as_interrupted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("wxgate.db");
        let key = message_key(ACCOUNT, "o-alice", 3);
        {
            let store = open_sqlite_at(&path, DEFAULT_RETENTION);
            assert_eq!(claim(&store, &key, T0).await, claimed(Claim::First, 1));
        }

        let store = open_sqlite_at(&path, DEFAULT_RETENTION);
        let Claimed {
            claim: again,
            attempt,
        } = claim(&store, &key, T0 + 5_000).await;
        assert_eq!(attempt, 2);
        let Claim::Done(completion) = again else {
            panic!("expected Done after a restart, got {again:?}");
        };
        assert_eq!(completion.reply, None);
        assert_eq!(completion.error.as_deref(), Some(INTERRUPTED));
        assert_eq!(
            store
                .wait(&key, Duration::from_secs(5))
                .await
                .expect("wait"),
            Some(completion.clone()),
            "nobody waits for a handler that is gone"
        );
    }

    #[tokio::test]
    async fn the_claims_of_a_process_that_died_are_interrupted_on_open() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("wxgate.db");
        let key = message_key(ACCOUNT, "o-alice", 4);
        let survivor = open_sqlite_at(&path, DEFAULT_RETENTION);
        assert_eq!(claim(&survivor, &key, T0).await, claimed(Claim::First, 1));
        // Hand the claim to an owner whose heartbeat stopped long ago, as a process that
        // died mid-flight leaves it. (Aging the live store's own heartbeat instead would
        // race with its next one.)
        let raw = rusqlite::Connection::open(&path).expect("a raw connection");
        raw.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        raw.execute_batch(
            "INSERT INTO owners (id, pid, heartbeat_ms) VALUES (424242, 1, 0);
             UPDATE inbox SET owner = 424242;",
        )
        .expect("a dead owner");

        let restarted = open_sqlite_at(&path, DEFAULT_RETENTION);
        let Claimed {
            claim: again,
            attempt,
        } = claim(&restarted, &key, T0 + 5_000).await;
        assert_eq!(attempt, 2);
        assert_eq!(
            again,
            Claim::Done(Completion {
                reply: None,
                error: Some(INTERRUPTED.to_owned()),
                handler_ms: 0,
            })
        );
        let dead_owners: i64 = raw
            .query_row("SELECT count(*) FROM owners WHERE id = 424242", [], |row| {
                row.get(0)
            })
            .expect("count owners");
        assert_eq!(dead_owners, 0, "the dead owner is forgotten");
    }

    #[tokio::test]
    async fn two_stores_on_one_file_share_claims_and_completions() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("wxgate.db");
        let key = message_key(ACCOUNT, "o-alice", 5);
        let first = Arc::new(open_sqlite_at(&path, DEFAULT_RETENTION));
        assert_eq!(claim(&*first, &key, T0).await, claimed(Claim::First, 1));

        // Opened while the first store is alive and working: its claim must stay running.
        let second = Arc::new(open_sqlite_at(&path, DEFAULT_RETENTION));
        assert_eq!(
            claim(&*second, &key, T0 + 5_000).await,
            claimed(Claim::InFlight, 2)
        );
        let waiter = {
            let second = Arc::clone(&second);
            let key = key.clone();
            tokio::spawn(async move { second.wait(&key, Duration::from_secs(5)).await })
        };
        // Let the waiter start waiting before the other store completes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        first
            .complete(&key, &replied("shared"))
            .await
            .expect("complete");
        let started = tokio::time::Instant::now();
        let waited = waiter.await.expect("the waiter finishes").expect("wait");
        assert_eq!(waited, Some(replied("shared")));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "seen by polling the file, well before the timeout"
        );
        assert_eq!(
            claim(&*second, &key, T0 + 10_000).await,
            claimed(Claim::Done(replied("shared")), 3)
        );
    }

    #[tokio::test]
    async fn full_synchronous_mode_works_the_same() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("wxgate.db");
        let options = SqliteOptions {
            synchronous: Synchronous::Full,
            max_batch: 1,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options).expect("the sqlite store opens");
        let key = message_key(ACCOUNT, "o-alice", 6);
        assert_eq!(claim(&store, &key, T0).await, claimed(Claim::First, 1));
        store
            .complete(&key, &replied("synced"))
            .await
            .expect("complete");
        assert_eq!(
            claim(&store, &key, T0 + 1).await,
            claimed(Claim::Done(replied("synced")), 2)
        );
        assert_eq!(store.path(), path);
    }
}
