//! The claims suite: single flight (claim, complete, wait, record_answer), run unchanged
//! over every backend.

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
    // Two senders whose masked forms (first letter, last four) are the same: a backend
    // that keyed by the dedup key's masked `Display` would merge them.
    let masked_alike = message_key(ACCOUNT, "oAliceOpenId-f0rs", 4);
    let masked_alike_too = message_key(ACCOUNT, "oBobbyOpenId-f0rs", 4);
    assert_eq!(
        masked_alike.dedup.to_string(),
        masked_alike_too.dedup.to_string()
    );

    for key in [
        &alice,
        &same_id_other_sender,
        &same_key_other_account,
        &event,
        &masked_alike,
        &masked_alike_too,
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
        .record_answer(&key, AnswerKind::Replied, 1, T0)
        .await
        .is_err());
    assert!(store.defer_reply(&key).await.is_err());
    store.flush().await.expect("flush");
    assert_eq!(store.stats().messages, 0, "nothing was recorded");
}
