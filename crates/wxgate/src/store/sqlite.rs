//! The SQLite store: the embedded default, one file in WAL mode, written in group commits.
//!
//! It exists so that a single gateway needs no server to be correct: claims, completions,
//! answers and deferred replies survive a restart, and the inbox keeps every message.
//!
//! How it works:
//! - **One writer thread** owns the only writing connection. Every write (claim, complete,
//!   record_answer, defer_reply, take_deferred) is sent to it through a channel; it drains
//!   whatever is queued (up to [`SqliteOptions::max_batch`]), runs it all in one
//!   `BEGIN IMMEDIATE` transaction, commits, and only then answers each caller through a
//!   oneshot channel. So a claim returns [`Claim::First`] only once the inbox record is
//!   committed, and a thousand concurrent requests cost a handful of commits. A claim is
//!   atomic because it runs on that single writer, and across processes because the
//!   transaction holds SQLite's write lock.
//! - **Reads** (`wait`, `list`, `count`, `ping`) use a second connection, queried in
//!   `spawn_blocking`; WAL lets it read while the writer writes.
//! - **Waiting** is woken at once by the writer when the completion is committed in this
//!   process, and also polls the file every [`POLL_INTERVAL`], so that a completion written
//!   by another process sharing the file is seen too.
//! - **Owners and restarts.** Each open store registers itself as an *owner* row with a
//!   heartbeat, and every claim records its owner. A claim whose owner is gone (closed, or
//!   silent for longer than [`OWNER_LEASE`] because its process died) can never complete,
//!   so it is completed as failed with [`INTERRUPTED`]: a later retry gets `Done` instead of
//!   waiting forever or running the handler a second time, and the loss is on record. This
//!   happens when a store is dropped (for its own running claims), on open, and on every
//!   heartbeat (for owners that died). Another process that is still alive keeps its
//!   claims.
//! - **Finding a key** goes through a compact index on two integers derived from the key
//!   (see `KeyText`): one that grows with time (the `MsgId`, or an event's `CreateTime`),
//!   so that new rows land at the end of the index instead of on a random page, and a
//!   stable hash that tells apart keys sharing it. The text columns settle any collision.
//!
//! What it must not do: block a tokio worker on SQLite I/O (writes go to the writer
//! thread, reads to `spawn_blocking`; only [`SqliteStore::open`] and dropping the store
//! block, once each), do schema work per request, or panic: every SQLite failure becomes
//! [`StoreError::Backend`] and an undecodable record [`StoreError::Corrupt`].
//!
//! The code is in three parts: this file (the store's face: opening, reads, waiting),
//! `writer` (the writer thread and its group commit) and `schema` (the file's layout and
//! every statement).
//!
//! Durability: with [`Synchronous::Normal`] (the default) a commit survives the process
//! dying but the last commits may be lost if the machine loses power; with
//! [`Synchronous::Full`] every commit is synced to disk first.

mod schema;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};
use wechat_proto::{DedupKey, Reply};

use self::schema::{
    create_schema, open_connection, LIST_COLUMNS, SQL_COMPLETION_BY_ID, SQL_FIND_LATEST,
};
use self::writer::{ClaimOutcome, ClaimRow, Op, Responder};
use super::{
    AnswerKind, Claim, Claimed, Completion, InboxEntry, InboxQuery, NewMessage, Store, StoreError,
    StoreKey,
};

/// The error recorded for a claim whose handler can no longer finish, because the store
/// (or the whole process) that ran it went away first.
pub const INTERRUPTED: &str = "interrupted: the gateway restarted before the handler finished";

/// How often `wait` looks at the file for a completion written by another process.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long an owner may stay silent before its running claims are declared interrupted.
/// It is several heartbeats, so that a slow commit never costs a live process its claims.
pub const OWNER_LEASE: Duration = Duration::from_secs(5);

/// The number of entries `list` returns when the query asks for 0.
const DEFAULT_LIST_LIMIT: usize = 100;

/// When a commit counts as durable. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`: safe against the process dying, fast.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`: also safe against power loss, one sync per commit.
    Full,
}

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a claim stays live after its message was first received.
    pub retention: Duration,
    /// When a commit counts as durable.
    pub synchronous: Synchronous,
    /// The most writes committed in one transaction. More spreads each commit over more
    /// requests; fewer bounds the time one commit adds to the requests in it.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            retention: super::DEFAULT_RETENTION,
            synchronous: Synchronous::Normal,
            max_batch: 256,
        }
    }
}

