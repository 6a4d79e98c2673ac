//! The live state of single flight, shared by the memory and SQLite backends: the claims
//! still inside their retention, their waiters, and the replies deferred to a follower's
//! next message.
//!
//! It is the authority for claims in one process. The memory backend keeps nothing else
//! that matters for single flight; the SQLite backend rebuilds it from the file at start and
//! writes behind it, so that a claim costs one lookup here and one appended row there, and
//! a retry is answered without touching the file.
//!
//! Why sharded: one map of every live claim would be rehashed as a whole when it grows,
//! which stalled requests for tens of milliseconds at a few hundred thousand entries. With
//! [`SHARDS`] maps each rehash moves a small fraction of the claims, and two claims of
//! different keys rarely contend for a lock. Each lock is a `std::sync::Mutex` held for
//! map operations only, never across an `.await`.
//!
//! What it must not do: read the clock (times are arguments), do I/O, or grow without
//! bound: [`Live::sweep`] forgets claims past their retention, in small steps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use wechat_proto::{DedupKey, Reply};

use super::{Claim, Claimed, Completion, NewMessage, StoreError, StoreKey};

/// How many independent maps hold the live claims.
const SHARDS: usize = 64;

/// The hasher of the live maps: foldhash, randomly seeded per store (the keys are
/// authenticated WeChat identifiers, and a seed keeps collisions unpredictable anyway).
/// Measured: std's SipHash was about 3 % of a request's CPU, hashing each key twice.
type KeyHasher = foldhash::fast::RandomState;

/// Where a message's record lives in the backend's history: its id and arrival time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RecordId {
    /// When the message first arrived, Unix ms (orders the history).
    pub(crate) received_at_ms: i64,
    /// Unique per record, allocated by the backend in arrival order.
    pub(crate) id: i64,
}

/// What a claim found.
#[derive(Debug)]
pub(crate) enum Decision {
    /// A new live claim was made under `record`; the backend records the message.
    First { record: RecordId },
    /// The live claim's message is not durable yet (its first claim is being written):
    /// wait for the backend's pending writes, then claim again.
    NotYetDurable,
    /// A live claim exists: this is a retry, already counted.
    Existing { record: RecordId, claimed: Claimed },
}

/// What [`Live::defer`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Deferral {
    /// The reply waits for the follower's next message.
    Deferred(RecordId),
    /// The handler is still running: its reply will wait once it has one.
    WhenComplete(RecordId),
    /// The handler finished without a reply: there is nothing to defer.
    NothingToDefer,
}

/// The replies waiting for each follower's next message: by (account, OpenID), oldest
/// first.
type DeferredReplies = HashMap<(String, String), BTreeMap<RecordId, (StoreKey, Reply)>>;

/// The live claims, their wake-ups and the deferred replies.
#[derive(Debug)]
pub(crate) struct Live {
    /// How long a claim stays live after its message first arrived, in ms.
    retention_ms: i64,
    /// Picks a key's shard; each shard's map has its own hasher state.
    hasher: KeyHasher,
    shards: Box<[Mutex<Shard>]>,
    /// Deferred replies by (account, follower), oldest first.
    deferred: Mutex<DeferredReplies>,
    /// How many claims the shards hold (for metrics, without locking them all).
    claims: AtomicU64,
}

#[derive(Debug, Default)]
struct Shard {
    /// The key is shared with `arrivals`, so that a claim copies its key once.
    claims: HashMap<Arc<StoreKey>, LiveClaim, KeyHasher>,
    /// The claims in order of first arrival, for [`Live::sweep`]. A key claimed again after
    /// it expired appears twice; the older entry is skipped when its time comes.
    arrivals: VecDeque<(RecordId, Arc<StoreKey>)>,
}

#[derive(Debug)]
struct LiveClaim {
    record: RecordId,
    attempts: u32,
    /// Whether the backend has recorded the message (always, for the memory backend).
    durable: bool,
    completion: Option<Completion>,
    /// Deferred before the handler finished: defer the reply once there is one.
    defer_when_complete: bool,
    /// Wakes the waiters of this claim. Created by the first waiter, so that claims nobody
    /// waits on cost no allocation for it.
    completed: Option<Arc<Notify>>,
}

