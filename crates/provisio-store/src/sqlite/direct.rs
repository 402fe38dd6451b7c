//! The queue's write path on a thread of its own.
//!
//! The emit, the claim and the record (the hot paths) run their statements
//! here: the thread owns a connection of its own (rusqlite) and runs a whole
//! transaction, BEGIN to COMMIT, per call, answering once. Through sqlx's
//! driver the same work crossed threads once per statement outcome and per
//! row (its worker hands each over a channel, and each hand-off woke the
//! caller's tokio worker, which preempted the driver's thread): 13 context
//! switches and more per event at 200 events/s (issue 15).
//!
//! The connection is a second one to the same file, beside sqlx's write
//! connection, which keeps every other write (the shared store core). A
//! call runs only while its caller holds the [`Writer`](super::Writer), so
//! the two never write at once. A third, on a thread of its own, copies
//! the WAL into the database (`checkpoint.rs`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Durability;
use crate::{StoreError, StoreResult};

mod checkpoint;
mod stmt;

use stmt::execute;
pub(crate) use stmt::{Row, Stmt};

/// What one call asks of the thread.
struct Job {
    /// Opens a transaction first, committed at this durability (or joins
    /// the thread's lingering one). `None` goes on with the transaction the
    /// caller's previous call left open.
    begin: Option<Durability>,
    stmts: Vec<Stmt>,
    end: End,
    reply: Reply,
}

/// Where a job's answer goes: its rows, or the error that failed it.
type Reply = oneshot::Sender<StoreResult<Vec<Row>>>;

/// How a job's transaction ends.
enum End {
    Commit,
    /// Stays open for the caller's next call.
    Open,
    /// Commits with the next job's transaction, or after [`LINGER`]: unless
    /// its statements returned rows, which someone is waiting on. Answered
    /// once committed.
    Linger,
    /// Commits the lingering transaction, if any; nothing else.
    Flush,
}

/// How long a lingering transaction waits for another job to commit it.
/// At a few hundred events a second the next emit comes well within it;
/// a `kill -9` may cost what lingered, whose deliveries are then logged as
/// interrupted and sent again.
pub(crate) const LINGER: Duration = Duration::from_millis(20);

/// A job's answer, to come: its rows, or the error that rolled it back.
pub(crate) struct Answer(oneshot::Receiver<StoreResult<Vec<Row>>>);

impl Answer {
    pub(crate) async fn wait(self) -> StoreResult<Vec<Row>> {
        self.0.await.map_err(|_| gone())?
    }
}

/// The handle to the write thread. Cloned with the store; the thread ends
/// when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Direct {
    jobs: mpsc::Sender<Job>,
}