/// A [`Store`] in one SQLite file. See the module docs.
pub struct SqliteStore {
    /// The database file, for `Debug`.
    path: PathBuf,
    /// The queue to the writer thread. Taken (closed) on drop so that the writer finishes
    /// what is queued and stops.
    ops: Option<Sender<Op>>,
    /// The writer thread, joined on drop so that a store reopened at once finds this
    /// owner's running claims settled.
    writer: Option<JoinHandle<()>>,
    /// The connection for reads, used one query at a time in `spawn_blocking`.
    reader: Arc<Mutex<Connection>>,
    /// In-process wake-ups for `wait`, signalled by the writer after each commit.
    waiters: Arc<Waiters>,
}

/// A store key as the columns hold it.
struct KeyText {
    /// Grows with time for real keys: the `MsgId` (its bits as `i64`) of a message, the
    /// `CreateTime` of an event. New keys then go to the end of the index.
    order: i64,
    /// FNV-1a of the account and the dedup key's text, telling apart keys of one `order`.
    hash: i64,
    account: String,
    dedup: String,
}

/// The wake-ups of `wait`, by inbox row id.
#[derive(Debug, Default)]
struct Waiters {
    slots: Mutex<HashMap<i64, WaiterSlot>>,
}

#[derive(Debug)]
struct WaiterSlot {
    notify: Arc<Notify>,
    /// How many `wait` calls hold this slot; the last one to leave removes it.
    waiting: usize,
}

/// One `wait` call's interest in a row. Dropping it, also when the call is cancelled,
/// releases the slot.
struct Registration<'a> {
    waiters: &'a Waiters,
    row: i64,
    notify: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the file at `path`.
    ///
    /// This blocks while it sets the file up, registers this store as an owner and
    /// settles the running claims of owners that died; call it at start-up or from
    /// `spawn_blocking`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let conn = open_connection(path)?;
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(backend)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "the file system refused WAL mode (journal_mode is {journal_mode})"
            )));
        }
        let synchronous = match options.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(backend)?;
        create_schema(&conn)?;

        conn.execute(
            "INSERT INTO owners (pid, heartbeat_ms) VALUES (?1, ?2)",
            params![std::process::id(), unix_ms_now()],
        )
        .map_err(backend)?;
        let owner = conn.last_insert_rowid();

        let waiters = Arc::new(Waiters::default());
        let (ops, writer) = writer::spawn(
            conn,
            owner,
            options.retention,
            options.max_batch,
            Arc::clone(&waiters),
        )?;
        let reader = open_connection(path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            ops: Some(ops),
            writer: Some(writer),
            reader: Arc::new(Mutex::new(reader)),
            waiters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one write and waits until the batch holding it is committed.
    async fn write<T>(&self, op: impl FnOnce(Responder<T>) -> Op) -> Result<T, StoreError> {
        let (respond, response) = oneshot::channel();
        let ops = self.ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(op(respond)).map_err(|_| StoreError::Closed)?;
        // A writer that stopped without answering has gone away with the store.
        response.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs one read on the read connection, off the async workers.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || query(&lock(&reader)))
            .await
            .map_err(|error| StoreError::Backend(format!("a sqlite read task failed: {error}")))?
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("open", &self.ops.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is queued, settle this owner's
        // running claims, and stop.
        drop(self.ops.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the sqlite writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError> {
        let row = ClaimRow {
            key: KeyText::new(&message.key),
            from_user_name: message.from_user_name.clone(),
            kind: message.kind.clone(),
            inbound_json: message.inbound_json.clone(),
            received_at_ms: message.received_at_ms,
        };
        let outcome = self
            .write(|respond| Op::Claim {
                message: row,
                respond,
            })
            .await?;
        Ok(match outcome {
            ClaimOutcome::First => Claimed {
                claim: Claim::First,
                attempt: 1,
            },
            ClaimOutcome::InFlight { attempt } => Claimed {
                claim: Claim::InFlight,
                attempt,
            },
            ClaimOutcome::Done {
                attempt,
                completion_json,
            } => Claimed {
                claim: Claim::Done(decode_completion(&completion_json)?),
                attempt,
            },
        })
    }

    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError> {
        let completion_json = serde_json::to_string(completion)
            .map_err(|error| StoreError::Backend(format!("cannot encode a completion: {error}")))?;
        let key = KeyText::new(key);
        let has_reply = completion.reply.is_some();
        self.write(|respond| Op::Complete {
            key,
            completion_json,
            has_reply,
            respond,
        })
        .await
    }

    async fn wait(
        &self,
        key: &StoreKey,
        timeout: Duration,
    ) -> Result<Option<Completion>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = KeyText::new(key);
        let latest = self
            .read(move |conn| find_latest(conn, &key).map_err(backend))
            .await?
            .map(|latest| (latest.id, latest.completion_json));
        let row = match latest {
            // Nothing was claimed under this key, so nothing will complete it.
            None => return Ok(None),
            Some((_, Some(completion_json))) => {
                return decode_completion(&completion_json).map(Some)
            }
            Some((row, None)) => row,
        };
        let registration = self.waiters.register(row);
        loop {
            let notified = registration.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a commit between the look and the sleep
            // still wakes us.
            notified.as_mut().enable();
            let completion_json = self
                .read(move |conn| {
                    conn.prepare_cached(SQL_COMPLETION_BY_ID)
                        .and_then(|mut statement| {
                            statement
                                .query_row([row], |row| row.get::<_, Option<String>>(0))
                                .optional()
                        })
                        .map_err(backend)
                })
                .await?;
            if let Some(Some(completion_json)) = completion_json {
                return decode_completion(&completion_json).map(Some);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let next_poll = (now + POLL_INTERVAL).min(deadline);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(next_poll) => {}
            }
        }
    }

    async fn record_answer(
        &self,
        key: &StoreKey,
        answer: AnswerKind,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let key = KeyText::new(key);
        self.write(|respond| Op::RecordAnswer {
            key,
            answer,
            attempt,
            respond,
        })
        .await
    }

    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError> {
        let key = KeyText::new(key);
        self.write(|respond| Op::Defer { key, respond }).await
    }

    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError> {
        let taken = self
            .write(|respond| Op::TakeDeferred {
                account: account.to_owned(),
                from_user_name: from_user_name.to_owned(),
                respond,
            })
            .await?;
        let Some((dedup_key, completion_json)) = taken else {
            return Ok(None);
        };
        let dedup = dedup_key.parse::<DedupKey>().map_err(|error| {
            StoreError::Corrupt(format!("a deferred message's dedup key: {error}"))
        })?;
        let reply = decode_completion(&completion_json)?
            .reply
            .ok_or_else(|| StoreError::Corrupt("a deferred message has no reply".to_owned()))?;
        let key = StoreKey {
            account: account.to_owned(),
            dedup,
        };
        Ok(Some((key, reply)))
    }

    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        let query = query.clone();
        self.read(move |conn| list_entries(conn, &query)).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT count(*) FROM inbox")
                .and_then(|mut statement| statement.query_row([], |row| row.get::<_, i64>(0)))
                .map(|count| u64::try_from(count).unwrap_or(0))
                .map_err(backend)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Ready means the writer can take the write lock and the reader can read the file.
        self.write(|respond| Op::Barrier {
            checkpoint: false,
            respond,
        })
        .await?;
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM owners", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.write(|respond| Op::Barrier {
            checkpoint: true,
            respond,
        })
        .await
    }
}

