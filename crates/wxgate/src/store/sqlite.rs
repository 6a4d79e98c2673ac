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
//!   (see [`KeyText`]): one that grows with time (the `MsgId`, or an event's `CreateTime`),
//!   so that new rows land at the end of the index instead of on a random page, and a
//!   stable hash that tells apart keys sharing it. The text columns settle any collision.
//!
//! What it must not do: block a tokio worker on SQLite I/O (writes go to the writer
//! thread, reads to `spawn_blocking`; only [`SqliteStore::open`] and dropping the store
//! block, once each), do schema work per request, or panic: every SQLite failure becomes
//! [`StoreError::Backend`] and an undecodable record [`StoreError::Corrupt`].
//!
//! Durability: with [`Synchronous::Normal`] (the default) a commit survives the process
//! dying but the last commits may be lost if the machine loses power; with
//! [`Synchronous::Full`] every commit is synced to disk first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, mem};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};
use wechat_proto::{DedupKey, Reply};

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

/// How often the writer proves its owner alive, and looks for owners that died.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page cache of each connection, in KiB (SQLite's negative `cache_size`), so that the
/// hot end of the indexes never has to be read back from the file.
const CACHE_KIB: i64 = 64 * 1024;

/// The schema version this code writes, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// The number of entries `list` returns when the query asks for 0.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The schema. `inbox` keeps every message ever claimed: a key that expired and arrived
/// again gets a new row, so the latest row of a key is the one with the highest `id`.
/// `key_order` and `key_hash` are derived from `account` and `dedup_key` (see [`KeyText`]);
/// changing how they are computed needs a new schema version.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inbox (
    id              INTEGER PRIMARY KEY,
    key_order       INTEGER NOT NULL,
    key_hash        INTEGER NOT NULL,
    account         TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    from_user_name  TEXT NOT NULL,
    kind            TEXT NOT NULL,
    inbound_json    TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    owner           INTEGER NOT NULL,
    completion_json TEXT,
    answer_kind     TEXT,
    answer_attempt  INTEGER,
    deferred        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbox_by_key ON inbox (key_order, key_hash);
CREATE INDEX IF NOT EXISTS inbox_by_received ON inbox (received_at_ms);
CREATE INDEX IF NOT EXISTS inbox_by_account_received ON inbox (account, received_at_ms);
CREATE INDEX IF NOT EXISTS inbox_running ON inbox (owner) WHERE completion_json IS NULL;
CREATE INDEX IF NOT EXISTS inbox_deferred ON inbox (account, from_user_name, received_at_ms)
    WHERE deferred = 1;
CREATE TABLE IF NOT EXISTS owners (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pid          INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);
";

/// The latest row of a key; `?1`..`?4` are the key's order, hash, account and text.
macro_rules! latest_row_of_key {
    () => {
        "SELECT id FROM inbox
          WHERE key_order = ?1 AND key_hash = ?2 AND account = ?3 AND dedup_key = ?4
          ORDER BY id DESC LIMIT 1"
    };
}

/// Counts a retry of a live claim. The latest row of the key is live when it was received
/// no earlier than `?5` (this message's arrival minus the retention).
const SQL_CLAIM_RETRY: &str = concat!(
    "UPDATE inbox SET attempts = attempts + 1 WHERE id = (",
    latest_row_of_key!(),
    ") AND received_at_ms >= ?5 RETURNING attempts, completion_json"
);

const SQL_CLAIM_FIRST: &str = "
INSERT INTO inbox (key_order, key_hash, account, dedup_key, from_user_name, kind,
                   inbound_json, received_at_ms, attempts, owner)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)";

/// Stores a completion; a message whose handler gave no reply has nothing to defer.
const SQL_COMPLETE: &str = concat!(
    "UPDATE inbox SET completion_json = ?5, deferred = deferred AND ?6 WHERE id = (",
    latest_row_of_key!(),
    ") RETURNING id"
);

const SQL_RECORD_ANSWER: &str = concat!(
    "UPDATE inbox SET answer_kind = ?5, answer_attempt = ?6 WHERE id = (",
    latest_row_of_key!(),
    ")"
);

const SQL_LATEST: &str = concat!(
    "SELECT id, completion_json FROM inbox WHERE id = (",
    latest_row_of_key!(),
    ")"
);

const SQL_COMPLETION_BY_ID: &str = "SELECT completion_json FROM inbox WHERE id = ?1";

