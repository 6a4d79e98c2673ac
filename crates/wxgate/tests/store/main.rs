//! The storage conformance suites and the backend-specific store tests, in one test binary.
//!
//! Each concern of the storage seam has one suite, written once against `Arc<dyn Store>`:
//! `claims`, `deferrals`, `inbox` and `outbox`. `conformance!` instantiates every suite
//! for every backend; a new backend adds one line there and changes no suite. Tests that
//! only make sense for one backend (SQLite restarts, its lock, a full disk) are in
//! `sqlite`; `retention` drives the housekeeping task on a paused clock.
//!
//! Every memory and SQLite test runs on tokio's paused clock, the SQLite ones included:
//! their writer is a real thread, and no suite test awaits a write while a timer of its
//! own is pending, so the clock never jumps ahead of a commit.
//!
//! The Redis tests run on the real clock, against a real server (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each under a key prefix of its own. A paused clock cannot
//! work there: while a test awaits a reply from the Redis socket the runtime is idle, so
//! a paused clock would jump to the next timer (a waiter's deadline) before the reply
//! that should have woken it arrived. The suites' assertions are the same; their timeouts
//! (at most a few seconds) are simply spent in real time when a test checks one.

mod claims;
mod deferrals;
mod inbox;
mod outbox;
mod queries;
mod redis;
mod retention;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use wechat_proto::{DedupKey, Reply};
use wxgate::store::memory::MemoryStore;
use wxgate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous, INTERRUPTED};
// The concern traits are in scope so that the suites call them on `dyn Store` and on a
// concrete `SqliteStore` alike.
#[allow(unused_imports)]
use wxgate::store::{
    AnswerKind, Claim, Claimed, Claims, Completion, Deferrals, Inbox, InboxQuery, NewMessage,
    Outbox, Retention, Store, StoreKey, DEFAULT_RETENTION,
};

/// A store under test, with whatever must outlive it (the SQLite file's directory).
struct Harness {
    store: Arc<dyn Store>,
    /// Declared after `store` so that the store is dropped (and its file closed) first.
    _dir: Option<TempDir>,
    /// Deletes a Redis test's keys when the test ends.
    _keys: Option<redis::TestKeys>,
}

/// Opens a fresh, empty store of one backend with the given claims' retention.
type Opener = fn(Duration) -> Harness;

fn open_memory(retention: Duration) -> Harness {
    Harness {
        store: Arc::new(MemoryStore::new(retention)),
        _dir: None,
        _keys: None,
    }
}

fn open_sqlite(retention: Duration) -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open_sqlite_at(&dir.path().join("wxgate.db"), retention);
    Harness {
        store: Arc::new(store),
        _dir: Some(dir),
        _keys: None,
    }
}

fn open_sqlite_at(path: &Path, retention: Duration) -> SqliteStore {
    let options = SqliteOptions {
        retention: Retention {
            claims: retention,
            ..Retention::default()
        },
        ..SqliteOptions::default()
    };
    SqliteStore::open(path, options, fixtures::T0).expect("the sqlite store opens")
}

/// Instantiates every suite test for every backend: memory and SQLite on a paused clock,
/// Redis on the real one (see the module docs).
macro_rules! conformance {
    ($($suite:ident { $($test:ident),* $(,)? })*) => {
        conformance!(@backend memory, crate::open_memory, (start_paused = true),
            $($suite { $($test),* })*);
        conformance!(@backend sqlite_backend, crate::open_sqlite, (start_paused = true),
            $($suite { $($test),* })*);
        conformance!(@backend redis_backend, crate::redis::open_redis,
            (flavor = "multi_thread", worker_threads = 2), $($suite { $($test),* })*);
    };
    (@backend $backend:ident, $open:path, $runtime:tt,
        $($suite:ident { $($test:ident),* })*) => {
        mod $backend {
            $(
                mod $suite {
                    $(
                        #[tokio::test $runtime]
                        async fn $test() {
                            crate::$suite::$test($open).await;
                        }
                    )*
                }
            )*
        }
    };
}

conformance! {
    claims {
        first_then_in_flight_then_done,
        concurrent_claimers_get_exactly_one_first,
        distinct_keys_do_not_interfere,
        wait_returns_a_later_completion,
        wait_times_out_while_running,
        wait_returns_at_once_when_complete,
        wait_on_an_unclaimed_key_returns_none_at_once,
        expired_claims_start_over_and_keep_history,
        a_failed_handler_is_done_with_its_error,
        writes_to_unclaimed_keys_fail,
    }
    deferrals {
        a_deferred_reply_is_taken_once_by_its_sender,
        deferred_replies_are_taken_oldest_first,
        a_deferred_message_without_reply_is_never_taken,
    }
    inbox {
        the_inbox_records_attempts_completion_and_answer,
        list_filters_and_orders,
        stats_ping_and_flush,
        history_past_the_inbox_retention_is_pruned,
    }
    queries {
        filters_paging_and_lookup,
    }
    outbox {
        a_delivery_is_owed_once_and_finished_once,
        deliveries_past_the_inbox_retention_are_pruned,
    }
}

/// Builders shared by the suites and the backend tests.
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
