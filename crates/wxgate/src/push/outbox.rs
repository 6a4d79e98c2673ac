//! The outbox: durable records of replies owed through the customer-service API.
//!
//! A [`Delivery`] is written before the attempt answers `success`, so a crash or restart
//! between that answer and the send loses nothing: on start the gateway resumes every
//! pending delivery. A delivery is marked sent right after WeChat accepted it; only a
//! crash inside that window (after the send, before the mark) can repeat a message.
//!
//! Two backends behind one small trait: [`MemoryOutbox`] (tests and the memory store) and
//! [`SqliteOutbox`], its own table `push_outbox` in the store's database file (WAL lets a
//! second connection write alongside the store's writer). It must not know about HTTP or
//! WeChat: it only records.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use wechat_proto::DedupKey;

use crate::store::StoreKey;

/// A reply owed to a follower through the customer-service API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message whose reply is owed (its completion is read from the store).
    pub key: StoreKey,
    /// The follower's OpenID (`touser`).
    pub to_user: String,
    /// When the delivery was written, Unix milliseconds.
    pub created_at_ms: i64,
}

/// Where a delivery stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet; a worker is on it or will resume it on start.
    Pending,
    /// WeChat accepted the message.
    Sent,
    /// Nothing to send: the handler answered no reply (or `success`).
    NothingToSend,
    /// Given up, with the reason (a final WeChat error, an undeliverable reply type, a
    /// failed handler, or too many transient errors).
    Failed(String),
}

impl DeliveryState {
    fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            DeliveryState::Pending => ("pending", None),
            DeliveryState::Sent => ("sent", None),
            DeliveryState::NothingToSend => ("nothing_to_send", None),
            DeliveryState::Failed(reason) => ("failed", Some(reason)),
        }
    }

    fn from_columns(state: &str, reason: Option<String>) -> DeliveryState {
        match state {
            "pending" => DeliveryState::Pending,
            "sent" => DeliveryState::Sent,
            "nothing_to_send" => DeliveryState::NothingToSend,
            _ => DeliveryState::Failed(reason.unwrap_or_else(|| format!("state {state}"))),
        }
    }
}

/// How long finished deliveries stay in the SQLite table (pruned when pending deliveries
/// are listed, at start).
pub const FINISHED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// An outbox failure. Failing to write a delivery fails the attempt (HTTP 503), so that
/// WeChat retries rather than the reply being lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The backend failed.
    #[error("outbox backend failed: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("outbox record is corrupt: {0}")]
    Corrupt(String),
}

/// Durable deliveries. Every backend keeps one record per message key.
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug + 'static {
    /// Records a pending delivery; `false` when one exists for the key already (in any
    /// state), so that a message is never owed twice.
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, OutboxError>;

    /// Every pending delivery, oldest first (resumed on start).
    async fn pending(&self) -> Result<Vec<Delivery>, OutboxError>;

    /// Records the final state of a delivery.
    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), OutboxError>;

    /// The state of the delivery of `key`, if one was written.
    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, OutboxError>;
}

/// Every delivery of a [`MemoryOutbox`] by key, with its state.
type Records = HashMap<StoreKey, (Delivery, DeliveryState)>;

/// An outbox in memory: lost on restart, like the memory store it goes with.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    records: Mutex<Records>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> MemoryOutbox {
        MemoryOutbox::default()
    }

    fn records(&self) -> Result<std::sync::MutexGuard<'_, Records>, OutboxError> {
        self.records
            .lock()
            .map_err(|_| OutboxError::Backend("outbox lock poisoned".to_owned()))
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, OutboxError> {
        let mut records = self.records()?;
        if records.contains_key(&delivery.key) {
            return Ok(false);
        }
        records.insert(
            delivery.key.clone(),
            (delivery.clone(), DeliveryState::Pending),
        );
        Ok(true)
    }

    async fn pending(&self) -> Result<Vec<Delivery>, OutboxError> {
        let records = self.records()?;
        let mut pending: Vec<Delivery> = records
            .values()
            .filter(|(_, state)| *state == DeliveryState::Pending)
            .map(|(delivery, _)| delivery.clone())
            .collect();
        pending.sort_by_key(|d| d.created_at_ms);
        Ok(pending)
    }

    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), OutboxError> {
        if let Some(record) = self.records()?.get_mut(key) {
            record.1 = state.clone();
        }
        Ok(())
    }

    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, OutboxError> {
        Ok(self.records()?.get(key).map(|(_, state)| state.clone()))
    }
}

const SQL_CREATE: &str = "CREATE TABLE IF NOT EXISTS push_outbox (
    account TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    to_user TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    finished_at_ms INTEGER,
    PRIMARY KEY (account, dedup_key)
)";

/// An outbox in a table of the store's SQLite file, on its own connection.
///
/// The connection is opened on first use, so building a gateway never blocks or fails;
/// an unusable file then fails the first push attempt with 503 (WeChat retries).
pub struct SqliteOutbox {
    path: PathBuf,
    conn: Arc<Mutex<Option<Connection>>>,
}