impl Direct {
    /// Starts the thread with its connection to `path`, which exists and is
    /// migrated already; a lingering transaction waits `linger` at most.
    pub(crate) async fn open(path: &Path, linger: Duration) -> StoreResult<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (opened, open_result) = oneshot::channel();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("provisio-sqlite-writer".into())
            .spawn(move || {
                if let Err(err) = checkpoint::start_for_this_thread(path.clone()) {
                    let _ = opened.send(Err(StoreError::Database(sqlx::Error::Io(err))));
                    return;
                }
                let mut thread = match Thread::open(path) {
                    Ok(thread) => {
                        let _ = opened.send(Ok(()));
                        thread
                    }
                    Err(err) => {
                        let _ = opened.send(Err(err));
                        return;
                    }
                };
                loop {
                    let job = match thread.lingering {
                        Some(since) => {
                            let left = linger.saturating_sub(since.elapsed());
                            match inbox.recv_timeout(left) {
                                Ok(job) => job,
                                Err(mpsc::RecvTimeoutError::Timeout) => {
                                    thread.flush();
                                    continue;
                                }
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        None => match inbox.recv() {
                            Ok(job) => job,
                            Err(_) => break,
                        },
                    };
                    thread.run(job);
                }
                thread.flush();
            })
            .map_err(|err| StoreError::Database(sqlx::Error::Io(err)))?;
        open_result.await.map_err(|_| gone())??;
        Ok(Self { jobs })
    }

    /// Runs `stmts` as one transaction, committed at `durability`, and
    /// returns the rows they return, in order. A failure rolls it back.
    pub(crate) async fn transaction(
        &self,
        durability: Durability,
        stmts: Vec<Stmt>,
    ) -> StoreResult<Vec<Row>> {
        self.call(Some(durability), stmts, End::Commit).await
    }

    /// Runs `stmts` in a transaction begun at `durability` that stays open
    /// for the next job to commit with its own, or for [`LINGER`] at most:
    /// a write nobody waits on (an attempt's result) shares the next emit's
    /// commit instead of paying for one of its own. If they return rows,
    /// which someone does wait on, it commits at once.
    ///
    /// The job is queued when this returns: the caller may let go of the
    /// writer then (whoever takes it next is queued behind), and wait for
    /// the [`Answer`], which comes once the statements are durable.
    pub(crate) fn linger(&self, durability: Durability, stmts: Vec<Stmt>) -> StoreResult<Answer> {
        self.send(Some(durability), stmts, End::Linger)
    }

    /// Commits the lingering transaction, before a write on another
    /// connection (which would otherwise wait on its lock).
    pub(crate) async fn flush(&self) -> StoreResult<()> {
        self.call(None, Vec::new(), End::Flush).await.map(drop)
    }

    /// Opens a transaction and runs `stmts` in it, leaving it open for
    /// [`Direct::finish`], for work that needs the database's answer
    /// between its statements. The caller holds the writer throughout; a
    /// transaction it leaves open (it was cancelled) is rolled back by the
    /// next call.
    pub(crate) async fn start(
        &self,
        durability: Durability,
        stmts: Vec<Stmt>,
    ) -> StoreResult<Vec<Row>> {
        self.call(Some(durability), stmts, End::Open).await
    }

    /// Runs `stmts` in the transaction [`Direct::start`] opened, and
    /// commits it.
    pub(crate) async fn finish(&self, stmts: Vec<Stmt>) -> StoreResult<Vec<Row>> {
        self.call(None, stmts, End::Commit).await
    }

    async fn call(
        &self,
        begin: Option<Durability>,
        stmts: Vec<Stmt>,
        end: End,
    ) -> StoreResult<Vec<Row>> {
        self.send(begin, stmts, end)?.wait().await
    }

    fn send(&self, begin: Option<Durability>, stmts: Vec<Stmt>, end: End) -> StoreResult<Answer> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                begin,
                stmts,
                end,
                reply,
            })
            .map_err(|_| gone())?;
        Ok(Answer(answer))
    }
}

/// The thread has stopped (it panicked): the database is unavailable to
/// this process.
fn gone() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

/// The thread's side: the connection, opened again after a failure left it
/// unusable.
struct Thread {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
    /// The connection's `synchronous` setting. A transaction sets it at its
    /// begin only when it differs, and leaves it: emits and lingering
    /// records, nearly every write, run at FULL one after the other, and
    /// `PRAGMA synchronous` is parsed and planned anew each time it runs
    /// (SQLite expires the statement), twice per emit when each transaction
    /// put NORMAL back.
    synchronous: Durability,
    /// The open transaction is the thread's own, lingering since then for
    /// a job to commit it with.
    lingering: Option<Instant>,
    /// The lingering jobs in the open transaction, answered when it ends.
    acks: Vec<(Reply, Vec<Row>)>,
}

/// How long a statement waits for a lock another connection holds (a
/// reader's checkpoint, the other writer outside the [`Writer`](super::Writer)).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection, as on sqlx's connections.
const STATEMENT_CACHE: usize = 256;

impl Thread {
    fn open(path: PathBuf) -> StoreResult<Self> {
        let mut thread = Self {
            path,
            conn: None,
            synchronous: Durability::Normal,
            lingering: None,
            acks: Vec::new(),
        };
        thread.conn()?;
        Ok(thread)
    }

