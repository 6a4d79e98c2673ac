//! The writer thread: the only connection that writes, and the group commit.
//!
//! Every write of a [`SqliteStore`](super::SqliteStore) arrives here as an [`Op`] through a
//! channel. The thread drains what is queued (up to `max_batch`), runs it all in one
//! `BEGIN IMMEDIATE` transaction, commits, and only then answers each caller through its
//! oneshot channel, so that nothing is reported done before it is durable. It also keeps
//! this store's owner row alive and settles the claims of owners that died.
//!
//! What it must not do: decode or encode JSON on the hot path (callers do that on their
//! own tasks), answer before the commit, or let one failed batch stop the thread.

use std::mem;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::schema::{
    SQL_CLAIM_FIRST, SQL_COMPLETE, SQL_COUNT_RETRY, SQL_DEFER, SQL_FORGET_DEAD_OWNERS,
    SQL_FORGET_OWNER, SQL_HEARTBEAT, SQL_INTERRUPT_ORPHANS, SQL_INTERRUPT_OWN, SQL_OLDEST_DEFERRED,
    SQL_RECORD_ANSWER, SQL_TAKE_DEFERRED,
};
use super::{
    backend, decode_completion, duration_to_ms, find_latest, no_claim, unix_ms_now, KeyText,
    Waiters, INTERRUPTED, OWNER_LEASE,
};
use crate::store::{AnswerKind, Completion, StoreError};

/// How often the writer proves its owner alive, and looks for owners that died.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Answers one caller once its write is committed (or failed).
pub(super) type Responder<T> = oneshot::Sender<Result<T, StoreError>>;

/// A deferred reply as the writer finds it: the dedup key's text and the completion JSON.
/// Decoding them is left to the caller, off the writer thread.
pub(super) type DeferredRow = (String, String);

/// One write, queued for the writer thread. Keys arrive already rendered by the caller, so
/// that the writer spends its time on SQLite only.
pub(super) enum Op {
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
pub(super) struct ClaimRow {
    pub(super) key: KeyText,
    pub(super) from_user_name: String,
    pub(super) kind: String,
    pub(super) inbound_json: String,
    pub(super) received_at_ms: i64,
}

/// What the writer found for a claim; the caller decodes a completion itself.
pub(super) enum ClaimOutcome {
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

/// Starts the writer thread on `conn` for the owner `owner`.
///
/// Before the thread starts, the first heartbeat settles (in the caller's thread) the
/// claims of owners that died before this open, so that the first claim already sees them
/// completed. Closing the returned queue stops the thread once it has committed what was
/// queued and settled this owner's own running claims.
pub(super) fn spawn(
    conn: Connection,
    owner: i64,
    retention: Duration,
    max_batch: usize,
    waiters: Arc<Waiters>,
) -> Result<(Sender<Op>, JoinHandle<()>), StoreError> {
    let interrupted = Completion {
        reply: None,
        error: Some(INTERRUPTED.to_owned()),
        handler_ms: 0,
    };
    let mut writer = Writer {
        conn,
        owner,
        pid: std::process::id(),
        retention_ms: duration_to_ms(retention),
        max_batch: max_batch.max(1),
        waiters,
        interrupted_json: serde_json::to_string(&interrupted)
            .map_err(|error| StoreError::Backend(error.to_string()))?,
        last_heartbeat: Instant::now(),
        completed_rows: Vec::new(),
    };
    writer.in_transaction(Writer::heartbeat).map_err(backend)?;
    let (ops, queue) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("wxgate-sqlite-writer".to_owned())
        .spawn(move || writer.run(queue))
        .map_err(|error| {
            StoreError::Backend(format!("cannot start the sqlite writer thread: {error}"))
        })?;
    Ok((ops, thread))
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
                let result = match find_latest(&self.conn, &key)? {
                    Some(latest) => {
                        self.conn.prepare_cached(SQL_COMPLETE)?.execute(params![
                            latest.id,
                            completion_json,
                            has_reply
                        ])?;
                        self.completed_rows.push(latest.id);
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
        let live = find_latest(&self.conn, &message.key)?.filter(|latest| {
            message.received_at_ms.saturating_sub(latest.received_at_ms) <= self.retention_ms
        });
        if let Some(latest) = live {
            self.conn
                .prepare_cached(SQL_COUNT_RETRY)?
                .execute([latest.id])?;
            let attempt = u32::try_from(latest.attempts.saturating_add(1)).unwrap_or(u32::MAX);
            return Ok(match latest.completion_json {
                Some(completion_json) => ClaimOutcome::Done {
                    attempt,
                    completion_json,
                },
                None => ClaimOutcome::InFlight { attempt },
            });
        }
        let [order, hash, account, dedup] = message.key.params();
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
        let Some(latest) = find_latest(&self.conn, key)? else {
            return Ok(Err(no_claim("defer_reply", &key.account)));
        };
        let (row, completion_json) = (latest.id, latest.completion_json);
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
