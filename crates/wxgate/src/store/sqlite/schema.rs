//! The layout of the SQLite file and every statement run against it.
//!
//! Kept apart from the code that runs the statements so that the schema can be read (and
//! migrated, through `PRAGMA user_version`) in one place. Nothing here runs per request
//! except the statements, which are prepared once per connection and cached.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::backend;
use crate::store::StoreError;

/// How long a connection waits for another process's lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page cache of each connection, in KiB (SQLite's negative `cache_size`): enough for
/// the hot end of every index, and no more, because SQLite walks the whole cache at the end
/// of each write transaction (measured: 64 MiB made every commit noticeably slower).
pub(super) const CACHE_KIB: i64 = 16 * 1024;

/// The schema version this code writes, kept in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// The schema. `inbox` keeps every message inside the inbox retention: a key that expired
/// and arrived again gets a new row, so history is never overwritten. Row ids are
/// allocated by the store (in arrival order), so that a completion can name its row before
/// the row's insert has committed. `key_order` and `key_hash` are derived from `account`
/// and `dedup_key` (see `KeyText` in the parent module); changing how they are computed
/// needs a new schema version. `owner` is unused since version 2 (one process owns the
/// file, see the parent module) and stays for older files.
pub(super) const SCHEMA_V1: &str = "
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

/// Version 2: the push outbox joins the versioned schema (older gateways created the same
/// table on their own connection), with an index for pruning; the owner table goes (the
/// file is owned by one process, through its lock file), and so do two indexes every
/// insert paid for: running claims are found once, at open, and a listing by account
/// walks the arrival index.
pub(super) const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS push_outbox (
    account        TEXT NOT NULL,
    dedup_key      TEXT NOT NULL,
    to_user        TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending',
    reason         TEXT,
    finished_at_ms INTEGER,
    PRIMARY KEY (account, dedup_key)
);
CREATE INDEX IF NOT EXISTS push_outbox_by_created ON push_outbox (created_at_ms);
DROP TABLE IF EXISTS owners;
DROP INDEX IF EXISTS inbox_running;
DROP INDEX IF EXISTS inbox_by_account_received;
";

/// Version 3: every attempt's answer and time, as an appended log (see
/// `AnswerRecord::log_text`), for the console's message detail.
pub(super) const SCHEMA_V3: &str = "ALTER TABLE inbox ADD COLUMN answers TEXT;";

/// Inserts the row of a first claim, with the id the store allocated.
pub(super) const SQL_INSERT: &str = "
INSERT INTO inbox (id, key_order, key_hash, account, dedup_key, from_user_name, kind,
                   inbound_json, received_at_ms, attempts, owner)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, 0)";

/// Applies the merged changes to one row; a `NULL` parameter leaves its column as it is.
pub(super) const SQL_UPDATE: &str = "
UPDATE inbox SET
    attempts        = max(attempts, coalesce(?2, attempts)),
    completion_json = coalesce(?3, completion_json),
    answer_kind     = coalesce(?4, answer_kind),
    answer_attempt  = coalesce(?5, answer_attempt),
    deferred        = coalesce(?6, deferred),
    answers         = CASE WHEN ?7 IS NULL OR length(coalesce(answers, '')) >= 1024
                           THEN answers ELSE coalesce(answers, '') || ?7 END
 WHERE id = ?1";

/// Settles every running claim of the file as interrupted: at open (the process that ran
/// them is gone, since this one holds the lock) and at close (their tasks can no longer
/// report).
pub(super) const SQL_INTERRUPT_RUNNING: &str = "
UPDATE inbox SET completion_json = ?1, deferred = 0 WHERE completion_json IS NULL";

/// The newest arrival in the file, from which the live claims are rebuilt.
pub(super) const SQL_NEWEST: &str = "SELECT max(received_at_ms), max(id) FROM inbox";

/// The rows whose claims may still be live (`?1` is the oldest arrival that can be).
pub(super) const SQL_LIVE_ROWS: &str = "
SELECT id, account, dedup_key, received_at_ms, attempts, completion_json FROM inbox
 WHERE received_at_ms >= ?1 ORDER BY received_at_ms, id";

/// The deferred replies waiting for a follower's next message.
pub(super) const SQL_DEFERRED_ROWS: &str = "
SELECT id, account, dedup_key, received_at_ms, completion_json FROM inbox
 WHERE deferred = 1 AND completion_json IS NOT NULL";

/// Removes up to `?2` inbox rows that arrived before `?1`, oldest first.
pub(super) const SQL_PRUNE_INBOX: &str = "
DELETE FROM inbox WHERE id IN
    (SELECT id FROM inbox WHERE received_at_ms < ?1 ORDER BY received_at_ms LIMIT ?2)";

/// Removes up to `?2` deliveries written before `?1`.
pub(super) const SQL_PRUNE_OUTBOX: &str = "
DELETE FROM push_outbox WHERE rowid IN
    (SELECT rowid FROM push_outbox WHERE created_at_ms < ?1 ORDER BY created_at_ms LIMIT ?2)";

pub(super) const SQL_OUTBOX_ENQUEUE: &str = "
INSERT OR IGNORE INTO push_outbox (account, dedup_key, to_user, created_at_ms)
VALUES (?1, ?2, ?3, ?4)";

pub(super) const SQL_OUTBOX_FINISH: &str = "
UPDATE push_outbox SET state = ?3, reason = ?4, finished_at_ms = ?5
 WHERE account = ?1 AND dedup_key = ?2";

pub(super) const SQL_OUTBOX_PENDING: &str = "
SELECT account, dedup_key, to_user, created_at_ms FROM push_outbox
 WHERE state = 'pending' ORDER BY created_at_ms";

pub(super) const SQL_OUTBOX_STATE: &str =
    "SELECT state, reason FROM push_outbox WHERE account = ?1 AND dedup_key = ?2";

/// The columns `list` reads, in the order `entry_from_row` expects.
pub(super) const LIST_COLUMNS: &str =
    "SELECT account, dedup_key, from_user_name, kind, inbound_json,
    received_at_ms, attempts, completion_json, answer_kind, answer_attempt, deferred, answers
    FROM inbox";

/// Opens one connection with the settings both connections need.
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|error| StoreError::Backend(format!("cannot open {}: {error}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Creates the schema when the file is new, and refuses a file written by a newer version.
pub(super) fn create_schema(conn: &Connection) -> Result<(), StoreError> {
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
        if version < 1 {
            conn.execute_batch(SCHEMA_V1)?;
        }
        if version < 2 {
            conn.execute_batch(SCHEMA_V2)?;
        }
        if version < 3 {
            conn.execute_batch(SCHEMA_V3)?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
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