    /// The connection, opened with the settings of sqlx's (WAL is the
    /// file's own setting already).
    fn conn(&mut self) -> StoreResult<&rusqlite::Connection> {
        if self.conn.is_none() {
            let conn = rusqlite::Connection::open(&self.path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch(
                "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA temp_store = memory;",
            )?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            checkpoint::hook(&conn);
            self.conn = Some(conn);
            self.synchronous = Durability::Normal;
        }
        Ok(self.conn.as_ref().expect("opened above"))
    }

    /// Runs a job and answers it: at once, or a lingering one when its
    /// transaction ends.
    fn run(&mut self, job: Job) {
        let Job {
            begin,
            stmts,
            end,
            reply,
        } = job;
        let answer = match end {
            End::Flush => {
                self.flush();
                Ok(Vec::new())
            }
            // Refused before it touches anything: the transaction it meant
            // is gone, and what lingers is not its own.
            _ if begin.is_none() && !self.in_callers_transaction() => {
                Err(StoreError::Database(sqlx::Error::Protocol(
                    "the write transaction ended before its last statements".into(),
                )))
            }
            _ => match self.steps(begin, stmts) {
                Ok(rows) => match end {
                    End::Open => Ok(rows),
                    End::Linger => {
                        let waited_on = !rows.is_empty();
                        self.acks.push((reply, rows));
                        if waited_on {
                            if let Err(err) = self.commit() {
                                self.abandon(&err);
                            }
                        } else {
                            self.lingering.get_or_insert_with(Instant::now);
                        }
                        return;
                    }
                    _ => self.commit().map(|()| rows),
                },
                Err(err) => Err(err),
            }
            .inspect_err(|err| self.abandon(err)),
        };
        let _ = reply.send(answer);
    }

    /// A transaction is open, left by a caller for its next call.
    fn in_callers_transaction(&mut self) -> bool {
        self.lingering.is_none() && self.conn().is_ok_and(|conn| !conn.is_autocommit())
    }

    fn steps(&mut self, begin: Option<Durability>, stmts: Vec<Stmt>) -> StoreResult<Vec<Row>> {
        if let Some(durability) = begin {
            if self.lingering.take().is_some() {
                // The thread's own transaction: this job's work joins it,
                // and its commit covers both (it began at the emits'
                // durability, so any job may join).
            } else {
                if !self.conn()?.is_autocommit() {
                    // Left open by a caller that was cancelled between its calls.
                    self.abandon(&StoreError::Database(sqlx::Error::Protocol(
                        "a write transaction was abandoned by its caller".into(),
                    )));
                }
                if durability != self.synchronous {
                    self.conn()?.execute_batch(match durability {
                        Durability::Full => "PRAGMA synchronous = FULL",
                        Durability::Normal => "PRAGMA synchronous = NORMAL",
                    })?;
                    self.synchronous = durability;
                }
                self.conn()?.prepare_cached("BEGIN")?.raw_execute()?;
            }
        }
        let conn = self.conn()?;
        let mut rows = Vec::new();
        execute(conn, stmts, &mut rows)?;
        Ok(rows)
    }

    /// Commits the open transaction and tells the lingering jobs in it.
    fn commit(&mut self) -> StoreResult<()> {
        let conn = self.conn.as_ref().expect("inside a transaction");
        conn.prepare_cached("COMMIT")?.raw_execute()?;
        self.lingering = None;
        for (reply, rows) in self.acks.drain(..) {
            let _ = reply.send(Ok(rows));
        }
        Ok(())
    }

    /// Commits the lingering transaction, if there is one.
    fn flush(&mut self) {
        if self.lingering.is_some()
            && let Err(err) = self.commit()
        {
            self.abandon(&err);
        }
    }

    /// After a failure, or before a transaction a cancelled caller left
    /// open: rolls back and puts `synchronous` back at NORMAL, a setting
    /// known for sure whatever failed; a connection that
    /// cannot do both (after a failed COMMIT on a full disk SQLite may not
    /// have rolled back) is closed, and the next call opens a fresh one,
    /// which works again as soon as the disk has room. The lingering jobs
    /// in it are told it failed, with `why`.
    fn abandon(&mut self, why: &StoreError) {
        self.lingering = None;
        for (reply, _) in self.acks.drain(..) {
            let _ = reply.send(Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "the transaction was rolled back: {why}"
            )))));
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let rolled_back = conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok();
        let restored = conn.execute_batch("PRAGMA synchronous = NORMAL").is_ok();
        self.synchronous = Durability::Normal;
        if !(rolled_back && restored && conn.is_autocommit()) {
            self.conn = None;
        }
    }
}

#[cfg(test)]
mod tests;
