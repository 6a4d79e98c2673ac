//! What only the SQLite store promises: restarts, one process per file, a read-only reader
//! beside it, and no message stranded by a full disk.

use super::fixtures::*;
use super::*;
use wxgate::store::sqlite::SqliteReader;
use wxgate::store::Health;

#[tokio::test(start_paused = true)]
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
            .record_answer(&answered, AnswerKind::Replied, 1, T0 + 10)
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
    assert_eq!(
        store.stats().messages,
        2,
        "the counter starts from the file"
    );
    let answered_entry = entries
        .iter()
        .find(|entry| entry.dedup_key == answered.dedup.stable_text())
        .expect("the answered message is listed");
    assert_eq!(answered_entry.last_answer, Some((AnswerKind::Replied, 1)));
    assert_eq!(answered_entry.attempts, 2);
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
async fn the_claims_of_a_process_that_died_are_interrupted_on_open() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("wxgate.db");
    let key = message_key(ACCOUNT, "o-alice", 4);
    drop(open_sqlite_at(&path, DEFAULT_RETENTION));
    // A process killed mid-flight leaves its claim's row without a completion (and its
    // lock released by the kernel); write that row by hand.
    let raw = rusqlite::Connection::open(&path).expect("a raw connection");
    raw.execute(
        "INSERT INTO inbox (id, key_order, key_hash, account, dedup_key, from_user_name, kind,
                            inbound_json, received_at_ms, attempts, owner)
         VALUES (7, 4, 0, ?1, ?2, 'o-alice', 'text', '{}', ?3, 1, 0)",
        rusqlite::params![ACCOUNT, key.dedup.stable_text(), T0],
    )
    .expect("a row left running");
    drop(raw);

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
    let next = message_key(ACCOUNT, "o-alice", 5);
    assert_eq!(
        claim(&restarted, &next, T0 + 6_000).await,
        claimed(Claim::First, 1),
        "new rows take ids after the ones in the file"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_gateway_on_the_file_is_refused_and_a_reader_is_not() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("wxgate.db");
    let key = message_key(ACCOUNT, "o-alice", 5);
    let first = open_sqlite_at(&path, DEFAULT_RETENTION);
    claim(&first, &key, T0).await;
    first.flush().await.expect("flush");

    let refused =
        SqliteStore::open(&path, SqliteOptions::default(), T0).expect_err("one gateway per file");
    assert!(
        refused
            .to_string()
            .contains("in use by another wxgate process"),
        "{refused}"
    );

    let reader = SqliteReader::open(&path).expect("a reader beside the gateway");
    let listed = wxgate::store::Inbox::list(&reader, &by_account(ACCOUNT))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].dedup_key, key.dedup.stable_text());

    drop(first);
    let second = open_sqlite_at(&path, DEFAULT_RETENTION);
    assert_eq!(
        claim(&second, &key, T0 + 1_000).await.attempt,
        2,
        "the file is free once the first gateway is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn full_synchronous_mode_works_the_same() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("wxgate.db");
    let options = SqliteOptions {
        synchronous: Synchronous::Full,
        max_batch: 1,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options, T0).expect("the sqlite store opens");
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

/// A real full disk, made by capping the file's size with SQLite's own `max_page_count`:
/// claims fail (the gateway answers 503 and WeChat retries), a completion that cannot be
/// written is kept and answered from memory while the store reports itself degraded, and
/// once there is room again everything becomes durable without a restart.
#[tokio::test(start_paused = true)]
async fn a_full_disk_strands_no_message() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("wxgate.db");
    let answered = message_key(ACCOUNT, "o-alice", 1);
    {
        let store = open_sqlite_at(&path, DEFAULT_RETENTION);
        assert_eq!(claim(&store, &answered, T0).await, claimed(Claim::First, 1));
        // No room beyond the pages the file has now.
        store.set_max_pages(1).await.expect("cap the file");
        let mut refused = None;
        for msg_id in 1_000..3_000 {
            let key = message_key(ACCOUNT, "o-bob", msg_id);
            if let Err(error) = store.claim(&message(&key, T0 + 1)).await {
                refused = Some((key, error));
                break;
            }
        }
        let (refused_key, error) = refused.expect("the full file refuses a new message");
        assert!(error.to_string().contains("full"), "{error}");

        // The handler of the first message finishes while the disk is full.
        store
            .complete(&answered, &replied("kept in memory"))
            .await
            .expect("complete");
        store.flush().await.expect_err("nothing can be committed");
        let Health::Degraded { waiting, reason } = store.health() else {
            panic!("a store with unwritten completions is degraded");
        };
        assert!(waiting >= 1);
        assert!(reason.contains("full"), "{reason}");
        assert_eq!(
            claim(&store, &answered, T0 + 5_000).await,
            claimed(Claim::Done(replied("kept in memory")), 2),
            "the retry is answered from memory meanwhile"
        );

        // Room again: the completion becomes durable, and the refused message is claimed
        // anew when WeChat retries it.
        store.set_max_pages(1 << 30).await.expect("make room");
        store.flush().await.expect("flush");
        assert_eq!(store.health(), Health::Ok);
        assert_eq!(
            claim(&store, &refused_key, T0 + 6_000).await,
            claimed(Claim::First, 1)
        );
    }
    let reopened = open_sqlite_at(&path, DEFAULT_RETENTION);
    assert_eq!(
        claim(&reopened, &answered, T0 + 10_000).await,
        claimed(Claim::Done(replied("kept in memory")), 3),
        "the completion written after the disk filled survived the restart"
    );
}
