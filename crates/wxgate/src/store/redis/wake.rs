//! Cross-instance wake-ups: one pub/sub connection per store, subscribed to the prefix's
//! `done` channel, that wakes this process's waiters of the suffix a completion published.
//!
//! Why no wake-up is lost: a waiter registers its `Notify` and enables it *before* it
//! reads the claim's status, and the subscription is live before any waiter exists
//! ([`listen`] returns once subscribed). A completion committed after the read is
//! therefore published to a subscribed connection and wakes the waiter; one committed
//! before is seen by the read. When the connection drops, messages published meanwhile
//! are lost, so after every resubscription the listener wakes *every* waiter, and each
//! reads its status again. Nothing polls: a waiter sleeps until a message, a
//! resubscription or its own deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::super::live::lock;
use super::super::StoreError;

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// The waiters of this process, by claim suffix, with how many wait on each.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    by_suffix: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// One waiter's registration; dropping it unregisters the waiter.
pub(super) struct Registration<'a> {
    waiters: &'a Waiters,
    suffix: String,
    /// The notification this waiter sleeps on.
    pub(super) notify: Arc<Notify>,
}

impl Waiters {
    /// Registers a waiter of `suffix`.
    pub(super) fn register(&self, suffix: &str) -> Registration<'_> {
        let mut map = lock(&self.by_suffix);
        let entry = map
            .entry(suffix.to_owned())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            waiters: self,
            suffix: suffix.to_owned(),
            notify: Arc::clone(&entry.0),
        }
    }

    /// Wakes the waiters of `suffix`.
    pub(super) fn wake(&self, suffix: &str) {
        if let Some((notify, _)) = lock(&self.by_suffix).get(suffix) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter, so that each reads its claim again.
    pub(super) fn wake_all(&self) {
        for (notify, _) in lock(&self.by_suffix).values() {
            notify.notify_waiters();
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.waiters.by_suffix);
        if let Some(entry) = map.get_mut(&self.suffix) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.suffix);
            }
        }
    }
}

/// Subscribes to `channel`, then keeps a task turning its messages into wake-ups (and
/// reconnecting as needed) until `stop` is cancelled. Fails when the first subscription
/// fails.
pub(super) async fn listen(
    client: redis::Client,
    channel: String,
    waiters: Arc<Waiters>,
    connect_timeout: Duration,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let first = subscribe(&client, &channel, connect_timeout).await?;
    tokio::spawn(async move {
        let mut pubsub = Some(first);
        loop {
            if let Some(connection) = pubsub.take() {
                let mut messages = connection.into_on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => match std::str::from_utf8(message.get_payload_bytes()) {
                                Ok(suffix) => waiters.wake(suffix),
                                Err(_) => tracing::warn!("ignored a non-UTF-8 completion notice"),
                            },
                            None => break,
                        },
                    }
                }
                tracing::warn!("lost the redis subscription for completions; reconnecting");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
            match subscribe(&client, &channel, connect_timeout).await {
                Ok(connection) => {
                    // Completions published while unsubscribed were lost: every
                    // waiter reads its claim again.
                    waiters.wake_all();
                    tracing::info!("redis subscription for completions restored");
                    pubsub = Some(connection);
                }
                Err(error) => tracing::debug!(%error, "redis subscription failed"),
            }
        }
    });
    Ok(())
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
    connect_timeout: Duration,
) -> Result<redis::aio::PubSub, StoreError> {
    let connecting = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(StoreError::Backend(error.to_string())),
        Err(_) => Err(StoreError::Backend(
            "redis did not answer the subscription in time".to_owned(),
        )),
    }
}