impl Waiters {
    /// Registers interest in the completion of `row`.
    fn register(&self, row: i64) -> Registration<'_> {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(row).or_insert_with(|| WaiterSlot {
            notify: Arc::new(Notify::new()),
            waiting: 0,
        });
        slot.waiting += 1;
        Registration {
            waiters: self,
            row,
            notify: Arc::clone(&slot.notify),
        }
    }

    /// Wakes every waiter of these rows.
    fn wake(&self, rows: &[i64]) {
        if rows.is_empty() {
            return;
        }
        let slots = lock(&self.slots);
        if slots.is_empty() {
            return;
        }
        for row in rows {
            if let Some(slot) = slots.get(row) {
                slot.notify.notify_waiters();
            }
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut slots = lock(&self.waiters.slots);
        if let Some(slot) = slots.get_mut(&self.row) {
            slot.waiting -= 1;
            if slot.waiting == 0 {
                slots.remove(&self.row);
            }
        }
    }
}

impl KeyText {
    fn new(key: &StoreKey) -> KeyText {
        let dedup = key.dedup.stable_text();
        let order = match &key.dedup {
            // The bits of the id as they are: only the ordering of nearby ids matters.
            DedupKey::Message { msg_id, .. } => i64::from_ne_bytes(msg_id.to_ne_bytes()),
            DedupKey::Event { create_time, .. } => *create_time,
        };
        KeyText {
            order,
            hash: key_hash(&key.account, &dedup),
            account: key.account.clone(),
            dedup,
        }
    }

    /// The four parameters that find a key's rows, in the order the statements take them.
    fn params(&self) -> [&dyn rusqlite::ToSql; 4] {
        [&self.order, &self.hash, &self.account, &self.dedup]
    }
}

