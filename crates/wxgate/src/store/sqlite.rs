//! The SQLite store: the embedded default, one file in WAL mode owned by one process.
//!
//! It exists so that a single gateway needs no server to be correct: claims, completions,
//! answers, deferred replies and push deliveries survive a restart, and the inbox keeps
//! every message for the inbox retention.
//!
//! How it works:
//! - **The live claims are in memory** ([`Live`], shared with the memory backend), rebuilt
//!   from the file at start. A claim is decided there; a first claim then appends its row
//!   through the writer and returns [`Claim::First`] only once that row is committed. A
//!   retry is answered from memory and costs no statement of its own.
//! - **One writer thread** owns the only writing connection (see `writer`): inserts are
//!   group-committed and answered after the commit; row updates (completion, answer,
//!   attempts, deferral) are buffered without waking the writer, merged per row and written
//!   with the next commit (within 100 ms when idle), so that the common message costs one
//!   insert and one update, in shared transactions. An update that cannot be written is
//!   kept and retried until it is, and [`Store::health`] reports the store degraded.
//! - **Reads** (`list`, the outbox's state) use a second connection in `spawn_blocking`;
//!   WAL lets it read while the writer writes.
//! - **A checkpointer thread** copies the WAL into the database file every
//!   [`CHECKPOINT_INTERVAL`] on a third connection, so the WAL stays small (a small disk
//!   does not fill through it) and no checkpoint's sync ever runs inside a commit.
//! - **One process per file.** The store holds an exclusive lock on `<file>.lock` for its
//!   life; a second gateway on the same file is refused at open (several instances share
//!   the Redis backend instead). So at open every claim still running in the file belongs
//!   to a process that is gone: it is completed as failed with [`INTERRUPTED`], and a later
//!   retry gets `Done` instead of waiting forever or running the handler a second time. The
//!   same happens to this store's own running claims when it closes. `wxgate inbox` reads
//!   the file through [`SqliteReader`], read-only, beside a running gateway.
//!
//! What it must not do: block a tokio worker on SQLite I/O (writes go to the writer
//! thread, reads to `spawn_blocking`; only [`SqliteStore::open`] and dropping the store
//! block, once each), do schema work per request, or panic: every SQLite failure becomes
//! [`StoreError::Backend`] and an undecodable record [`StoreError::Corrupt`].
//!
//! Durability: with [`Synchronous::Normal`] (the default) a commit survives the process
//! dying but the last commits may be lost if the machine loses power; with
//! [`Synchronous::Full`] every commit is synced to disk first.

mod schema;
mod writer;

use std::fmt;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;
use wechat_proto::{DedupKey, Reply};

use self::schema::{
    create_schema, open_connection, LIST_COLUMNS, SQL_DEFERRED_ROWS, SQL_INTERRUPT_RUNNING,
    SQL_LIVE_ROWS, SQL_NEWEST, SQL_OUTBOX_PENDING, SQL_OUTBOX_STATE,
};
use self::writer::{InsertRow, Op, Responder, RowUpdate};
use super::live::{lock, Decision, Deferral, Live, RecordId};
use super::memory::duration_ms;
use super::{
    AnswerKind, AnswerRecord, Claim, Claimed, Claims, Completion, Deferrals, Delivery,
    DeliveryState, Health, Inbox, InboxCursor, InboxEntry, InboxPage, InboxQuery, InboxStats,
    NewMessage, Outbox, Retention, Store, StoreError, StoreKey,
};
use crate::clock::{SystemClock, WallClock};

/// The error recorded for a claim whose handler can no longer finish, because the store
/// (or the whole process) that ran it went away first.
pub const INTERRUPTED: &str = "interrupted: the gateway restarted before the handler finished";

