//! The in-memory store: the live claims plus a bounded history, in this process only.
//!
//! It exists for tests, demos and embedding: it needs no file and no server, runs under
//! tokio's paused clock (`wait` sleeps only through `tokio::time`), and is the simplest
//! reading of the storage contract, against which the persistent backends are checked by
//! the shared conformance suites.
//!
//! What it must not do: pretend to be durable (everything is lost with the process), share
//! claims between processes, or grow without bound: [`Store::prune`] removes history past
//! the inbox retention and claims past theirs, so its memory is bounded by traffic times
//! retention.
//!
//! Every lock is a `std::sync::Mutex` held for map operations only, never across an
//! `.await`. The history is a `BTreeMap` ordered by arrival, so listing newest first and
//! pruning oldest first never sort or scan the whole of it, and it grows node by node
//! instead of reallocating one large buffer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use wechat_proto::Reply;

use super::live::{lock, Decision, Deferral, Live, RecordId};
use super::{
    AnswerKind, AnswerRecord, Claimed, Claims, Completion, Deferrals, Delivery, DeliveryState,
    Health, Inbox, InboxCursor, InboxEntry, InboxPage, InboxQuery, InboxStats, NewMessage, Outbox,
    Retention, Store, StoreError, StoreKey, MAX_ANSWER_RECORDS,
};

/// A store kept in this process's memory. See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    retention: Retention,
    live: Live,
    next_id: AtomicI64,
    /// Every message inside the inbox retention, by arrival.
    history: Mutex<BTreeMap<RecordId, InboxEntry>>,
    /// Push deliveries by message key.
    outbox: Mutex<HashMap<StoreKey, (Delivery, DeliveryState)>>,
    pruned: AtomicU64,
}

impl MemoryStore {
    /// An empty store whose claims stay live for `retention` after the first delivery of a
    /// message, keeping history for the default inbox retention.
    pub fn new(retention: Duration) -> MemoryStore {
        MemoryStore::with_retention(Retention {
            claims: retention,
            ..Retention::default()
        })
    }

    /// An empty store with both horizons given.
    pub fn with_retention(retention: Retention) -> MemoryStore {
        MemoryStore {
            retention,
            live: Live::new(retention.claims),
            next_id: AtomicI64::new(1),
            history: Mutex::default(),
            outbox: Mutex::default(),
            pruned: AtomicU64::new(0),
        }
    }

    /// Applies `change` to the history entry of `record`, if it is still kept.
    fn update(&self, record: RecordId, change: impl FnOnce(&mut InboxEntry)) {
        if let Some(entry) = lock(&self.history).get_mut(&record) {
            change(entry);
        }
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::with_retention(Retention::default())
    }
}

#[async_trait]
impl Claims for MemoryStore {
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError> {
        let decision = self.live.claim(message, true, || {
            self.next_id.fetch_add(1, Ordering::Relaxed)
        });
        match decision {
            Decision::First { record } => {
                let entry = InboxEntry {
                    account: message.key.account.clone(),
                    dedup_key: message.key.dedup.stable_text(),
                    from_user_name: message.from_user_name.clone(),
                    kind: message.kind.clone(),
                    inbound_json: message.inbound_json.clone(),
                    received_at_ms: message.received_at_ms,
                    attempts: 1,
                    completion: None,
                    last_answer: None,
                    answers: Vec::new(),
                    deferred: false,
                };
                lock(&self.history).insert(record, entry);
                Ok(Claimed {
                    claim: super::Claim::First,
                    attempt: 1,
                })
            }
            Decision::Existing { record, claimed } => {
                self.update(record, |entry| entry.attempts = claimed.attempt);
                Ok(claimed)
            }
            // Claims of the memory store are durable as they are made.
            Decision::NotYetDurable => Err(StoreError::Backend(
                "a memory claim was not marked recorded".to_owned(),
            )),
        }
    }

    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError> {
        let (record, deferred) = self.live.complete(key, completion)?;
        self.update(record, |entry| {
            entry.completion = Some(completion.clone());
            entry.deferred = deferred;
        });
        Ok(())
    }

    async fn wait(
        &self,
        key: &StoreKey,
        timeout: Duration,
    ) -> Result<Option<Completion>, StoreError> {
        Ok(self.live.wait(key, timeout).await)
    }

    async fn record_answer(
        &self,
        key: &StoreKey,
        answer: AnswerKind,
        attempt: u32,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let record = self.live.record(key, "record_answer")?;
        self.update(record, |entry| {
            entry.last_answer = Some((answer, attempt));
            if entry.answers.len() >= MAX_ANSWER_RECORDS {
                entry.answers.remove(0);
            }
            entry.answers.push(AnswerRecord {
                attempt,
                answer,
                at_ms,
            });
        });
        Ok(())
    }
}

