//! The one background task that bounds a store: it prunes history past the inbox retention
//! and forgets claims past theirs, in small batches.
//!
//! It runs every [`interval`] (at most a minute, and at least ten times per inbox
//! retention), on tokio's clock, and reads the wall clock it is given for the horizon, so
//! that a test drives it with a paused runtime and a manual clock. Each call of
//! [`Store::prune`] removes at most [`PRUNE_BATCH`] messages, one short transaction for the
//! SQLite backend, so that requests are never held up behind a long delete; between
//! batches the task yields.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Retention, Store};
use crate::clock::WallClock;

/// The most messages one prune call removes.
pub const PRUNE_BATCH: usize = 500;

/// How often the store is pruned: a tenth of the shortest horizon, at most a minute.
pub fn interval(retention: Retention) -> Duration {
    let shortest = retention
        .inbox
        .map_or(retention.claims, |inbox| inbox.min(retention.claims));
    (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Starts pruning `store` until `stop` is cancelled.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn WallClock>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval(store.retention()));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            prune_all(&*store, &*clock).await;
        }
    })
}

/// Prunes in batches until a batch comes back short (or fails).
pub async fn prune_all(store: &dyn Store, clock: &dyn WallClock) -> usize {
    let mut removed = 0;
    loop {
        match store.prune(clock.now_ms(), PRUNE_BATCH).await {
            Ok(count) => {
                removed += count;
                if count < PRUNE_BATCH {
                    return removed;
                }
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::warn!(%error, "pruning the store failed; trying again next time");
                return removed;
            }
        }
    }
}