/// How often the checkpointer copies the WAL into the database file.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The size the WAL file is cut back to after a checkpoint reset it, in bytes.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// The WAL length, in frames (pages of 4 KiB), past which the checkpointer has the WAL
/// rewound: 1024 frames, so the WAL stays around 4 MiB.
const WAL_RESTART_FRAMES: i64 = 1024;

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
    /// How long claims stay live and history is kept.
    pub retention: Retention,
    /// When a commit counts as durable.
    pub synchronous: Synchronous,
    /// The most writes committed in one transaction. More spreads each commit over more
    /// requests; fewer bounds the time one commit adds to the requests in it.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            retention: Retention::default(),
            synchronous: Synchronous::Normal,
            max_batch: 256,
        }
    }
}

/// A store in one SQLite file. See the module docs.
pub struct SqliteStore {
    /// The database file, for `Debug` and errors.
    path: PathBuf,
    retention: Retention,
    live: Arc<Live>,
    /// The id of the next inbox row.
    next_id: AtomicI64,
    /// Counters and health, kept by the writer.
    shared: Arc<Shared>,
    /// The queue to the writer thread. Taken (closed) on drop so that the writer finishes
    /// what is queued and stops.
    ops: Option<Sender<Op>>,
    /// The writer thread, joined on drop so that a store reopened at once finds this
    /// store's running claims settled.
    writer: Option<JoinHandle<()>>,
    /// The checkpointer thread and the channel that stops it.
    checkpointer: Option<(Sender<()>, JoinHandle<()>)>,
    /// The connection for reads, used one query at a time in `spawn_blocking`.
    reader: Arc<Mutex<Connection>>,
    /// The lock that makes this process the file's only writer; released on drop.
    _owner: File,
}

/// What the writer keeps up to date for the store's readers.
#[derive(Debug, Default)]
struct Shared {
    messages: AtomicU64,
    pruned: AtomicU64,
    /// How many row updates wait to become durable, and the last failure.
    degraded: Mutex<Option<(usize, String)>>,
    /// Row updates made since the writer's last batch.
    updates: Mutex<Vec<RowUpdate>>,
}

impl Shared {
    fn inserted(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    fn pruned(&self, removed: usize) {
        let removed = removed as u64;
        self.pruned.fetch_add(removed, Ordering::Relaxed);
        // Saturating: a row pruned before its insert was counted cannot go below zero.
        let _ = self
            .messages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |messages| {
                Some(messages.saturating_sub(removed))
            });
    }

    fn take_updates(&self) -> Vec<RowUpdate> {
        std::mem::take(&mut *lock(&self.updates))
    }

    fn set_degraded(&self, degraded: Option<(usize, String)>) {
        *lock(&self.degraded) = degraded;
    }
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

impl SqliteStore {
    /// Opens (creating if needed) the store in the file at `path`.
    ///
    /// This blocks while it takes the file's lock, sets the file up, settles the claims a
    /// process that died left running, and rebuilds the live claims; call it at start-up
    /// or from `spawn_blocking`. `now_ms` is not used to decide expiry (which follows the
    /// newest arrival in the file) and is kept for the log of the settlement.
    pub fn open(
        path: &Path,
        options: SqliteOptions,
        now_ms: i64,
    ) -> Result<SqliteStore, StoreError> {
        let owner = take_lock(path)?;
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
        // The checkpointer thread checkpoints; the writer never does it inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(backend)?;
        create_schema(&conn)?;

        let interrupted_json = serde_json::to_string(&Completion {
            reply: None,
            error: Some(INTERRUPTED.to_owned()),
            handler_ms: 0,
        })
        .map_err(|error| StoreError::Backend(error.to_string()))?;
        let settled = conn
            .execute(SQL_INTERRUPT_RUNNING, [&interrupted_json])
            .map_err(backend)?;
        if settled > 0 {
            tracing::warn!(
                settled,
                now_ms,
                "recorded as interrupted the running claims of a gateway that stopped"
            );
        }

        let live = Arc::new(Live::new(options.retention.claims));
        let (newest_ms, max_id) = conn
            .query_row(SQL_NEWEST, [], |row| {
                Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?))
            })
            .map_err(backend)?;
        if let Some(newest_ms) = newest_ms {
            restore_live(
                &conn,
                &live,
                newest_ms - duration_ms(options.retention.claims),
            )?;
        }
        let messages: i64 = conn
            .query_row("SELECT count(*) FROM inbox", [], |row| row.get(0))
            .map_err(backend)?;
        let shared = Arc::new(Shared {
            messages: AtomicU64::new(u64::try_from(messages).unwrap_or(0)),
            ..Shared::default()
        });