const SQL_DEFER: &str = "UPDATE inbox SET deferred = 1 WHERE id = ?1";

const SQL_OLDEST_DEFERRED: &str = "
SELECT id, dedup_key, completion_json FROM inbox
 WHERE account = ?1 AND from_user_name = ?2 AND deferred = 1 AND completion_json IS NOT NULL
 ORDER BY received_at_ms, id LIMIT 1";

const SQL_TAKE_DEFERRED: &str = "UPDATE inbox SET deferred = 0 WHERE id = ?1";

const SQL_HEARTBEAT: &str = "
INSERT INTO owners (id, pid, heartbeat_ms) VALUES (?1, ?2, ?3)
ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms";

/// Completes the running claims of every owner that is not alive (`?2` is the oldest
/// heartbeat that still counts).
const SQL_INTERRUPT_ORPHANS: &str = "
UPDATE inbox SET completion_json = ?1, deferred = 0
 WHERE completion_json IS NULL
   AND owner NOT IN (SELECT id FROM owners WHERE heartbeat_ms >= ?2)
RETURNING id";

const SQL_FORGET_DEAD_OWNERS: &str = "DELETE FROM owners WHERE heartbeat_ms < ?1";

const SQL_INTERRUPT_OWN: &str = "
UPDATE inbox SET completion_json = ?1, deferred = 0
 WHERE completion_json IS NULL AND owner = ?2";

const SQL_FORGET_OWNER: &str = "DELETE FROM owners WHERE id = ?1";

/// The columns `list` reads, in the order [`entry_from_row`] expects.
const LIST_COLUMNS: &str = "SELECT account, dedup_key, from_user_name, kind, inbound_json,
    received_at_ms, attempts, completion_json, answer_kind, answer_attempt, deferred
    FROM inbox";

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

/// Answers one caller once its write is committed (or failed).
type Responder<T> = oneshot::Sender<Result<T, StoreError>>;

/// A deferred reply as the writer finds it: the dedup key's text and the completion JSON.
/// Decoding them is left to the caller, off the writer thread.
type DeferredRow = (String, String);

/// One write, queued for the writer thread. Keys arrive already rendered by the caller, so
/// that the writer spends its time on SQLite only.
enum Op {
    Claim {
        message: ClaimRow,
        respond: Responder<ClaimOutcome>,
    },
    Complete {
        key: KeyText,
        completion_json: String,
        has_reply: bool,
        respond: Responder<()>,
    },
    RecordAnswer {
        key: KeyText,
        answer: AnswerKind,
        attempt: u32,
        respond: Responder<()>,
    },
    Defer {
        key: KeyText,
        respond: Responder<()>,
    },
    TakeDeferred {
        account: String,
        from_user_name: String,
        respond: Responder<Option<DeferredRow>>,
    },
    /// Answers once everything queued before it is committed; with `checkpoint`, after a
    /// passive WAL checkpoint too.
    Barrier {
        checkpoint: bool,
        respond: Responder<()>,
    },
}

/// The row a first claim inserts.
struct ClaimRow {
    key: KeyText,
    from_user_name: String,
    kind: String,
    inbound_json: String,
    received_at_ms: i64,
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

/// What the writer found for a claim; the caller decodes a completion itself.
enum ClaimOutcome {
    First,
    InFlight {
        attempt: u32,
    },
    Done {
        attempt: u32,
        completion_json: String,
    },
}

/// A computed result waiting for its batch to commit.
enum Answer {
    Claim(Responder<ClaimOutcome>, Result<ClaimOutcome, StoreError>),
    Unit(Responder<()>, Result<(), StoreError>),
    Taken(
        Responder<Option<DeferredRow>>,
        Result<Option<DeferredRow>, StoreError>,
    ),
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

/// The writer thread's state.
struct Writer {
    conn: Connection,
    /// This store's row in `owners`, recorded on every claim.
    owner: i64,
    /// Kept in the owner row to help whoever reads the file by hand.
    pid: u32,
    retention_ms: i64,
    max_batch: usize,
    waiters: Arc<Waiters>,
    /// The JSON of the completion given to interrupted claims, rendered once.
    interrupted_json: String,
    last_heartbeat: Instant,
    /// Rows completed in the current batch, woken once it commits.
    completed_rows: Vec<i64>,
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