/// 64-bit FNV-1a of the account, a separator no text contains, and the dedup key. It is
/// written here rather than taken from `std`, whose hashers may change between releases,
/// because the values live in the file.
fn key_hash(account: &str, dedup: &str) -> i64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = account.bytes().chain([0xff]).chain(dedup.bytes());
    let hash = bytes.fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The latest row of a key: the live claim, unless it expired.
struct LatestRow {
    id: i64,
    received_at_ms: i64,
    attempts: i64,
    /// `None` while the handler runs.
    completion_json: Option<String>,
}

/// Finds the latest row of `key`, on either connection.
fn find_latest(conn: &Connection, key: &KeyText) -> rusqlite::Result<Option<LatestRow>> {
    conn.prepare_cached(SQL_FIND_LATEST)?
        .query_row(key.params(), |row| {
            Ok(LatestRow {
                id: row.get(0)?,
                received_at_ms: row.get(1)?,
                attempts: row.get(2)?,
                completion_json: row.get(3)?,
            })
        })
        .optional()
}

/// Reads the inbox entries `query` asks for, newest first.
fn list_entries(conn: &Connection, query: &InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
    let limit = if query.limit == 0 {
        DEFAULT_LIST_LIMIT
    } else {
        query.limit
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // One fixed statement per combination of filters, so that each can use its index.
    let filter = match (&query.account, query.since_ms) {
        (None, None) => "",
        (Some(_), None) => " WHERE account = ?1",
        (None, Some(_)) => " WHERE received_at_ms >= ?2",
        (Some(_), Some(_)) => " WHERE account = ?1 AND received_at_ms >= ?2",
    };
    let sql = format!("{LIST_COLUMNS}{filter} ORDER BY received_at_ms DESC, id DESC LIMIT ?3");
    let mut statement = conn.prepare_cached(&sql).map_err(backend)?;
    // Every variant mentions `?3`, so each takes all three parameters, used or not.
    let mut rows = statement
        .query(params![query.account, query.since_ms, limit])
        .map_err(backend)?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        entries.push(entry_from_row(row)?);
    }
    Ok(entries)
}

/// Decodes one row of [`LIST_COLUMNS`].
fn entry_from_row(row: &rusqlite::Row<'_>) -> Result<InboxEntry, StoreError> {
    let completion_json: Option<String> = row.get(7).map_err(backend)?;
    let answer_kind: Option<String> = row.get(8).map_err(backend)?;
    let answer_attempt: Option<i64> = row.get(9).map_err(backend)?;
    let last_answer = match (answer_kind, answer_attempt) {
        (Some(kind), Some(attempt)) => Some((
            answer_kind_from_str(&kind)?,
            u32::try_from(attempt).unwrap_or(u32::MAX),
        )),
        _ => None,
    };
    let attempts: i64 = row.get(6).map_err(backend)?;
    Ok(InboxEntry {
        account: row.get(0).map_err(backend)?,
        dedup_key: row.get(1).map_err(backend)?,
        from_user_name: row.get(2).map_err(backend)?,
        kind: row.get(3).map_err(backend)?,
        inbound_json: row.get(4).map_err(backend)?,
        received_at_ms: row.get(5).map_err(backend)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        completion: completion_json
            .as_deref()
            .map(decode_completion)
            .transpose()?,
        last_answer,
        deferred: row.get(10).map_err(backend)?,
    })
}

/// The inverse of [`AnswerKind::as_str`].
fn answer_kind_from_str(text: &str) -> Result<AnswerKind, StoreError> {
    Ok(match text {
        "replied" => AnswerKind::Replied,
        "success" => AnswerKind::Success,
        "acked" => AnswerKind::Acked,
        "held" => AnswerKind::Held,
        "still_working" => AnswerKind::StillWorking,
        "delivered_deferred" => AnswerKind::DeliveredDeferred,
        _ => return Err(StoreError::Corrupt(format!("unknown answer kind {text:?}"))),
    })
}

fn decode_completion(json: &str) -> Result<Completion, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::Corrupt(format!("a stored completion: {error}")))
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// The error for an operation on a key that was never claimed. The key itself names the
/// follower, whose OpenID must not reach the logs, so only the account is told.
fn no_claim(operation: &str, account: &str) -> StoreError {
    StoreError::Backend(format!(
        "{operation}: no claim recorded for this key on account {account}"
    ))
}

/// Locks a mutex whose data stays consistent even if a holder panicked: the connection
/// (SQLite rolls back an unfinished statement) and the waiter map (updated in single steps).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_to_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The wall clock, for owner heartbeats only (never for the expiry of claims).
fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_to_ms)
}