        let (ops, writer) = writer::spawn(
            conn,
            Arc::clone(&live),
            Arc::clone(&shared),
            options.max_batch,
            interrupted_json,
        )?;
        let reader = open_connection(path)?;
        let checkpointer = spawn_checkpointer(path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            retention: options.retention,
            live,
            next_id: AtomicI64::new(max_id.unwrap_or(0) + 1),
            shared,
            ops: Some(ops),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            reader: Arc::new(Mutex::new(reader)),
            _owner: owner,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the largest size the file may grow to, in pages of 4 KiB (SQLite's
    /// `max_page_count`). Past it, writes fail as on a full disk, and raising it again is
    /// like making room; the failure tests use it to fill the store for real.
    pub async fn set_max_pages(&self, pages: u64) -> Result<(), StoreError> {
        self.write(|respond| Op::MaxPages { pages, respond }).await
    }

    /// Queues one write and waits until the batch holding it is committed.
    async fn write<T>(&self, op: impl FnOnce(Responder<T>) -> Op) -> Result<T, StoreError> {
        let (respond, response) = oneshot::channel();
        self.send(op(respond))?;
        // A writer that stopped without answering has gone away with the store.
        response.await.map_err(|_| StoreError::Closed)?
    }

    /// Buffers a row update for the writer, without waking it: it is written with the next
    /// commit (see `writer`) and never answered.
    fn update(&self, update: RowUpdate) -> Result<(), StoreError> {
        if self.ops.is_none() {
            return Err(StoreError::Closed);
        }
        lock(&self.shared.updates).push(update);
        Ok(())
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let ops = self.ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(op).map_err(|_| StoreError::Closed)
    }

    /// Waits until every write queued before it is committed.
    async fn barrier(&self) -> Result<(), StoreError> {
        self.write(|respond| Op::Barrier { respond }).await
    }

    /// Waits for the row updates queued so far: they are written behind the live state,
    /// and a read must show every write acknowledged before it. When writes fail, the read
    /// still shows what is durable.
    async fn settle_writes(&self) {
        if let Err(error) = self.barrier().await {
            tracing::debug!(%error, "reading the inbox while writes fail");
        }
    }

    /// Runs one read on the read connection, off the async workers.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        read_on(&self.reader, query).await
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
        // Closing the queue lets the writer commit what is queued, settle the running
        // claims, and stop.
        drop(self.ops.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the sqlite writer thread panicked");
            }
        }
        if let Some((stop, checkpointer)) = self.checkpointer.take() {
            drop(stop);
            if checkpointer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the sqlite checkpointer panicked");
            }
        }
    }
}

#[async_trait]
impl Claims for SqliteStore {
    async fn claim(&self, message: &NewMessage) -> Result<Claimed, StoreError> {
        loop {
            let decision = self.live.claim(message, false, || {
                self.next_id.fetch_add(1, Ordering::Relaxed)
            });
            match decision {
                Decision::First { record } => {
                    let row = InsertRow {
                        key: message.key.clone(),
                        record,
                        text: KeyText::new(&message.key),
                        from_user_name: message.from_user_name.clone(),
                        kind: message.kind.clone(),
                        inbound_json: message.inbound_json.clone(),
                    };
                    // The writer marks the claim durable (or abandons it) itself, so this
                    // await may be cancelled without leaving the claim half made.
                    let (respond, response) = oneshot::channel();
                    if let Err(error) = self.send(Op::Insert { row, respond }) {
                        self.live.abandon(&message.key, record);
                        return Err(error);
                    }
                    response.await.map_err(|_| StoreError::Closed)??;
                    return Ok(Claimed {
                        claim: Claim::First,
                        attempt: 1,
                    });
                }
                Decision::NotYetDurable => self.barrier().await?,
                Decision::Existing { record, claimed } => {
                    self.update(RowUpdate {
                        id: record.id,
                        attempts: Some(claimed.attempt),
                        ..RowUpdate::default()
                    })?;
                    return Ok(claimed);
                }
            }
        }
    }