#[async_trait]
impl Deferrals for MemoryStore {
    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError> {
        match self.live.defer(key)? {
            Deferral::Deferred(record) => self.update(record, |entry| entry.deferred = true),
            // Marked in the history only once there is a reply to deliver.
            Deferral::WhenComplete(_) | Deferral::NothingToDefer => {}
        }
        Ok(())
    }

    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError> {
        let Some((record, key, reply)) = self.live.take_deferred(account, from_user_name) else {
            return Ok(None);
        };
        self.update(record, |entry| entry.deferred = false);
        Ok(Some((key, reply)))
    }
}

#[async_trait]
impl Inbox for MemoryStore {
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError> {
        let limit = query.effective_limit();
        // The history is ordered by (arrival, record id): the record id is the cursor's
        // sequence number, and the time range and the cursor bound the range walked.
        let upper = match (query.before, query.until_ms) {
            (Some(before), until) => {
                let before = RecordId {
                    received_at_ms: before.received_at_ms,
                    id: before.seq,
                };
                match until {
                    Some(until_ms) if until_ms < before.received_at_ms => {
                        Bound::Excluded(RecordId {
                            received_at_ms: until_ms.saturating_add(1),
                            id: i64::MIN,
                        })
                    }
                    _ => Bound::Excluded(before),
                }
            }
            (None, Some(until_ms)) => Bound::Excluded(RecordId {
                received_at_ms: until_ms.saturating_add(1),
                id: i64::MIN,
            }),
            (None, None) => Bound::Unbounded,
        };
        let history = lock(&self.history);
        let mut matching = history
            .range((Bound::Unbounded, upper))
            .rev()
            .take_while(|(record, _)| {
                query
                    .since_ms
                    .is_none_or(|since_ms| record.received_at_ms >= since_ms)
            })
            .filter(|(_, entry)| query.matches(entry));
        let entries: Vec<(RecordId, InboxEntry)> = matching
            .by_ref()
            .take(limit)
            .map(|(record, entry)| (*record, entry.clone()))
            .collect();
        let next = match (entries.last(), matching.next()) {
            (Some((last, _)), Some(_)) => Some(InboxCursor {
                received_at_ms: last.received_at_ms,
                seq: last.id,
            }),
            _ => None,
        };
        Ok(InboxPage {
            entries: entries.into_iter().map(|(_, entry)| entry).collect(),
            next,
        })
    }

    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError> {
        // The latest record of the key: a key that expired and came again has two.
        Ok(lock(&self.history)
            .values()
            .rev()
            .find(|entry| entry.account == account && entry.dedup_key == dedup_key)
            .cloned())
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let mut outbox = lock(&self.outbox);
        if outbox.contains_key(&delivery.key) {
            return Ok(false);
        }
        outbox.insert(
            delivery.key.clone(),
            (delivery.clone(), DeliveryState::Pending),
        );
        Ok(true)
    }

    async fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut pending: Vec<Delivery> = lock(&self.outbox)
            .values()
            .filter(|(_, state)| *state == DeliveryState::Pending)
            .map(|(delivery, _)| delivery.clone())
            .collect();
        pending.sort_by_key(|delivery| delivery.created_at_ms);
        Ok(pending)
    }

    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), StoreError> {
        if let Some(record) = lock(&self.outbox).get_mut(key) {
            record.1 = state.clone();
        }
        Ok(())
    }

    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, StoreError> {
        Ok(lock(&self.outbox).get(key).map(|(_, state)| state.clone()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn prune(&self, now_ms: i64, batch: usize) -> Result<usize, StoreError> {
        let claims_horizon = now_ms.saturating_sub(duration_ms(self.retention.claims));
        let history_horizon = self
            .retention
            .inbox
            .map(|inbox| now_ms.saturating_sub(duration_ms(inbox)));
        let swept = self.live.sweep(claims_horizon, history_horizon, batch);
        let Some(horizon) = history_horizon else {
            return Ok(swept);
        };
        let removed = {
            let mut history = lock(&self.history);
            let mut removed = 0;
            while removed < batch {
                match history.first_key_value() {
                    Some((record, _)) if record.received_at_ms < horizon => {
                        history.pop_first();
                        removed += 1;
                    }
                    _ => break,
                }
            }
            removed
        };
        lock(&self.outbox).retain(|_, (delivery, _)| delivery.created_at_ms >= horizon);
        self.pruned.fetch_add(removed as u64, Ordering::Relaxed);
        Ok(removed.max(swept))
    }

    fn retention(&self) -> Retention {
        self.retention
    }

    fn stats(&self) -> InboxStats {
        InboxStats {
            messages: lock(&self.history).len() as u64,
            live_claims: self.live.len(),
            pruned: self.pruned.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> Health {
        Health::Ok
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Nothing here can become more durable than it is.
        Ok(())
    }
}

/// A duration in whole milliseconds, saturating far beyond any real value.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