        let pid = std::process::id();
        conn.execute(
            "INSERT INTO owners (pid, heartbeat_ms) VALUES (?1, ?2)",
            params![pid, unix_ms_now()],
        )
        .map_err(backend)?;
        let owner = conn.last_insert_rowid();

        let waiters = Arc::new(Waiters::default());
        let interrupted = Completion {
            reply: None,
            error: Some(INTERRUPTED.to_owned()),
            handler_ms: 0,
        };
        let mut writer = Writer {
            conn,
            owner,
            pid,
            retention_ms: duration_to_ms(options.retention),
            max_batch: options.max_batch.max(1),
            waiters: Arc::clone(&waiters),
            interrupted_json: serde_json::to_string(&interrupted)
                .map_err(|error| StoreError::Backend(error.to_string()))?,
            last_heartbeat: Instant::now(),
            completed_rows: Vec::new(),
        };
        // The first heartbeat settles the claims of owners that died before this open.
        writer.in_transaction(Writer::heartbeat).map_err(backend)?;

        let reader = open_connection(path)?;
        let (ops, queue) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("wxgate-sqlite-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|error| {
                StoreError::Backend(format!("cannot start the sqlite writer thread: {error}"))
            })?;
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
            .read(move |conn| {
                conn.prepare_cached(SQL_LATEST)
                    .and_then(|mut statement| {
                        statement
                            .query_row(key.params(), |row| {
                                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
                            })
                            .optional()
                    })
                    .map_err(backend)
            })
            .await?;
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

impl Writer {
    /// The writer thread: commits batches until the queue is closed, then settles and
    /// stops.
    fn run(mut self, queue: Receiver<Op>) {
        let mut batch: Vec<Op> = Vec::with_capacity(self.max_batch);
        let mut answers: Vec<Answer> = Vec::with_capacity(self.max_batch);
        loop {
            let until_heartbeat = HEARTBEAT_INTERVAL.saturating_sub(self.last_heartbeat.elapsed());
            match queue.recv_timeout(until_heartbeat) {
                Ok(op) => batch.push(op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.run_batch(&mut batch, &mut answers);
        }
        self.shut_down();
    }

    /// Runs `batch` (and a heartbeat when one is due) in one transaction, then answers
    /// every caller: with its result if the commit succeeded, with the failure otherwise.
    fn run_batch(&mut self, batch: &mut Vec<Op>, answers: &mut Vec<Answer>) {
        let heartbeat_due = self.last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL;
        if batch.is_empty() && !heartbeat_due {
            return;
        }
        let mut checkpoint = false;
        let mut pending = batch.drain(..);
        let outcome = self.in_transaction(|writer| {
            for op in pending.by_ref() {
                checkpoint |= matches!(
                    op,
                    Op::Barrier {
                        checkpoint: true,
                        ..
                    }
                );
                answers.push(writer.execute(op)?);
            }
            if heartbeat_due {
                writer.heartbeat()?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {
                self.waiters.wake(&self.completed_rows);
                if checkpoint {
                    if let Err(error) = self.checkpoint() {
                        // The batch itself is committed; a failed checkpoint only leaves
                        // the WAL longer, so the callers still get their results.
                        tracing::warn!(%error, "sqlite checkpoint failed");
                    }
                }
                for answer in answers.drain(..) {
                    answer.send();
                }
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(error = %reason, "a sqlite write batch failed and was rolled back");
                for answer in answers.drain(..) {
                    answer.fail(&reason);
                }
                for op in pending {
                    op.fail(&reason);
                }
            }
        }
        self.completed_rows.clear();
    }

    /// Runs `body` between `BEGIN IMMEDIATE` and `COMMIT`, rolling back on any error.
    fn in_transaction<F>(&mut self, body: F) -> rusqlite::Result<()>
    where
        F: FnOnce(&mut Writer) -> rusqlite::Result<()>,
    {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let outcome = body(self).and_then(|()| {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        });
        if outcome.is_err() && !self.conn.is_autocommit() {
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(%error, "sqlite rollback failed");
            }
        }
        outcome
    }

    /// Executes one write inside the open transaction. An `Err` is an SQLite failure that
    /// dooms the whole batch; a failure of this write alone is inside the `Answer`.
    fn execute(&mut self, op: Op) -> rusqlite::Result<Answer> {
        Ok(match op {
            Op::Claim { message, respond } => Answer::Claim(respond, Ok(self.claim(&message)?)),
            Op::Complete {
                key,
                completion_json,
                has_reply,
                respond,
            } => {
                let [order, hash, account, dedup] = key.params();
                let row = self
                    .conn
                    .prepare_cached(SQL_COMPLETE)?
                    .query_row(
                        params![order, hash, account, dedup, completion_json, has_reply],
                        |row| row.get::<_, i64>(0),
                    )
                    .optional()?;
                let result = match row {
                    Some(row) => {
                        self.completed_rows.push(row);
                        Ok(())
                    }
                    None => Err(no_claim("complete", &key.account)),
                };
                Answer::Unit(respond, result)
            }
            Op::RecordAnswer {
                key,
                answer,
                attempt,
                respond,
            } => {
                let [order, hash, account, dedup] = key.params();
                let changed = self
                    .conn
                    .prepare_cached(SQL_RECORD_ANSWER)?
                    .execute(params![
                        order,
                        hash,
                        account,
                        dedup,
                        answer.as_str(),
                        attempt
                    ])?;
                let result = if changed == 0 {
                    Err(no_claim("record_answer", &key.account))
                } else {
                    Ok(())
                };
                Answer::Unit(respond, result)
            }
            Op::Defer { key, respond } => {
                let result = self.defer(&key)?;
                Answer::Unit(respond, result)
            }
            Op::TakeDeferred {
                account,
                from_user_name,
                respond,
            } => {
                let oldest = self
                    .conn
                    .prepare_cached(SQL_OLDEST_DEFERRED)?
                    .query_row(params![account, from_user_name], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    })
                    .optional()?;
                let taken = match oldest {
                    Some((row, dedup_key, completion_json)) => {
                        self.conn
                            .prepare_cached(SQL_TAKE_DEFERRED)?
                            .execute([row])?;
                        Some((dedup_key, completion_json))
                    }
                    None => None,
                };
                Answer::Taken(respond, Ok(taken))
            }
            Op::Barrier { respond, .. } => Answer::Unit(respond, Ok(())),
        })
    }

    /// Claims a key: counts a retry of its live row, or inserts a new row.
    fn claim(&mut self, message: &ClaimRow) -> rusqlite::Result<ClaimOutcome> {
        let [order, hash, account, dedup] = message.key.params();
        let oldest_live_ms = message.received_at_ms.saturating_sub(self.retention_ms);
        let retry = self
            .conn
            .prepare_cached(SQL_CLAIM_RETRY)?
            .query_row(
                params![order, hash, account, dedup, oldest_live_ms],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?)),
            )
            .optional()?;
        if let Some((attempts, completion_json)) = retry {
            let attempt = u32::try_from(attempts).unwrap_or(u32::MAX);
            return Ok(match completion_json {
                Some(completion_json) => ClaimOutcome::Done {
                    attempt,
                    completion_json,
                },
                None => ClaimOutcome::InFlight { attempt },
            });
        }
        self.conn.prepare_cached(SQL_CLAIM_FIRST)?.execute(params![
            order,
            hash,
            account,
            dedup,
            message.from_user_name,
            message.kind,
            message.inbound_json,
            message.received_at_ms,
            self.owner,
        ])?;
        Ok(ClaimOutcome::First)
    }