    async fn complete(&self, key: &StoreKey, completion: &Completion) -> Result<(), StoreError> {
        let completion_json = serde_json::to_string(completion)
            .map_err(|error| StoreError::Backend(format!("cannot encode a completion: {error}")))?;
        let (record, deferred) = self.live.complete(key, completion)?;
        self.update(RowUpdate {
            id: record.id,
            completion_json: Some(completion_json),
            // Also clears a deferral marked before a handler that ended without a reply.
            deferred: Some(deferred),
            ..RowUpdate::default()
        })
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
        let logged = AnswerRecord {
            attempt,
            answer,
            at_ms,
        };
        self.update(RowUpdate {
            id: record.id,
            answer: Some((answer, attempt)),
            answers_log: Some(logged.log_text()),
            ..RowUpdate::default()
        })
    }
}

#[async_trait]
impl Deferrals for SqliteStore {
    async fn defer_reply(&self, key: &StoreKey) -> Result<(), StoreError> {
        match self.live.defer(key)? {
            Deferral::Deferred(record) | Deferral::WhenComplete(record) => self.update(RowUpdate {
                id: record.id,
                deferred: Some(true),
                ..RowUpdate::default()
            }),
            Deferral::NothingToDefer => Ok(()),
        }
    }

    async fn take_deferred(
        &self,
        account: &str,
        from_user_name: &str,
    ) -> Result<Option<(StoreKey, Reply)>, StoreError> {
        let Some((record, key, reply)) = self.live.take_deferred(account, from_user_name) else {
            return Ok(None);
        };
        self.update(RowUpdate {
            id: record.id,
            deferred: Some(false),
            ..RowUpdate::default()
        })?;
        Ok(Some((key, reply)))
    }
}

#[async_trait]
impl Inbox for SqliteStore {
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError> {
        self.settle_writes().await;
        let query = query.clone();
        self.read(move |conn| list_entries(conn, &query)).await
    }

    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError> {
        let Some(key) = key_text(account, dedup_key) else {
            return Ok(None);
        };
        self.settle_writes().await;
        self.read(move |conn| get_entry(conn, &key)).await
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let account = delivery.key.account.clone();
        let dedup = delivery.key.dedup.stable_text();
        let to_user = delivery.to_user.clone();
        let created_at_ms = delivery.created_at_ms;
        self.write(|respond| Op::Enqueue {
            account,
            dedup,
            to_user,
            created_at_ms,
            respond,
        })
        .await
    }

