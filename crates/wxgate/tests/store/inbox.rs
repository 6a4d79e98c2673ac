//! The inbox suite: what is recorded, listing, counters and pruning, run unchanged over
//! every backend.

use super::fixtures::*;
use super::*;
use wxgate::store::{AnswerRecord, Health};

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
        .record_answer(&key, AnswerKind::Held, 1, T0 + 5_500)
        .await
        .expect("record_answer");
    claim(store, &key, T0 + 5_000).await;
    store
        .complete(&key, &replied("hi"))
        .await
        .expect("complete");
    store
        .record_answer(&key, AnswerKind::Replied, 2, T0 + 5_020)
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
    assert_eq!(
        entry.answers,
        [
            AnswerRecord {
                attempt: 1,
                answer: AnswerKind::Held,
                at_ms: T0 + 5_500,
            },
            AnswerRecord {
                attempt: 2,
                answer: AnswerKind::Replied,
                at_ms: T0 + 5_020,
            },
        ],
        "every attempt's answer and time, in the order they were recorded"
    );
    assert!(!entry.deferred);
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
            ..InboxQuery::default()
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

pub async fn stats_ping_and_flush(open: Opener) {
    let harness = open(DEFAULT_RETENTION);
    let store = &*harness.store;
    store.ping().await.expect("ping");
    assert_eq!(store.stats().messages, 0);
    let key = message_key(ACCOUNT, "o-alice", 16);
    claim(store, &key, T0).await;
    claim(store, &key, T0 + 1).await;
    claim(store, &message_key(ACCOUNT, "o-bob", 16), T0).await;
    store.flush().await.expect("flush");
    let stats = store.stats();
    assert_eq!(stats.messages, 2, "messages, not deliveries");
    assert_eq!(stats.live_claims, 2);
    assert_eq!(stats.pruned, 0);
    assert_eq!(store.health(), Health::Ok);
    store.ping().await.expect("ping");
}

pub async fn history_past_the_inbox_retention_is_pruned(open: Opener) {
    let harness = open(DEFAULT_RETENTION);
    let store = &*harness.store;
    let inbox_ms = store
        .retention()
        .inbox
        .expect("the default keeps history for a while")
        .as_millis() as i64;
    let old: Vec<StoreKey> = (0..3)
        .map(|n| message_key(ACCOUNT, "o-alice", 100 + n))
        .collect();
    for (n, key) in old.iter().enumerate() {
        claim(store, key, T0 + n as i64).await;
        store
            .complete(key, &replied("old"))
            .await
            .expect("complete");
    }
    let recent = message_key(ACCOUNT, "o-bob", 200);
    let later = T0 + inbox_ms + 10_000;
    claim(store, &recent, later).await;
    store.flush().await.expect("flush");
    assert_eq!(store.stats().messages, 4);

    let now = later + 1;
    assert_eq!(
        store.prune(now, 2).await.expect("prune"),
        2,
        "a batch removes no more than asked"
    );
    assert_eq!(store.prune(now, 2).await.expect("prune"), 1);
    assert_eq!(store.prune(now, 2).await.expect("prune"), 0);
    let listed = store.list(&InboxQuery::default()).await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "only the message inside the retention stays"
    );
    assert_eq!(listed[0].received_at_ms, later);
    let stats = store.stats();
    assert_eq!(stats.messages, 1);
    assert_eq!(stats.pruned, 3);
    assert_eq!(
        stats.live_claims, 1,
        "claims past their own retention are forgotten too"
    );
    // The recent message is still live: its retry is coalesced.
    assert_eq!(
        claim(store, &recent, later + 5_000).await,
        claimed(Claim::InFlight, 2)
    );
}