    /// Marks the latest row of `key` deferred, unless its handler already finished
    /// without a reply (then there is nothing to deliver later).
    fn defer(&mut self, key: &KeyText) -> rusqlite::Result<Result<(), StoreError>> {
        let latest = self
            .conn
            .prepare_cached(SQL_LATEST)?
            .query_row(key.params(), |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
            })
            .optional()?;
        let Some((row, completion_json)) = latest else {
            return Ok(Err(no_claim("defer_reply", &key.account)));
        };
        if let Some(completion_json) = completion_json {
            match decode_completion(&completion_json) {
                Ok(completion) if completion.reply.is_none() => return Ok(Ok(())),
                Ok(_) => {}
                Err(error) => return Ok(Err(error)),
            }
        }
        self.conn.prepare_cached(SQL_DEFER)?.execute([row])?;
        Ok(Ok(()))
    }

    /// Proves this owner alive, then settles the running claims of owners that are not.
    fn heartbeat(&mut self) -> rusqlite::Result<()> {
        let now_ms = unix_ms_now();
        // An upsert, so that an owner declared dead by a stalled clock comes back.
        self.conn
            .prepare_cached(SQL_HEARTBEAT)?
            .execute(params![self.owner, self.pid, now_ms])?;
        let oldest_alive_ms = now_ms.saturating_sub(duration_to_ms(OWNER_LEASE));
        let first_interrupted = self.completed_rows.len();
        {
            let mut interrupt = self.conn.prepare_cached(SQL_INTERRUPT_ORPHANS)?;
            let rows = interrupt
                .query_map(params![self.interrupted_json, oldest_alive_ms], |row| {
                    row.get::<_, i64>(0)
                })?;
            for row in rows {
                self.completed_rows.push(row?);
            }
        }
        let interrupted = self.completed_rows.len() - first_interrupted;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "recorded as interrupted the running claims of a gateway that stopped"
            );
        }
        self.conn
            .prepare_cached(SQL_FORGET_DEAD_OWNERS)?
            .execute([oldest_alive_ms])?;
        self.last_heartbeat = Instant::now();
        Ok(())
    }

    /// A passive checkpoint: copies what it can of the WAL into the database file without
    /// waiting for readers.
    fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    }

    /// As the store closes: settles this owner's running claims (their handlers can no
    /// longer report), leaves the owner table, and checkpoints.
    fn shut_down(mut self) {
        let owner = self.owner;
        let interrupted_json = mem::take(&mut self.interrupted_json);
        let settled = self.in_transaction(|writer| {
            let interrupted = writer
                .conn
                .prepare_cached(SQL_INTERRUPT_OWN)?
                .execute(params![interrupted_json, owner])?;
            if interrupted > 0 {
                tracing::warn!(
                    interrupted,
                    "the store closed while handlers ran; recorded them as interrupted"
                );
            }
            writer
                .conn
                .prepare_cached(SQL_FORGET_OWNER)?
                .execute([owner])?;
            Ok(())
        });
        if let Err(error) = settled {
            tracing::error!(%error, "could not settle the running claims as the store closed");
        }
        if let Err(error) = self.checkpoint() {
            tracing::warn!(%error, "sqlite checkpoint on close failed");
        }
    }
}