impl Live {
    /// An empty state whose claims stay live for `retention`.
    pub(crate) fn new(retention: Duration) -> Live {
        Live {
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            hasher: KeyHasher::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            deferred: Mutex::default(),
            claims: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, Shard> {
        // The modulo keeps the index below SHARDS, so the cast cannot truncate a used bit.
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        lock(&self.shards[index])
    }

    /// Claims `message.key`: counts a retry of a live claim, or makes a new one under the
    /// record id `allocate` gives. `durable` says whether the new claim's message counts
    /// as recorded at once (memory) or only after [`Live::mark_durable`] (SQLite).
    pub(crate) fn claim(
        &self,
        message: &NewMessage,
        durable: bool,
        allocate: impl FnOnce() -> i64,
    ) -> Decision {
        let mut shard = self.shard(&message.key);
        let Shard { claims, arrivals } = &mut *shard;
        if let Some(live) = claims.get_mut(&message.key) {
            let age_ms = message
                .received_at_ms
                .saturating_sub(live.record.received_at_ms);
            if age_ms <= self.retention_ms {
                if !live.durable {
                    return Decision::NotYetDurable;
                }
                live.attempts = live.attempts.saturating_add(1);
                let claim = match &live.completion {
                    Some(completion) => Claim::Done(completion.clone()),
                    None => Claim::InFlight,
                };
                return Decision::Existing {
                    record: live.record,
                    claimed: Claimed {
                        claim,
                        attempt: live.attempts,
                    },
                };
            }
            // Expired: the key starts over, and the old record stays in the history.
            let record = RecordId {
                received_at_ms: message.received_at_ms,
                id: allocate(),
            };
            let old = std::mem::replace(live, LiveClaim::new(record, durable));
            if let Some(completed) = old.completed {
                completed.notify_waiters();
            }
            arrivals.push_back((record, Arc::new(message.key.clone())));
            return Decision::First { record };
        }
        let record = RecordId {
            received_at_ms: message.received_at_ms,
            id: allocate(),
        };
        let key = Arc::new(message.key.clone());
        claims.insert(Arc::clone(&key), LiveClaim::new(record, durable));
        self.claims.fetch_add(1, Ordering::Relaxed);
        arrivals.push_back((record, key));
        Decision::First { record }
    }

    /// Puts back a claim read from a backend's file at start (durable by definition).
    pub(crate) fn restore(
        &self,
        key: StoreKey,
        record: RecordId,
        attempts: u32,
        completion: Option<Completion>,
    ) {
        let mut shard = self.shard(&key);
        let mut live = LiveClaim::new(record, true);
        live.attempts = attempts;
        live.completion = completion;
        let key = Arc::new(key);
        shard.arrivals.push_back((record, Arc::clone(&key)));
        if shard.claims.insert(key, live).is_none() {
            self.claims.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The backend recorded the message of the claim `record`.
    pub(crate) fn mark_durable(&self, key: &StoreKey, record: RecordId) {
        if let Some(live) = self.shard(key).claims.get_mut(key) {
            if live.record == record {
                live.durable = true;
            }
        }
    }

    /// The backend could not record the message of the claim `record`: forget the claim,
    /// so that WeChat's retry claims it anew.
    pub(crate) fn abandon(&self, key: &StoreKey, record: RecordId) {
        let mut shard = self.shard(key);
        if shard
            .claims
            .get(key)
            .is_some_and(|live| live.record == record)
        {
            if let Some(live) = shard.claims.remove(key) {
                self.claims.fetch_sub(1, Ordering::Relaxed);
                if let Some(completed) = live.completed {
                    completed.notify_waiters();
                }
            }
        }
    }

    /// Records the handler's result and wakes every waiter. Returns the record, and
    /// whether the reply now waits for the follower's next message.
    pub(crate) fn complete(
        &self,
        key: &StoreKey,
        completion: &Completion,
    ) -> Result<(RecordId, bool), StoreError> {
        let (record, defer, completed) = {
            let mut shard = self.shard(key);
            let live = shard
                .claims
                .get_mut(key)
                .ok_or_else(|| no_claim("complete", key))?;
            live.completion = Some(completion.clone());
            let defer = live.defer_when_complete && completion.reply.is_some();
            live.defer_when_complete = false;
            (live.record, defer, live.completed.clone())
        };
        if let (true, Some(reply)) = (defer, &completion.reply) {
            self.push_deferred(key, record, reply.clone());
        }
        // Woken after the lock is released: every waiter looks again and finds the
        // completion already there.
        if let Some(completed) = completed {
            completed.notify_waiters();
        }
        Ok((record, defer))
    }

    /// The record of the live claim of `key`, for writes that only need to find it.
    pub(crate) fn record(
        &self,
        key: &StoreKey,
        operation: &'static str,
    ) -> Result<RecordId, StoreError> {
        self.shard(key)
            .claims
            .get(key)
            .map(|live| live.record)
            .ok_or_else(|| no_claim(operation, key))
    }

    /// Waits up to `timeout` for the completion of `key`. Only tokio's clock is used, so
    /// it runs under a paused clock. Cancel-safe: dropping it only drops a wake-up.
    pub(crate) async fn wait(&self, key: &StoreKey, timeout: Duration) -> Option<Completion> {
        let waiting = async {
            loop {
                let completed = {
                    let mut shard = self.shard(key);
                    let live = shard.claims.get_mut(key)?;
                    if let Some(completion) = &live.completion {
                        return Some(completion.clone());
                    }
                    Arc::clone(live.completed.get_or_insert_with(Default::default))
                };
                let notified = completed.notified();
                tokio::pin!(notified);
                // Registered before looking again, so a completion landing in between
                // still wakes this waiter: no lost wake-up.
                notified.as_mut().enable();
                {
                    let shard = self.shard(key);
                    match shard.claims.get(key) {
                        None => return None,
                        Some(live) => {
                            if let Some(completion) = &live.completion {
                                return Some(completion.clone());
                            }
                        }
                    }
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, waiting).await {
            Ok(completion) => completion,
            // A completion that landed exactly at the deadline is still worth answering.
            Err(_elapsed) => self
                .shard(key)
                .claims
                .get(key)
                .and_then(|live| live.completion.clone()),
        }
    }

    /// Marks the reply of `key` for the follower's next message.
    pub(crate) fn defer(&self, key: &StoreKey) -> Result<Deferral, StoreError> {
        let (record, reply) = {
            let mut shard = self.shard(key);
            let live = shard
                .claims
                .get_mut(key)
                .ok_or_else(|| no_claim("defer_reply", key))?;
            match &live.completion {
                None => {
                    live.defer_when_complete = true;
                    return Ok(Deferral::WhenComplete(live.record));
                }
                Some(Completion { reply: None, .. }) => return Ok(Deferral::NothingToDefer),
                Some(Completion {
                    reply: Some(reply), ..
                }) => (live.record, reply.clone()),
            }
        };
        self.push_deferred(key, record, reply);
        Ok(Deferral::Deferred(record))
    }

    /// Puts back a deferred reply read from a backend's file at start.
    pub(crate) fn restore_deferred(&self, key: &StoreKey, record: RecordId, reply: Reply) {
        self.push_deferred(key, record, reply);
    }

    fn push_deferred(&self, key: &StoreKey, record: RecordId, reply: Reply) {
        let follower = (key.account.clone(), sender(&key.dedup).to_owned());
        lock(&self.deferred)
            .entry(follower)
            .or_default()
            .insert(record, (key.clone(), reply));
    }

    /// Takes the oldest deferred reply of this follower on this account.
    pub(crate) fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Option<(RecordId, StoreKey, Reply)> {
        let mut deferred = lock(&self.deferred);
        let follower = (account.to_owned(), from_user_name.to_owned());
        let replies = deferred.get_mut(&follower)?;
        let (record, (key, reply)) = replies.pop_first()?;
        if replies.is_empty() {
            deferred.remove(&follower);
        }
        Some((record, key, reply))
    }

    /// Forgets claims that arrived before `horizon_ms` (about `batch` of them at most) and
    /// the deferred replies of records that arrived before `history_horizon_ms`. Returns
    /// how many expired arrivals it went through.
    pub(crate) fn sweep(
        &self,
        horizon_ms: i64,
        history_horizon_ms: Option<i64>,
        batch: usize,
    ) -> usize {
        // Round-robin over the shards, a few arrivals from each per pass, so that no lock
        // is held long and an unlucky shard with more expired claims is still emptied
        // before the batch is spent.
        let per_shard = batch.div_ceil(SHARDS).max(1);
        let mut swept = 0;
        while swept < batch {
            let swept_before = swept;
            for shard in self.shards.iter() {
                let mut shard = lock(shard);
                let Shard { claims, arrivals } = &mut *shard;
                for _ in 0..per_shard {
                    match arrivals.front() {
                        Some((record, _))
                            if record.received_at_ms < horizon_ms && swept < batch => {}
                        _ => break,
                    }
                    let Some((record, key)) = arrivals.pop_front() else {
                        break;
                    };
                    swept += 1;
                    // Only the claim made under this arrival goes; a newer claim of the
                    // key has its own arrival further back in the queue.
                    if claims.get(&key).is_some_and(|live| live.record == record) {
                        claims.remove(&key);
                        self.claims.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            if swept == swept_before {
                break;
            }
        }
        if let Some(history_horizon_ms) = history_horizon_ms {
            let mut deferred = lock(&self.deferred);
            deferred.retain(|_, replies| {
                replies.retain(|record, _| record.received_at_ms >= history_horizon_ms);
                !replies.is_empty()
            });
        }
        swept
    }

    /// How many claims are live.
    pub(crate) fn len(&self) -> u64 {
        self.claims.load(Ordering::Relaxed)
    }
}

impl LiveClaim {
    fn new(record: RecordId, durable: bool) -> LiveClaim {
        LiveClaim {
            record,
            attempts: 1,
            durable,
            completion: None,
            defer_when_complete: false,
            completed: None,
        }
    }
}

/// The follower a dedup key belongs to.
pub(crate) fn sender(dedup: &DedupKey) -> &str {
    match dedup {
        DedupKey::Message { from_user_name, .. } | DedupKey::Event { from_user_name, .. } => {
            from_user_name
        }
    }
}

/// The error for a write to a key that has no live claim. The key names a follower, whose
/// OpenID must not reach the logs, so only the account is told.
pub(crate) fn no_claim(operation: &'static str, key: &StoreKey) -> StoreError {
    StoreError::NoClaim {
        operation,
        account: key.account.clone(),
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every update
/// here is a single step taken after all checks.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msg_id: u64, received_at_ms: i64) -> NewMessage {
        NewMessage {
            key: StoreKey {
                account: "a".to_owned(),
                dedup: DedupKey::Message {
                    from_user_name: "o-alice".to_owned(),
                    msg_id,
                },
            },
            from_user_name: "o-alice".to_owned(),
            kind: "text".to_owned(),
            inbound_json: "{}".to_owned(),
            received_at_ms,
        }
    }

    #[test]
    fn a_sweep_forgets_expired_claims_but_not_a_key_claimed_again() {
        let live = Live::new(Duration::from_secs(60));
        let mut ids = 0..;
        let mut claim =
            |message: &NewMessage| live.claim(message, true, || ids.next().unwrap_or_default());
        assert!(matches!(claim(&message(1, 0)), Decision::First { .. }));
        assert!(matches!(claim(&message(2, 0)), Decision::First { .. }));
        // Key 1 expired and arrived again: a new claim under the same key.
        assert!(matches!(claim(&message(1, 60_001)), Decision::First { .. }));
        assert_eq!(live.len(), 2);

        live.sweep(60_000, None, 1_000);
        assert_eq!(
            live.len(),
            1,
            "key 2's claim went; key 1's new claim stayed"
        );
        assert!(matches!(
            claim(&message(1, 60_002)),
            Decision::Existing {
                claimed: Claimed {
                    claim: Claim::InFlight,
                    attempt: 2
                },
                ..
            }
        ));
        assert!(matches!(claim(&message(2, 60_002)), Decision::First { .. }));
    }

    #[test]
    fn a_claim_not_yet_recorded_holds_back_its_retries_until_marked() {
        let live = Live::new(Duration::from_secs(60));
        let first = message(1, 0);
        let Decision::First { record } = live.claim(&first, false, || 7) else {
            panic!("the first claim");
        };
        assert!(matches!(
            live.claim(&first, false, || 8),
            Decision::NotYetDurable
        ));
        live.mark_durable(&first.key, record);
        assert!(matches!(
            live.claim(&first, false, || 9),
            Decision::Existing { .. }
        ));
        live.abandon(&first.key, record);
        assert!(
            matches!(live.claim(&first, false, || 10), Decision::First { record } if record.id == 10),
            "an abandoned claim is made anew by the retry"
        );
    }
}