    async fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        let rows = self
            .read(|conn| {
                let mut statement = conn.prepare_cached(SQL_OUTBOX_PENDING).map_err(backend)?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(backend)?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(account, dedup, to_user, created_at_ms)| {
                Ok(Delivery {
                    key: StoreKey {
                        account,
                        dedup: parse_dedup(&dedup)?,
                    },
                    to_user,
                    created_at_ms,
                })
            })
            .collect()
    }

    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), StoreError> {
        let account = key.account.clone();
        let dedup = key.dedup.stable_text();
        let (state, reason) = state.columns();
        let reason = reason.map(str::to_owned);
        // The time a delivery finished is for reading only; pruning follows its creation.
        let finished_at_ms = SystemClock.now_ms();
        self.write(|respond| Op::Finish {
            account,
            dedup,
            state,
            reason,
            finished_at_ms,
            respond,
        })
        .await
    }

    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, StoreError> {
        let account = key.account.clone();
        let dedup = key.dedup.stable_text();
        let row = self
            .read(move |conn| {
                conn.prepare_cached(SQL_OUTBOX_STATE)
                    .and_then(|mut statement| {
                        statement
                            .query_row(params![account, dedup], |row| {
                                Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
                            })
                            .optional()
                    })
                    .map_err(backend)
            })
            .await?;
        Ok(row.map(|(state, reason)| DeliveryState::from_columns(&state, reason)))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn prune(&self, now_ms: i64, batch: usize) -> Result<usize, StoreError> {
        let history_horizon = self
            .retention
            .inbox
            .map(|inbox| now_ms.saturating_sub(duration_ms(inbox)));
        let swept = self.live.sweep(
            now_ms.saturating_sub(duration_ms(self.retention.claims)),
            history_horizon,
            batch,
        );
        let Some(before_ms) = history_horizon else {
            return Ok(swept);
        };
        let removed = self
            .write(|respond| Op::Prune {
                before_ms,
                batch,
                respond,
            })
            .await?;
        Ok(removed.max(swept))
    }

    fn retention(&self) -> Retention {
        self.retention
    }

    fn stats(&self) -> InboxStats {
        InboxStats {
            messages: self.shared.messages.load(Ordering::Relaxed),
            live_claims: self.live.len(),
            pruned: self.shared.pruned.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> Health {
        match &*lock(&self.shared.degraded) {
            None => Health::Ok,
            Some((waiting, reason)) => Health::Degraded {
                waiting: *waiting,
                reason: reason.clone(),
            },
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Ready means the writer can commit and the reader can read the file.
        self.barrier().await?;
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.barrier().await
    }
}

/// The inbox of a SQLite file, read-only: for `wxgate inbox`, safe beside a running
/// gateway (WAL lets it read while the gateway writes; it takes no lock and writes
/// nothing).
pub struct SqliteReader {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteReader {
    /// Opens the file at `path` for reading; it must exist.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        if !path.exists() {
            return Err(StoreError::Backend(format!(
                "no store file at {} (has the gateway run with this config?)",
                path.display()
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|error| {
            StoreError::Backend(format!("cannot open {}: {error}", path.display()))
        })?;
        conn.busy_timeout(schema::BUSY_TIMEOUT).map_err(backend)?;
        Ok(SqliteReader {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

impl fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Inbox for SqliteReader {
    async fn page(&self, query: &InboxQuery) -> Result<InboxPage, StoreError> {
        let query = query.clone();
        read_on(&self.conn, move |conn| list_entries(conn, &query)).await
    }

    async fn get(&self, account: &str, dedup_key: &str) -> Result<Option<InboxEntry>, StoreError> {
        let Some(key) = key_text(account, dedup_key) else {
            return Ok(None);
        };
        read_on(&self.conn, move |conn| get_entry(conn, &key)).await
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

/// The key columns of a message named by its account and dedup key text; `None` for a
/// text that is no dedup key (then nothing was stored under it).
fn key_text(account: &str, dedup_key: &str) -> Option<KeyText> {
    let dedup = dedup_key.parse::<DedupKey>().ok()?;
    Some(KeyText::new(&StoreKey {
        account: account.to_owned(),
        dedup,
    }))
}

/// Takes the exclusive lock that makes this process the file's only writer.
fn take_lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| {
            StoreError::Backend(format!("cannot open {}: {error}", lock_path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "{} is in use by another wxgate process (one gateway per SQLite file; several \
             instances share the redis backend)",
            path.display()
        ))),
        Err(TryLockError::Error(error)) => Err(StoreError::Backend(format!(
            "cannot lock {}: {error}",
            lock_path.display()
        ))),
    }
}

/// Rebuilds the live claims (those that arrived at or after `oldest_ms`) and the deferred
/// replies from the file.
fn restore_live(conn: &Connection, live: &Live, oldest_ms: i64) -> Result<(), StoreError> {
    let mut statement = conn.prepare(SQL_LIVE_ROWS).map_err(backend)?;
    let mut rows = statement.query([oldest_ms]).map_err(backend)?;
    while let Some(row) = rows.next().map_err(backend)? {
        let (record, key) = record_and_key(row)?;
        let attempts: i64 = row.get(4).map_err(backend)?;
        let completion = row
            .get::<_, Option<String>>(5)
            .map_err(backend)?
            .as_deref()
            .map(decode_completion)
            .transpose()?;
        live.restore(
            key,
            record,
            u32::try_from(attempts).unwrap_or(u32::MAX),
            completion,
        );
    }
    let mut statement = conn.prepare(SQL_DEFERRED_ROWS).map_err(backend)?;
    let mut rows = statement.query([]).map_err(backend)?;
    while let Some(row) = rows.next().map_err(backend)? {
        let (record, key) = record_and_key(row)?;
        let completion = decode_completion(&row.get::<_, String>(4).map_err(backend)?)?;
        if let Some(reply) = completion.reply {
            live.restore_deferred(&key, record, reply);
        }
    }
    Ok(())
}

/// The record and key of a row whose first columns are `id, account, dedup_key,
/// received_at_ms` (both statements `restore_live` runs).
fn record_and_key(row: &rusqlite::Row<'_>) -> Result<(RecordId, StoreKey), StoreError> {
    let record = RecordId {
        id: row.get(0).map_err(backend)?,
        received_at_ms: row.get(3).map_err(backend)?,
    };
    let key = StoreKey {
        account: row.get(1).map_err(backend)?,
        dedup: parse_dedup(&row.get::<_, String>(2).map_err(backend)?)?,
    };
    Ok((record, key))
}

/// Starts the checkpointer: every [`CHECKPOINT_INTERVAL`] a passive checkpoint on its own
/// connection, which copies the WAL into the database file without waiting for (or
/// holding up) the writer. Dropping the returned sender stops it.
fn spawn_checkpointer(path: &Path) -> Result<(Sender<()>, JoinHandle<()>), StoreError> {
    let conn = open_connection(path)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("wxgate-sqlite-checkpointer".to_owned())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                if let Err(error) = checkpoint(&conn) {
                    tracing::warn!(%error, "sqlite checkpoint failed");
                }
            }
        })
        .map_err(|error| {
            StoreError::Backend(format!("cannot start the sqlite checkpointer: {error}"))
        })?;
    Ok((stop, thread))
}

/// One round of the checkpointer. A passive checkpoint copies the WAL into the database
/// file beside the writer, but under steady load the writer always appends new frames
/// while it runs, so the WAL is never found fully copied and never rewound: it grew to
/// hundreds of megabytes in a benchmark. So once it holds [`WAL_RESTART_FRAMES`], a
/// `RESTART` checkpoint follows: it holds the writer back only while it copies the frames
/// written during the passive pass and syncs, and makes the next commit rewind the WAL
/// (which `journal_size_limit` then cuts back).
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames >= WAL_RESTART_FRAMES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// Runs one read on `conn`, off the async workers.
async fn read_on<T, F>(conn: &Arc<Mutex<Connection>>, query: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || query(&lock(&conn)))
        .await
        .map_err(|error| StoreError::Backend(format!("a sqlite read task failed: {error}")))?
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

/// The columns of [`LIST_COLUMNS`] followed by the row id, which pages use as the
/// tie-breaking sequence of a cursor.
const PAGE_COLUMNS: &str = "SELECT account, dedup_key, from_user_name, kind, inbound_json,
    received_at_ms, attempts, completion_json, answer_kind, answer_attempt, deferred, answers,
    id FROM inbox";

/// Reads one page of the inbox entries `query` asks for, newest first.
///
/// The statement is assembled from fixed fragments, one per filter that is set, with the
/// values always bound as parameters. Time filters and the cursor use the
/// `(received_at_ms)` and `(account, received_at_ms)` indexes; the other filters are
/// checked on the rows the scan visits, which is what a console listing needs.
fn list_entries(conn: &Connection, query: &InboxQuery) -> Result<InboxPage, StoreError> {
    let limit = query.effective_limit();
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut bind = |clause: &str, bound: Vec<rusqlite::types::Value>| {
        // Each fragment names its parameters `?` in order; number them here.
        let mut numbered = String::new();
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                values.push(bound[i - 1].clone());
                numbered.push_str(&format!("?{}", values.len()));
            }
            numbered.push_str(part);
        }
        clauses.push(numbered);
    };
    use rusqlite::types::Value;
    if let Some(account) = &query.account {
        bind("account = ?", vec![Value::Text(account.clone())]);
    }
    if let Some(since_ms) = query.since_ms {
        bind("received_at_ms >= ?", vec![Value::Integer(since_ms)]);
    }
    if let Some(until_ms) = query.until_ms {
        bind("received_at_ms <= ?", vec![Value::Integer(until_ms)]);
    }
    if let Some(before) = query.before {
        bind(
            "(received_at_ms < ? OR (received_at_ms = ? AND id < ?))",
            vec![
                Value::Integer(before.received_at_ms),
                Value::Integer(before.received_at_ms),
                Value::Integer(before.seq),
            ],
        );
    }
    if let Some(kind) = &query.kind {
        bind(
            "(kind = ? OR substr(kind, 1, length(?) + 1) = ? || ':')",
            vec![
                Value::Text(kind.clone()),
                Value::Text(kind.clone()),
                Value::Text(kind.clone()),
            ],
        );
    }
    match query.answer.as_deref() {
        None => {}
        Some("failed") => bind(
            "json_extract(completion_json, '$.error') IS NOT NULL",
            vec![],
        ),
        Some("pending") => bind("completion_json IS NULL", vec![]),
        Some(answer) => bind("answer_kind = ?", vec![Value::Text(answer.to_owned())]),
    }
    if let Some(sender) = &query.sender {
        bind("from_user_name = ?", vec![Value::Text(sender.clone())]);
    }
    if let Some(text) = &query.text {
        bind(
            "instr(inbound_json, ?) > 0",
            vec![Value::Text(text.clone())],
        );
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    // One row more than the page, to know whether another page follows.
    values.push(Value::Integer(
        i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    let sql = format!(
        "{PAGE_COLUMNS}{filter} ORDER BY received_at_ms DESC, id DESC LIMIT ?{}",
        values.len()
    );
    let mut statement = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = statement
        .query(rusqlite::params_from_iter(values))
        .map_err(backend)?;
    let mut entries = Vec::new();
    let mut last = None;
    while let Some(row) = rows.next().map_err(backend)? {
        if entries.len() == limit {
            return Ok(InboxPage {
                entries,
                next: last,
            });
        }
        let entry = entry_from_row(row)?;
        last = Some(InboxCursor {
            received_at_ms: entry.received_at_ms,
            seq: row.get(12).map_err(backend)?,
        });
        entries.push(entry);
    }
    Ok(InboxPage {
        entries,
        next: None,
    })
}

/// Reads the latest row of one key.
fn get_entry(conn: &Connection, key: &KeyText) -> Result<Option<InboxEntry>, StoreError> {
    let sql = format!(
        "{LIST_COLUMNS} WHERE key_order = ?1 AND key_hash = ?2 AND account = ?3 AND dedup_key = ?4
         ORDER BY id DESC LIMIT 1"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = statement.query(key.params()).map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(row) => Ok(Some(entry_from_row(row)?)),
        None => Ok(None),
    }
}

/// Decodes one row of [`LIST_COLUMNS`].
fn entry_from_row(row: &rusqlite::Row<'_>) -> Result<InboxEntry, StoreError> {
    let completion_json: Option<String> = row.get(7).map_err(backend)?;
    let answer_kind: Option<String> = row.get(8).map_err(backend)?;
    let answer_attempt: Option<i64> = row.get(9).map_err(backend)?;
    let last_answer = match (answer_kind, answer_attempt) {
        (Some(kind), Some(attempt)) => Some((
            AnswerKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown answer kind {kind:?}")))?,
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
        answers: row
            .get::<_, Option<String>>(11)
            .map_err(backend)?
            .as_deref()
            .map(AnswerRecord::parse_log)
            .unwrap_or_default(),
        deferred: row.get(10).map_err(backend)?,
    })
}

fn parse_dedup(text: &str) -> Result<DedupKey, StoreError> {
    text.parse()
        .map_err(|error| StoreError::Corrupt(format!("a stored dedup key: {error}")))
}

fn decode_completion(json: &str) -> Result<Completion, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::Corrupt(format!("a stored completion: {error}")))
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}
