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
pub(super) const SCHEMA_VERSION: i64 = 1;

/// The schema. `inbox` keeps every message ever claimed: a key that expired and arrived
/// again gets a new row, so the latest row of a key is the one with the highest `id`.
/// `key_order` and `key_hash` are derived from `account` and `dedup_key` (see `KeyText` in
/// the parent module); changing how they are computed needs a new schema version.
pub(super) const SCHEMA: &str = "
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

/// Selects the latest row of a key; `?1`..`?4` are the key's order, hash, account and text.
macro_rules! latest_of_key {
    () => {
        "FROM inbox
          WHERE key_order = ?1 AND key_hash = ?2 AND account = ?3 AND dedup_key = ?4
          ORDER BY id DESC LIMIT 1"
    };
}

/// The latest row of a key, in the columns of `LatestRow` (see `writer`). No statement on
/// the hot path uses `RETURNING`, which makes SQLite build a temporary table per call.
pub(super) const SQL_FIND_LATEST: &str = concat!(
    "SELECT id, received_at_ms, attempts, completion_json ",
    latest_of_key!()
);

/// Counts a retry of a live claim.
pub(super) const SQL_COUNT_RETRY: &str = "UPDATE inbox SET attempts = attempts + 1 WHERE id = ?1";

pub(super) const SQL_CLAIM_FIRST: &str = "
INSERT INTO inbox (key_order, key_hash, account, dedup_key, from_user_name, kind,
                   inbound_json, received_at_ms, attempts, owner)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)";

/// Stores a completion; a message whose handler gave no reply has nothing to defer.
pub(super) const SQL_COMPLETE: &str =
    "UPDATE inbox SET completion_json = ?2, deferred = deferred AND ?3 WHERE id = ?1";

pub(super) const SQL_RECORD_ANSWER: &str = concat!(
    "UPDATE inbox SET answer_kind = ?5, answer_attempt = ?6 WHERE id = (SELECT id ",
    latest_of_key!(),
    ")"
);

pub(super) const SQL_COMPLETION_BY_ID: &str = "SELECT completion_json FROM inbox WHERE id = ?1";

pub(super) const SQL_DEFER: &str = "UPDATE inbox SET deferred = 1 WHERE id = ?1";

pub(super) const SQL_OLDEST_DEFERRED: &str = "
SELECT id, dedup_key, completion_json FROM inbox
 WHERE account = ?1 AND from_user_name = ?2 AND deferred = 1 AND completion_json IS NOT NULL
 ORDER BY received_at_ms, id LIMIT 1";

pub(super) const SQL_TAKE_DEFERRED: &str = "UPDATE inbox SET deferred = 0 WHERE id = ?1";

pub(super) const SQL_HEARTBEAT: &str = "
INSERT INTO owners (id, pid, heartbeat_ms) VALUES (?1, ?2, ?3)
ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms";

/// Completes the running claims of every owner that is not alive (`?2` is the oldest
/// heartbeat that still counts).
pub(super) const SQL_INTERRUPT_ORPHANS: &str = "
UPDATE inbox SET completion_json = ?1, deferred = 0
 WHERE completion_json IS NULL
   AND owner NOT IN (SELECT id FROM owners WHERE heartbeat_ms >= ?2)
RETURNING id";

pub(super) const SQL_FORGET_DEAD_OWNERS: &str = "DELETE FROM owners WHERE heartbeat_ms < ?1";

pub(super) const SQL_INTERRUPT_OWN: &str = "
UPDATE inbox SET completion_json = ?1, deferred = 0
 WHERE completion_json IS NULL AND owner = ?2";

pub(super) const SQL_FORGET_OWNER: &str = "DELETE FROM owners WHERE id = ?1";

/// The columns `list` reads, in the order [`entry_from_row`] expects.
pub(super) const LIST_COLUMNS: &str =
    "SELECT account, dedup_key, from_user_name, kind, inbound_json,
    received_at_ms, attempts, completion_json, answer_kind, answer_attempt, deferred
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
