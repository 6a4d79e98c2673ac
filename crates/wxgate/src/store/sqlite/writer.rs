//! The writer thread: the only connection that writes, and the group commit.
//!
//! Every write of a [`SqliteStore`](super::SqliteStore) arrives here as an [`Op`] through a
//! channel. The thread drains what is queued (up to `max_batch`), runs it all in one
//! `BEGIN IMMEDIATE` transaction, commits, and only then answers each caller through its
//! oneshot channel, so that nothing is reported done before it is durable.
//!
//! Row updates (attempts, completions, answers, deferral flags) do not go through the
//! channel and are not answered: the store leaves them in a shared buffer without waking
//! the thread, and each batch takes them, merges them per row into `unwritten` and writes
//! them at the end of its transaction, one statement per row however many changes it had.
//! So under load they ride along with the inserts' commits, and an idle store writes them
//! within [`FLUSH_INTERVAL`]; measured, waking the writer for every update cost a context
//! switch and a transaction each. A batch that fails keeps them in
//! `unwritten`, and they are written with the next batch, or on the next retry tick when
//! nothing else comes; meanwhile the store reports itself degraded. So a completion that
//! cannot be written (a full disk) is never dropped, and its retries in this process are
//! answered from memory in the meantime.
//!
//! The thread also marks each first claim durable in the live state once its row is
//! committed (or abandons it when the commit failed). Doing it here rather than in the
//! claiming task means a caller that goes away cannot leave a claim half made.
//!
//! What it must not do: decode or encode JSON (callers do that on their own tasks),
//! answer before the commit, checkpoint the WAL (the checkpointer thread does, so that a
//! checkpoint's sync never holds up a commit), or let one failed batch stop the thread.

use std::collections::BTreeMap;
use std::mem;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::schema::{
    SQL_INSERT, SQL_INTERRUPT_RUNNING, SQL_OUTBOX_ENQUEUE, SQL_OUTBOX_FINISH, SQL_PRUNE_INBOX,
    SQL_PRUNE_OUTBOX, SQL_UPDATE,
};
use super::{KeyText, Shared};
use crate::store::live::{Live, RecordId};
use crate::store::{AnswerKind, StoreError, StoreKey};

/// How often buffered or unwritten row updates are written when no other write comes to
/// carry them.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Answers one caller once its write is committed (or failed).
pub(super) type Responder<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write, queued for the writer thread.
pub(super) enum Op {
    /// The row of a first claim; answered once committed.
    Insert {
        row: InsertRow,
        respond: Responder<()>,
    },
    /// Answers once everything queued before it is committed.
    Barrier { respond: Responder<()> },
    /// A pending push delivery; answers whether it was new.
    Enqueue {
        account: String,
        dedup: String,
        to_user: String,
        created_at_ms: i64,
        respond: Responder<bool>,
    },
    /// The final state of a push delivery.
    Finish {
        account: String,
        dedup: String,
        state: &'static str,
        reason: Option<String>,
        finished_at_ms: i64,
        respond: Responder<()>,
    },
    /// Removes up to `batch` messages and deliveries older than `before_ms`; answers how
    /// many messages went.
    Prune {
        before_ms: i64,
        batch: usize,
        respond: Responder<usize>,
    },
    /// Sets SQLite's `max_page_count`, the largest the file may grow (tests use it to fill
    /// the "disk" for real and then make room again).
    MaxPages { pages: u64, respond: Responder<()> },
}

/// The row a first claim inserts.
pub(super) struct InsertRow {
    pub(super) key: StoreKey,
    pub(super) record: RecordId,
    pub(super) text: KeyText,
    pub(super) from_user_name: String,
    pub(super) kind: String,
    pub(super) inbound_json: String,
}

/// Changes to one row; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub(super) struct RowUpdate {
    pub(super) id: i64,
    pub(super) attempts: Option<u32>,
    pub(super) completion_json: Option<String>,
    pub(super) answer: Option<(AnswerKind, u32)>,
    pub(super) deferred: Option<bool>,
    /// Answer records to append to the row's log, in order.
    pub(super) answers_log: Option<String>,
}

impl RowUpdate {
    /// Folds a later update of the same row into this one.
    fn merge(&mut self, later: RowUpdate) {
        self.attempts = self.attempts.max(later.attempts);
        if later.completion_json.is_some() {
            self.completion_json = later.completion_json;
        }
        if later.answer.is_some() {
            self.answer = later.answer;
        }
        if later.deferred.is_some() {
            self.deferred = later.deferred;
        }
        if let Some(log) = later.answers_log {
            self.answers_log
                .get_or_insert_with(String::new)
                .push_str(&log);
        }
    }
}

