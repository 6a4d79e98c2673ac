//! The deferrals suite: replies kept for a follower's next message, run unchanged over
//! every backend.

use super::fixtures::*;
use super::*;

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
    for (key, received_at_ms, content) in [(&newer, T0 + 1_000, "newer"), (&older, T0, "older")] {
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