impl Op {
    /// Answers this write with the failure of its batch, without running it.
    fn fail(self, reason: &str) {
        let error = || StoreError::Backend(reason.to_owned());
        // A caller that stopped waiting (its request was cancelled) needs no answer.
        match self {
            Op::Claim { respond, .. } => drop(respond.send(Err(error()))),
            Op::Complete { respond, .. }
            | Op::RecordAnswer { respond, .. }
            | Op::Defer { respond, .. }
            | Op::Barrier { respond, .. } => drop(respond.send(Err(error()))),
            Op::TakeDeferred { respond, .. } => drop(respond.send(Err(error()))),
        }
    }
}

impl Answer {
    /// Delivers the result computed inside the committed transaction.
    fn send(self) {
        // A caller that stopped waiting (its request was cancelled) needs no answer.
        match self {
            Answer::Claim(respond, result) => drop(respond.send(result)),
            Answer::Unit(respond, result) => drop(respond.send(result)),
            Answer::Taken(respond, result) => drop(respond.send(result)),
        }
    }

    /// Answers with the failure of the batch instead, which was rolled back.
    fn fail(self, reason: &str) {
        let error = StoreError::Backend(reason.to_owned());
        match self {
            Answer::Claim(respond, _) => drop(respond.send(Err(error))),
            Answer::Unit(respond, _) => drop(respond.send(Err(error))),
            Answer::Taken(respond, _) => drop(respond.send(Err(error))),
        }
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
        let dedup = key.dedup.to_string();
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

    /// The four parameters of [`latest_row_of_key`], in its order.
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

/// Opens one connection with the settings both connections need.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|error| StoreError::Backend(format!("cannot open {}: {error}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Creates the schema when the file is new, and refuses a file written by a newer version.
fn create_schema(conn: &Connection) -> Result<(), StoreError> {
    // Taking the write lock first makes two processes opening a new file at once safe.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    let created = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Ok(Err(StoreError::Backend(format!(
                "the store file has schema version {version}, newer than this gateway's \
                 {SCHEMA_VERSION}"
            ))));
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(Ok(()))
    })();
    let outcome = created.map_err(backend).and_then(|refused| refused);
    if outcome.is_err() && !conn.is_autocommit() {
        // Best effort: the connection is dropped with the error anyway.
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
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
