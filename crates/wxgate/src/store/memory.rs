//! The in-memory store: one mutex-protected inbox and per-key wake-ups.
//!
//! It exists for tests and demos: it needs no file and no server, runs under tokio's paused
//! clock (`wait` sleeps only through `tokio::time`), and is the simplest reading of the
//! [`Store`] contract, against which the persistent backends are checked by the shared
//! conformance suite.
//!
//! What it must not do: pretend to be durable (everything is lost with the process), share
//! claims between processes, or sweep itself in the background. It keeps every message it
//! has seen for the life of the process, like the persistent inbox does, so it grows without
//! bound and is not meant for production traffic.
//!
//! The mutex is a `std::sync::Mutex` held only for map operations, never across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use wechat_proto::Reply;

use super::{
    AnswerKind, Claim, Claimed, Completion, InboxEntry, InboxQuery, NewMessage, Store, StoreError,
    StoreKey,
};

/// The number of entries `list` returns when the query asks for 0.
const DEFAULT_LIST_LIMIT: usize = 100;

/// A [`Store`] kept in this process's memory. See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    /// How long a claim stays live after its message was first received, in milliseconds.
    retention_ms: i64,
    /// The inbox and its indexes, behind one lock so that a claim is atomic.
    state: Mutex<State>,
}

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    /// Every message ever claimed, in the order of their first claim. A key that expired
    /// and arrived again has a second record, so history is never overwritten.
    records: Vec<Record>,
    /// The latest record of each key, as an index into `records`.
    latest: HashMap<StoreKey, usize>,
    /// The records marked deferred and not yet taken, as indexes into `records`.
    deferred: Vec<usize>,
}

/// One message and what happened to it.
#[derive(Debug)]
struct Record {
    /// The key the record was claimed under, to hand back from `take_deferred`.
    key: StoreKey,
    /// What `list` shows; it also holds the completion and the answer.
    entry: InboxEntry,
    /// Wakes the waiters of this record when it completes. Created by the first waiter,
    /// so that records nobody waits on cost no allocation for it.
    completed: Option<Arc<Notify>>,
}

impl MemoryStore {
    /// Creates an empty store whose claims stay live for `retention` after the first
    /// delivery of a message.
    pub fn new(retention: Duration) -> MemoryStore {
        MemoryStore {
            retention_ms: duration_to_ms(retention),
            state: Mutex::new(State::default()),
        }
    }

    /// Locks the state. Every mutation is a single step taken after all checks, so a
    /// panic while the lock was held cannot leave the maps half updated, and a poisoned
    /// lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The completion of the latest record of `key`, if it has one.
    fn completion_of(&self, key: &StoreKey) -> Option<Completion> {
        let state = self.lock();
        let index = *state.latest.get(key)?;
        state.records[index].entry.completion.clone()
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new(super::DEFAULT_RETENTION)
    }
}

