//! The housekeeping task bounds a store by itself: driven here on tokio's paused clock
//! with a manual wall clock, so a retention of a minute costs no real time.

use super::fixtures::*;
use super::*;
use tokio_util::sync::CancellationToken;
use wxgate::clock::{ManualClock, WallClock};
use wxgate::store::housekeeping;

#[tokio::test(start_paused = true)]
async fn the_housekeeping_task_prunes_history_past_the_retention() {
    let minute = Duration::from_secs(60);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::with_retention(Retention {
        claims: minute,
        inbox: Some(minute),
    }));
    let clock = Arc::new(ManualClock::new(T0));
    assert_eq!(
        housekeeping::interval(store.retention()),
        Duration::from_secs(6),
        "a tenth of the retention"
    );
    for msg_id in 0..1_200 {
        claim(&*store, &message_key(ACCOUNT, "o-alice", msg_id), T0).await;
    }
    let stop = CancellationToken::new();
    let task = housekeeping::spawn(Arc::clone(&store), clock.clone(), stop.clone());

    // A minute later nothing has expired yet.
    clock.advance_ms(60_000);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(store.stats().messages, 1_200);

    let fresh = message_key(ACCOUNT, "o-bob", 1);
    claim(&*store, &fresh, clock.now_ms()).await;
    clock.advance_ms(1_000);
    // One more tick; the prune runs its batches without moving the paused clock, so it
    // has finished a millisecond later.
    tokio::time::sleep(housekeeping::interval(store.retention()) + Duration::from_millis(1)).await;
    let stats = store.stats();
    assert_eq!(stats.messages, 1, "every expired message went, in batches");
    assert_eq!(stats.pruned, 1_200);
    assert_eq!(stats.live_claims, 1);
    let listed = store.list(&InboxQuery::default()).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].dedup_key, fresh.dedup.to_string());

    stop.cancel();
    task.await.expect("the task stops when told");
}