impl fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOutbox")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteOutbox {
    /// An outbox in the database file at `path` (opened on first use).
    pub fn new(path: &Path) -> SqliteOutbox {
        SqliteOutbox {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `op` on the connection in a blocking thread, opening it first if needed.
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let conn = Arc::clone(&self.conn);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| OutboxError::Backend("outbox lock poisoned".to_owned()))?;
            if guard.is_none() {
                let opened = Connection::open(&path).map_err(backend)?;
                opened
                    .busy_timeout(Duration::from_secs(5))
                    .map_err(backend)?;
                opened
                    .query_row("PRAGMA journal_mode = WAL", [], |row| {
                        row.get::<_, String>(0)
                    })
                    .map_err(backend)?;
                opened.execute(SQL_CREATE, []).map_err(backend)?;
                *guard = Some(opened);
            }
            match guard.as_ref() {
                Some(conn) => op(conn).map_err(backend),
                None => Err(OutboxError::Backend("outbox not open".to_owned())),
            }
        })
        .await
        .map_err(|e| OutboxError::Backend(e.to_string()))?
    }
}

fn backend(error: rusqlite::Error) -> OutboxError {
    OutboxError::Backend(error.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn enqueue(&self, delivery: &Delivery) -> Result<bool, OutboxError> {
        let account = delivery.key.account.clone();
        let dedup = delivery.key.dedup.stable_text();
        let to_user = delivery.to_user.clone();
        let created = delivery.created_at_ms;
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO push_outbox (account, dedup_key, to_user, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![account, dedup, to_user, created],
            )
            .map(|inserted| inserted == 1)
        })
        .await
    }

    async fn pending(&self) -> Result<Vec<Delivery>, OutboxError> {
        let horizon = now_ms() - FINISHED_RETENTION.as_millis() as i64;
        let rows = self
            .with(move |conn| {
                conn.execute(
                    "DELETE FROM push_outbox WHERE state != 'pending' AND finished_at_ms < ?1",
                    [horizon],
                )?;
                let mut statement = conn.prepare(
                    "SELECT account, dedup_key, to_user, created_at_ms FROM push_outbox
                     WHERE state = 'pending' ORDER BY created_at_ms",
                )?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(account, dedup, to_user, created_at_ms)| {
                let dedup: DedupKey = dedup
                    .parse()
                    .map_err(|e| OutboxError::Corrupt(format!("dedup key: {e}")))?;
                Ok(Delivery {
                    key: StoreKey { account, dedup },
                    to_user,
                    created_at_ms,
                })
            })
            .collect()
    }

    async fn finish(&self, key: &StoreKey, state: &DeliveryState) -> Result<(), OutboxError> {
        let account = key.account.clone();
        let dedup = key.dedup.stable_text();
        let (state, reason) = state.columns();
        let reason = reason.map(str::to_owned);
        let finished = now_ms();
        self.with(move |conn| {
            conn.execute(
                "UPDATE push_outbox SET state = ?3, reason = ?4, finished_at_ms = ?5
                 WHERE account = ?1 AND dedup_key = ?2",
                params![account, dedup, state, reason, finished],
            )
            .map(|_| ())
        })
        .await
    }

    async fn state(&self, key: &StoreKey) -> Result<Option<DeliveryState>, OutboxError> {
        let account = key.account.clone();
        let dedup = key.dedup.stable_text();
        let row = self
            .with(move |conn| {
                conn.query_row(
                    "SELECT state, reason FROM push_outbox WHERE account = ?1 AND dedup_key = ?2",
                    params![account, dedup],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?)),
                )
                .optional()
            })
            .await?;
        Ok(row.map(|(state, reason)| DeliveryState::from_columns(&state, reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(msg_id: u64) -> Delivery {
        Delivery {
            key: StoreKey {
                account: "a".to_owned(),
                dedup: DedupKey::Message {
                    from_user_name: "openid".to_owned(),
                    msg_id,
                },
            },
            to_user: "openid".to_owned(),
            created_at_ms: msg_id as i64,
        }
    }

    /// The contract every backend keeps.
    async fn conformance(outbox: &dyn Outbox) {
        assert!(outbox.enqueue(&delivery(1)).await.unwrap());
        assert!(!outbox.enqueue(&delivery(1)).await.unwrap());
        assert!(outbox.enqueue(&delivery(2)).await.unwrap());
        assert_eq!(outbox.pending().await.unwrap(), [delivery(1), delivery(2)]);
        outbox
            .finish(&delivery(1).key, &DeliveryState::Sent)
            .await
            .unwrap();
        let failed = DeliveryState::Failed("45015 out of window".to_owned());
        outbox.finish(&delivery(2).key, &failed).await.unwrap();
        assert!(outbox.pending().await.unwrap().is_empty());
        assert_eq!(
            outbox.state(&delivery(1).key).await.unwrap(),
            Some(DeliveryState::Sent)
        );
        assert_eq!(outbox.state(&delivery(2).key).await.unwrap(), Some(failed));
        assert_eq!(outbox.state(&delivery(3).key).await.unwrap(), None);
        // A finished delivery is never owed again.
        assert!(!outbox.enqueue(&delivery(1)).await.unwrap());
    }

    #[tokio::test]
    async fn memory_outbox_keeps_the_contract() {
        conformance(&MemoryOutbox::new()).await;
    }

    #[tokio::test]
    async fn sqlite_outbox_keeps_the_contract_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxgate.db");
        conformance(&SqliteOutbox::new(&path)).await;
        let reopened = SqliteOutbox::new(&path);
        assert!(reopened.enqueue(&delivery(4)).await.unwrap());
        drop(reopened);
        let again = SqliteOutbox::new(&path);
        assert_eq!(again.pending().await.unwrap(), [delivery(4)]);
    }
}