/// A computed result waiting for its batch to commit.
enum Answer {
    Inserted(StoreKey, RecordId, Responder<()>),
    Unit(Responder<()>),
    Enqueued(Responder<bool>, bool),
    Pruned(Responder<usize>, usize),
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    live: Arc<Live>,
    shared: Arc<Shared>,
    max_batch: usize,
    /// Row updates not yet committed, merged per row.
    unwritten: BTreeMap<i64, RowUpdate>,
    /// The JSON of the completion given to interrupted claims, rendered once.
    interrupted_json: String,
}

/// Starts the writer thread on `conn`. Closing the returned queue stops the thread once it
/// has committed what was queued and settled the claims still running.
pub(super) fn spawn(
    conn: Connection,
    live: Arc<Live>,
    shared: Arc<Shared>,
    max_batch: usize,
    interrupted_json: String,
) -> Result<(Sender<Op>, JoinHandle<()>), StoreError> {
    let writer = Writer {
        conn,
        live,
        shared,
        max_batch: max_batch.max(1),
        unwritten: BTreeMap::new(),
        interrupted_json,
    };
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
            match queue.recv_timeout(FLUSH_INTERVAL) {
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

    /// Runs `batch` and every unwritten update in one transaction, then answers every
    /// caller: with its result if the commit succeeded, with the failure otherwise.
    fn run_batch(&mut self, batch: &mut Vec<Op>, answers: &mut Vec<Answer>) {
        for update in self.shared.take_updates() {
            self.merge(update);
        }
        if batch.is_empty() && self.unwritten.is_empty() {
            return;
        }
        let mut pending = batch.drain(..);
        let outcome = self.in_transaction(|writer| {
            for op in pending.by_ref() {
                writer.execute(op, answers)?;
            }
            writer.write_updates()
        });
        match outcome {
            Ok(()) => {
                self.unwritten.clear();
                self.shared.set_degraded(None);
                for answer in answers.drain(..) {
                    self.deliver(answer);
                }
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(error = %reason, "a sqlite write batch failed and was rolled back");
                // Whatever was not reached is merged too, so that no update is lost.
                for op in pending {
                    self.fail(op, &reason);
                }
                self.shared.set_degraded(
                    (!self.unwritten.is_empty()).then(|| (self.unwritten.len(), reason.clone())),
                );
                for answer in answers.drain(..) {
                    self.refuse(answer, &reason);
                }
            }
        }
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

    fn merge(&mut self, update: RowUpdate) {
        match self.unwritten.get_mut(&update.id) {
            Some(earlier) => earlier.merge(update),
            None => {
                self.unwritten.insert(update.id, update);
            }
        }
    }

    /// Executes one write inside the open transaction and queues its answer. An `Err` is
    /// an SQLite failure that dooms the whole batch; the failed write's own answer is
    /// queued first, so that it is answered with the failure like the rest.
    fn execute(&mut self, op: Op, answers: &mut Vec<Answer>) -> rusqlite::Result<()> {
        match op {
            Op::Insert { row, respond } => {
                answers.push(Answer::Inserted(row.key, row.record, respond));
                let [order, hash, account, dedup] = row.text.params();
                self.conn.prepare_cached(SQL_INSERT)?.execute(params![
                    row.record.id,
                    order,
                    hash,
                    account,
                    dedup,
                    row.from_user_name,
                    row.kind,
                    row.inbound_json,
                    row.record.received_at_ms,
                ])?;
            }
            Op::Barrier { respond } => answers.push(Answer::Unit(respond)),
            Op::Enqueue {
                account,
                dedup,
                to_user,
                created_at_ms,
                respond,
            } => {
                let inserted =
                    self.conn
                        .prepare_cached(SQL_OUTBOX_ENQUEUE)
                        .and_then(|mut statement| {
                            statement.execute(params![account, dedup, to_user, created_at_ms])
                        });
                answers.push(Answer::Enqueued(respond, inserted == Ok(1)));
                inserted?;
            }
            Op::Finish {
                account,
                dedup,
                state,
                reason,
                finished_at_ms,
                respond,
            } => {
                answers.push(Answer::Unit(respond));
                self.conn
                    .prepare_cached(SQL_OUTBOX_FINISH)?
                    .execute(params![account, dedup, state, reason, finished_at_ms])?;
            }
            Op::Prune {
                before_ms,
                batch,
                respond,
            } => {
                let limit = i64::try_from(batch).unwrap_or(i64::MAX);
                let removed = self
                    .conn
                    .prepare_cached(SQL_PRUNE_INBOX)
                    .and_then(|mut statement| statement.execute(params![before_ms, limit]))
                    .and_then(|removed| {
                        self.conn
                            .prepare_cached(SQL_PRUNE_OUTBOX)?
                            .execute(params![before_ms, limit])?;
                        Ok(removed)
                    });
                answers.push(Answer::Pruned(respond, *removed.as_ref().unwrap_or(&0)));
                removed?;
            }
            Op::MaxPages { pages, respond } => {
                answers.push(Answer::Unit(respond));
                let pages = i64::try_from(pages).unwrap_or(i64::MAX);
                self.conn.pragma_update(None, "max_page_count", pages)?;
            }
        }
        Ok(())
    }

    /// Writes every unwritten row update, one statement per row.
    fn write_updates(&mut self) -> rusqlite::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let mut statement = self.conn.prepare_cached(SQL_UPDATE)?;
        for update in self.unwritten.values() {
            statement.execute(params![
                update.id,
                update.attempts,
                update.completion_json,
                update.answer.map(|(kind, _)| kind.as_str()),
                update.answer.map(|(_, attempt)| attempt),
                update.deferred,
                update.answers_log,
            ])?;
        }
        Ok(())
    }

    /// Delivers a result computed inside the committed transaction.
    fn deliver(&self, answer: Answer) {
        // A caller that stopped waiting (its request was cancelled) needs no answer; the
        // live state is updated either way.
        match answer {
            Answer::Inserted(key, record, respond) => {
                self.live.mark_durable(&key, record);
                self.shared.inserted();
                drop(respond.send(Ok(())));
            }
            Answer::Unit(respond) => drop(respond.send(Ok(()))),
            Answer::Enqueued(respond, inserted) => drop(respond.send(Ok(inserted))),
            Answer::Pruned(respond, removed) => {
                self.shared.pruned(removed);
                drop(respond.send(Ok(removed)));
            }
        }
    }

    /// Answers with the failure of the batch instead, which was rolled back.
    fn refuse(&self, answer: Answer, reason: &str) {
        let error = || StoreError::Backend(reason.to_owned());
        match answer {
            Answer::Inserted(key, record, respond) => {
                self.live.abandon(&key, record);
                drop(respond.send(Err(error())));
            }
            Answer::Unit(respond) => drop(respond.send(Err(error()))),
            Answer::Enqueued(respond, _) => drop(respond.send(Err(error()))),
            Answer::Pruned(respond, _) => drop(respond.send(Err(error()))),
        }
    }

    /// Answers a write that was never run, because its batch failed before reaching it.
    /// A first claim is abandoned.
    fn fail(&mut self, op: Op, reason: &str) {
        let error = || StoreError::Backend(reason.to_owned());
        // A caller that stopped waiting (its request was cancelled) needs no answer.
        match op {
            Op::Insert { row, respond } => {
                self.live.abandon(&row.key, row.record);
                drop(respond.send(Err(error())));
            }
            Op::Barrier { respond } | Op::Finish { respond, .. } | Op::MaxPages { respond, .. } => {
                drop(respond.send(Err(error())));
            }
            Op::Enqueue { respond, .. } => drop(respond.send(Err(error()))),
            Op::Prune { respond, .. } => drop(respond.send(Err(error()))),
        }
    }

    /// As the store closes: writes what is unwritten, then settles the claims still running
    /// (their tasks can no longer report).
    fn shut_down(mut self) {
        for update in self.shared.take_updates() {
            self.merge(update);
        }
        let interrupted_json = mem::take(&mut self.interrupted_json);
        let settled = self.in_transaction(|writer| {
            writer.write_updates()?;
            let interrupted = writer
                .conn
                .prepare_cached(SQL_INTERRUPT_RUNNING)?
                .execute([&interrupted_json])?;
            if interrupted > 0 {
                tracing::warn!(
                    interrupted,
                    "the store closed while handlers ran; recorded them as interrupted"
                );
            }
            Ok(())
        });
        if let Err(error) = settled {
            tracing::error!(%error, "could not settle the running claims as the store closed");
        }
    }
}