impl State {
    /// The index of the latest record of `key`, or an error naming the operation.
    fn latest_index(&self, key: &StoreKey, operation: &str) -> Result<usize, StoreError> {
        self.latest
            .get(key)
            .copied()
            .ok_or_else(|| no_claim(operation, key))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError> {
        let mut state = self.lock();
        if let Some(&index) = state.latest.get(&message.key) {
            let entry = &mut state.records[index].entry;
            let age_ms = message.received_at_ms.saturating_sub(entry.received_at_ms);
            if age_ms <= self.retention_ms {
                entry.attempts = entry.attempts.saturating_add(1);
                let claim = match &entry.completion {
                    Some(completion) => Claim::Done(completion.clone()),
                    None => Claim::InFlight,
                };
                return Ok(Claimed {
                    claim,
                    attempt: entry.attempts,
                });
            }
        }
        let index = state.records.len();
        state.records.push(Record {
            key: message.key.clone(),
            entry: InboxEntry {
                account: message.key.account.clone(),
                dedup_key: message.key.dedup.stable_text(),
                from_user_name: message.from_user_name.clone(),
                kind: message.kind.clone(),
                inbound_json: message.inbound_json.clone(),
                received_at_ms: message.received_at_ms,
                attempts: 1,
                completion: None,
                last_answer: None,
                deferred: false,
            },
            completed: None,
        });
        state.latest.insert(message.key.clone(), index);
        Ok(Claimed {
            claim: Claim::First,
            attempt: 1,
        })
    }

    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError> {
        let waiters = {
            let mut state = self.lock();
            let index = state.latest_index(key, "complete")?;
            let record = &mut state.records[index];
            record.entry.completion = Some(completion.clone());
            let waiters = record.completed.clone();
            if completion.reply.is_none() && record.entry.deferred {
                // Nothing will ever be delivered for this message, so it no longer waits.
                record.entry.deferred = false;
                state.deferred.retain(|&deferred| deferred != index);
            }
            waiters
        };
        // Waking after the lock is released: every waiter looks at the state again, and it
        // already holds the completion.
        if let Some(waiters) = waiters {
            waiters.notify_waiters();
        }
        Ok(())
    }

    async fn wait(
        &self,
        key: &StoreKey,
        timeout: Duration,
    ) -> Result<Option<Completion>, StoreError> {
        let waiting = async {
            loop {
                let completed = {
                    let mut state = self.lock();
                    let Some(&index) = state.latest.get(key) else {
                        // Nothing was claimed under this key, so nothing will complete it.
                        return None;
                    };
                    let record = &mut state.records[index];
                    if let Some(completion) = &record.entry.completion {
                        return Some(completion.clone());
                    }
                    Arc::clone(record.completed.get_or_insert_with(Default::default))
                };
                let notified = completed.notified();
                tokio::pin!(notified);
                // Registering before looking again means that a completion landing between
                // the look above and this point still wakes us: no lost wake-up.
                notified.as_mut().enable();
                if let Some(completion) = self.completion_of(key) {
                    return Some(completion);
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, waiting).await {
            Ok(completion) => Ok(completion),
            // A completion that landed exactly at the deadline is still worth answering.
            Err(_elapsed) => Ok(self.completion_of(key)),
        }
    }

    async fn record_answer(
        &self,
        key: &StoreKey,
        answer: AnswerKind,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let index = state.latest_index(key, "record_answer")?;
        state.records[index].entry.last_answer = Some((answer, attempt));
        Ok(())
    }

    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError> {
        let mut state = self.lock();
        let index = state.latest_index(key, "defer_reply")?;
        let entry = &mut state.records[index].entry;
        let nothing_to_deliver =
            matches!(&entry.completion, Some(completion) if completion.reply.is_none());
        if entry.deferred || nothing_to_deliver {
            return Ok(());
        }
        entry.deferred = true;
        state.deferred.push(index);
        Ok(())
    }

    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError> {
        let mut state = self.lock();
        let records = &state.records;
        // The oldest message first; among messages received in the same millisecond, the
        // one claimed first.
        let oldest = state
            .deferred
            .iter()
            .enumerate()
            .filter(|&(_, &index)| {
                let entry = &records[index].entry;
                entry.account == account
                    && entry.from_user_name == from_user_name
                    && entry
                        .completion
                        .as_ref()
                        .is_some_and(|completion| completion.reply.is_some())
            })
            .min_by_key(|&(_, &index)| (records[index].entry.received_at_ms, index))
            .map(|(position, &index)| (position, index));
        let Some((position, index)) = oldest else {
            return Ok(None);
        };
        state.deferred.swap_remove(position);
        let record = &mut state.records[index];
        record.entry.deferred = false;
        let reply = record
            .entry
            .completion
            .as_ref()
            .and_then(|completion| completion.reply.clone());
        Ok(reply.map(|reply| (record.key.clone(), reply)))
    }

    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        let limit = if query.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            query.limit
        };
        let state = self.lock();
        let mut matching: Vec<(usize, &InboxEntry)> = state
            .records
            .iter()
            .map(|record| &record.entry)
            .enumerate()
            .filter(|(_, entry)| {
                query
                    .account
                    .as_deref()
                    .is_none_or(|account| entry.account == account)
                    && query
                        .since_ms
                        .is_none_or(|since_ms| entry.received_at_ms >= since_ms)
            })
            .collect();
        // Newest first; among messages received in the same millisecond, the latest claim.
        matching.sort_unstable_by(|(a_index, a), (b_index, b)| {
            (b.received_at_ms, b_index).cmp(&(a.received_at_ms, a_index))
        });
        Ok(matching
            .into_iter()
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.lock().records.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Nothing here can become more durable than it is.
        Ok(())
    }
}

/// Converts a retention to whole milliseconds, saturating far beyond any real value.
fn duration_to_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The error for an operation on a key that was never claimed.
fn no_claim(operation: &str, key: &StoreKey) -> StoreError {
    // The key itself names the follower, whose OpenID must not reach the logs.
    StoreError::Backend(format!(
        "{operation}: no claim recorded for this key on account {}",
        key.account
    ))
}
