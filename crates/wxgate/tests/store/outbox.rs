//! The outbox suite: durable `push` deliveries, run unchanged over every backend.

use super::fixtures::*;
use super::*;
use wxgate::store::{Delivery, DeliveryState};

fn delivery(msg_id: u64, created_at_ms: i64) -> Delivery {
    Delivery {
        key: message_key(ACCOUNT, "o-alice", msg_id),
        to_user: "o-alice".to_owned(),
        created_at_ms,
    }
}

pub async fn a_delivery_is_owed_once_and_finished_once(open: Opener) {
    let harness = open(DEFAULT_RETENTION);
    let store = &*harness.store;
    let (first, second, never) = (delivery(1, T0), delivery(2, T0 + 1), delivery(3, T0));
    assert!(store.enqueue(&first).await.expect("enqueue"));
    assert!(
        !store.enqueue(&first).await.expect("enqueue"),
        "a message is never owed twice"
    );
    assert!(store.enqueue(&second).await.expect("enqueue"));
    assert_eq!(
        store.pending().await.expect("pending"),
        [first.clone(), second.clone()],
        "oldest first"
    );
    assert_eq!(
        store.state(&first.key).await.expect("state"),
        Some(DeliveryState::Pending)
    );

    store
        .finish(&first.key, &DeliveryState::Sent)
        .await
        .expect("finish");
    let failed = DeliveryState::Failed("45015 out of the 48-hour window".to_owned());
    store.finish(&second.key, &failed).await.expect("finish");
    assert!(store.pending().await.expect("pending").is_empty());
    assert_eq!(
        store.state(&first.key).await.expect("state"),
        Some(DeliveryState::Sent)
    );
    assert_eq!(store.state(&second.key).await.expect("state"), Some(failed));
    assert_eq!(store.state(&never.key).await.expect("state"), None);
    assert!(
        !store.enqueue(&first).await.expect("enqueue"),
        "a finished delivery is never owed again"
    );
}

pub async fn deliveries_past_the_inbox_retention_are_pruned(open: Opener) {
    let harness = open(DEFAULT_RETENTION);
    let store = &*harness.store;
    let inbox_ms = store
        .retention()
        .inbox
        .expect("a history horizon")
        .as_millis() as i64;
    let old = delivery(1, T0);
    let recent = delivery(2, T0 + inbox_ms + 10_000);
    assert!(store.enqueue(&old).await.expect("enqueue"));
    assert!(store.enqueue(&recent).await.expect("enqueue"));
    store
        .finish(&old.key, &DeliveryState::Sent)
        .await
        .expect("finish");

    store
        .prune(recent.created_at_ms + 1, 100)
        .await
        .expect("prune");
    assert_eq!(store.state(&old.key).await.expect("state"), None);
    assert_eq!(store.pending().await.expect("pending"), [recent]);
}
