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
//! the two never write at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use tokio::sync::oneshot;

use super::Durability;
use crate::rows::{Columns, corrupt};
use crate::{StoreError, StoreResult};

/// One statement for the write thread: its text, with a `?` for each of
/// its arguments, in order.
#[derive(Default)]
pub(crate) struct Stmt {
    sql: String,
    args: Vec<Value>,
}

impl crate::query::Sql for Stmt {
    fn sql(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    fn arg(&mut self, value: impl crate::query::Arg) -> &mut Self {
        self.sql.push('?');
        self.args.push(value.value());
        self
    }
}

impl Stmt {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            sql: text.to_owned(),
            args: Vec::new(),
        }
    }
}

/// A row a statement returned, its values decoded by [`Columns`].
#[derive(Debug)]
pub(crate) struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    fn get(&self, column: &str) -> StoreResult<&Value> {
        self.columns
            .iter()
            .position(|c| c == column)
            .map(|i| &self.values[i])
            .ok_or_else(|| corrupt(column, "no such column"))
    }
}

impl Columns for Row {
    fn text(&self, column: &str) -> StoreResult<String> {
        self.opt_text(column)?
            .ok_or_else(|| corrupt(column, "NULL where text was expected"))
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        match self.get(column)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            other => Err(corrupt(
                column,
                format!("{:?} is not text", other.data_type()),
            )),
        }
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        self.opt_int(column)?
            .ok_or_else(|| corrupt(column, "NULL where a number was expected"))
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        match self.get(column)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            other => Err(corrupt(
                column,
                format!("{:?} is not an integer", other.data_type()),
            )),
        }
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(self.int(column)? != 0)
    }

    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>> {
        match self.get(column)? {
            Value::Blob(bytes) => Ok(bytes.clone()),
            other => Err(corrupt(
                column,
                format!("{:?} is not a blob", other.data_type()),
            )),
        }
    }
}

/// What one call asks of the thread.
struct Job {
    /// Opens a transaction first, committed at this durability (or joins
    /// the thread's lingering one). `None` goes on with the transaction the
    /// caller's previous call left open.
    begin: Option<Durability>,
    stmts: Vec<Stmt>,
    end: End,
    reply: oneshot::Sender<StoreResult<Vec<Row>>>,
}

/// How a job's transaction ends.
enum End {
    Commit,
    /// Stays open for the caller's next call.
    Open,
    /// Commits with the next job's transaction, or after [`LINGER`]: unless
    /// its statements returned rows, which someone is waiting on. Whether
    /// the commit succeeded is told on the sender.
    Linger(oneshot::Sender<StoreResult<()>>),
    /// Commits the lingering transaction, if any; nothing else.
    Flush,
}

/// How long a lingering transaction waits for another job to commit it.
/// At a few hundred events a second the next emit comes well within it;
/// a `kill -9` may cost what lingered, whose deliveries are then logged as
/// interrupted and sent again.
pub(crate) const LINGER: Duration = Duration::from_millis(20);

/// A lingering job's commit: resolves once its transaction has committed,
/// or with the error that rolled it back.
pub(crate) struct Committed(oneshot::Receiver<StoreResult<()>>);

impl Committed {
    pub(crate) async fn wait(self) -> StoreResult<()> {
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
    /// migrated already.
    pub(crate) async fn open(path: &Path) -> StoreResult<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (opened, open_result) = oneshot::channel();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("provisio-sqlite-writer".into())
            .spawn(move || {
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
                            let left = LINGER.saturating_sub(since.elapsed());
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
                    let result = thread.run(job.begin, job.stmts, job.end);
                    let _ = job.reply.send(result);
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
    /// The caller may let go of the writer as soon as this returns, and
    /// learns from [`Committed`] when the statements are durable.
    pub(crate) async fn linger(
        &self,
        durability: Durability,
        stmts: Vec<Stmt>,
    ) -> StoreResult<(Vec<Row>, Committed)> {
        let (ack, committed) = oneshot::channel();
        let rows = self.call(Some(durability), stmts, End::Linger(ack)).await?;
        Ok((rows, Committed(committed)))
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
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                begin,
                stmts,
                end,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
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
    /// The open transaction commits at FULL: `synchronous` goes back to
    /// NORMAL after it ends, whichever way.
    full: bool,
    /// The open transaction is the thread's own, lingering since then for
    /// a job to commit it with.
    lingering: Option<Instant>,
    /// Told how the open transaction ended: the lingering jobs in it.
    acks: Vec<oneshot::Sender<StoreResult<()>>>,
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
            full: false,
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
            self.conn = Some(conn);
            self.full = false;
        }
        Ok(self.conn.as_ref().expect("opened above"))
    }

    fn run(
        &mut self,
        begin: Option<Durability>,
        stmts: Vec<Stmt>,
        end: End,
    ) -> StoreResult<Vec<Row>> {
        if matches!(end, End::Flush) {
            self.flush();
            return Ok(Vec::new());
        }
        if begin.is_none() && (self.lingering.is_some() || self.conn()?.is_autocommit()) {
            // Refused before it touches anything: the transaction it meant
            // is gone, and what lingers is not its own.
            return Err(StoreError::Database(sqlx::Error::Protocol(
                "the write transaction ended before its last statements".into(),
            )));
        }
        let result = self.steps(begin, stmts, end);
        if let Err(err) = &result {
            self.abandon(err);
        }
        result
    }

    fn steps(
        &mut self,
        begin: Option<Durability>,
        stmts: Vec<Stmt>,
        end: End,
    ) -> StoreResult<Vec<Row>> {
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
                let full = durability == Durability::Full;
                let conn = self.conn()?;
                if full {
                    conn.prepare_cached("PRAGMA synchronous = FULL")?
                        .raw_execute()?;
                }
                conn.prepare_cached("BEGIN")?.raw_execute()?;
                self.full = full;
            }
        }
        let conn = self.conn()?;
        let mut rows = Vec::new();
        for stmt in stmts {
            let mut prepared = conn.prepare_cached(&stmt.sql)?;
            let columns: Arc<[String]> = prepared
                .column_names()
                .into_iter()
                .map(str::to_owned)
                .collect();
            let mut result = prepared.query(rusqlite::params_from_iter(stmt.args))?;
            while let Some(row) = result.next()? {
                let values = (0..columns.len())
                    .map(|i| row.get::<_, Value>(i))
                    .collect::<Result<_, _>>()?;
                rows.push(Row {
                    columns: columns.clone(),
                    values,
                });
            }
        }
        match end {
            End::Commit | End::Flush => self.commit()?,
            End::Open => {}
            End::Linger(ack) => {
                self.acks.push(ack);
                if rows.is_empty() {
                    self.lingering = Some(Instant::now());
                } else {
                    self.commit()?;
                }
            }
        }
        Ok(rows)
    }

    /// Commits the open transaction and tells the lingering jobs in it.
    fn commit(&mut self) -> StoreResult<()> {
        let conn = self.conn.as_ref().expect("inside a transaction");
        conn.prepare_cached("COMMIT")?.raw_execute()?;
        self.lingering = None;
        for ack in self.acks.drain(..) {
            let _ = ack.send(Ok(()));
        }
        if std::mem::take(&mut self.full) {
            conn.prepare_cached("PRAGMA synchronous = NORMAL")?
                .raw_execute()?;
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
    /// open: rolls back and restores `synchronous`; a connection that
    /// cannot do both (after a failed COMMIT on a full disk SQLite may not
    /// have rolled back) is closed, and the next call opens a fresh one,
    /// which works again as soon as the disk has room. The lingering jobs
    /// in it are told it failed, with `why`.
    fn abandon(&mut self, why: &StoreError) {
        self.lingering = None;
        for ack in self.acks.drain(..) {
            let _ = ack.send(Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "the transaction was rolled back: {why}"
            )))));
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let rolled_back = conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok();
        let restored = conn.execute_batch("PRAGMA synchronous = NORMAL").is_ok();
        self.full = false;
        if !(rolled_back && restored && conn.is_autocommit()) {
            self.conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Sql;

    /// Rows in `t` as another connection sees them: committed ones only.
    fn committed_rows(dir: &tempfile::TempDir) -> i64 {
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    /// Inserts a row in a lingering transaction.
    async fn linger_insert(direct: &Direct, n: i64, s: &str) -> (Vec<Row>, Committed) {
        direct
            .linger(Durability::Full, vec![insert(n, Some(s))])
            .await
            .unwrap()
    }

    async fn thread_with_table() -> (tempfile::TempDir, Direct) {
        let dir = tempfile::tempdir().unwrap();
        let direct = Direct::open(&dir.path().join("t.db")).await.unwrap();
        direct
            .transaction(
                Durability::Normal,
                vec![Stmt::new(
                    "CREATE TABLE t (n INTEGER PRIMARY KEY, s TEXT NOT NULL)",
                )],
            )
            .await
            .unwrap();
        (dir, direct)
    }

    fn insert(n: i64, s: Option<&str>) -> Stmt {
        let mut q = Stmt::new("INSERT INTO t (n, s) VALUES (");
        q.arg(n).sql(", ").arg(s.map(str::to_owned)).sql(")");
        q
    }

    async fn count(direct: &Direct) -> i64 {
        let rows = direct
            .transaction(
                Durability::Normal,
                vec![Stmt::new("SELECT COUNT(*) AS n FROM t")],
            )
            .await
            .unwrap();
        rows[0].int("n").unwrap()
    }

    /// The rows of `select`, once the connection is seen back at NORMAL
    /// (`synchronous` 1) after whatever ran before.
    async fn read_at_normal(direct: &Direct, select: &'static str) -> Vec<Row> {
        let mut rows = direct
            .transaction(
                Durability::Normal,
                vec![Stmt::new("PRAGMA synchronous"), Stmt::new(select)],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.remove(0).int("synchronous").unwrap(),
            1,
            "not back at NORMAL"
        );
        rows
    }

    #[tokio::test]
    async fn a_failing_statement_undoes_its_whole_transaction() {
        let (_dir, direct) = thread_with_table().await;
        let err = direct
            .transaction(
                Durability::Full,
                vec![insert(1, Some("a")), insert(2, None)],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert!(!err.is_unavailable(), "a refused row is not an outage");
        assert_eq!(count(&direct).await, 0, "the first insert was kept");
        // The connection goes on working, back at NORMAL.
        direct
            .transaction(Durability::Normal, vec![insert(1, Some("a"))])
            .await
            .unwrap();
        let rows = read_at_normal(&direct, "SELECT n, s FROM t").await;
        assert_eq!(rows[0].int("n").unwrap(), 1);
        assert_eq!(rows[0].text("s").unwrap(), "a");
        assert_eq!(
            rows[0].opt_int("s").ok(),
            None,
            "text is not read as a number"
        );
    }

    #[tokio::test]
    async fn a_transaction_left_open_is_rolled_back_by_the_next_one() {
        let (_dir, direct) = thread_with_table().await;
        // A caller that started and never finished (it was cancelled).
        direct
            .start(Durability::Full, vec![insert(1, Some("lost"))])
            .await
            .unwrap();
        direct
            .transaction(Durability::Normal, vec![insert(2, Some("kept"))])
            .await
            .unwrap();
        let rows = read_at_normal(&direct, "SELECT s FROM t").await;
        let texts: Vec<String> = rows.iter().map(|r| r.text("s").unwrap()).collect();
        assert_eq!(texts, ["kept"]);
        // `finish` without a transaction of its own is refused, not run
        // outside one.
        assert!(direct.finish(vec![insert(3, Some("x"))]).await.is_err());
        assert_eq!(count(&direct).await, 1);
    }

    #[tokio::test]
    async fn start_and_finish_make_one_transaction() {
        let (_dir, direct) = thread_with_table().await;
        let seen = direct
            .start(
                Durability::Full,
                vec![Stmt::new("SELECT COUNT(*) AS n FROM t")],
            )
            .await
            .unwrap();
        assert_eq!(seen[0].int("n").unwrap(), 0);
        direct.finish(vec![insert(1, Some("a"))]).await.unwrap();
        assert_eq!(count(&direct).await, 1);
    }

    #[tokio::test]
    async fn a_lingering_write_commits_with_the_next_transaction() {
        let (dir, direct) = thread_with_table().await;
        let (rows, committed) = linger_insert(&direct, 1, "a").await;
        assert!(rows.is_empty());
        assert_eq!(
            committed_rows(&dir),
            0,
            "committed before anything joined it"
        );
        direct
            .transaction(Durability::Normal, vec![insert(2, Some("b"))])
            .await
            .unwrap();
        committed.wait().await.unwrap();
        assert_eq!(committed_rows(&dir), 2);
        // The joined commit ran at FULL, and the connection is back at NORMAL.
        read_at_normal(&direct, "SELECT n FROM t").await;
    }

    #[tokio::test]
    async fn a_lingering_write_commits_by_itself_when_nothing_comes() {
        let (dir, direct) = thread_with_table().await;
        let started = Instant::now();
        let (_, committed) = linger_insert(&direct, 1, "a").await;
        committed.wait().await.unwrap();
        assert!(started.elapsed() >= LINGER, "committed before the linger");
        assert_eq!(committed_rows(&dir), 1);
        read_at_normal(&direct, "SELECT n FROM t").await;
    }

    #[tokio::test]
    async fn a_lingering_write_whose_rows_someone_waits_on_commits_at_once() {
        let (dir, direct) = thread_with_table().await;
        let mut returning = insert(1, Some("a"));
        returning.sql(" RETURNING n");
        let (rows, _committed) = direct
            .linger(Durability::Normal, vec![returning])
            .await
            .unwrap();
        assert_eq!(rows[0].int("n").unwrap(), 1);
        assert_eq!(committed_rows(&dir), 1);
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_what_lingered_and_says_so() {
        let (dir, direct) = thread_with_table().await;
        let (_, first) = linger_insert(&direct, 1, "a").await;
        let (_, second) = linger_insert(&direct, 2, "b").await;
        // A job that joins them and fails takes them down with it.
        assert!(
            direct
                .transaction(Durability::Normal, vec![insert(3, None)])
                .await
                .is_err()
        );
        for committed in [first, second] {
            let err = committed.wait().await.unwrap_err();
            assert!(err.to_string().contains("rolled back"), "{err}");
        }
        assert_eq!(count(&direct).await, 0);
        assert_eq!(committed_rows(&dir), 0);
        // A `finish` whose transaction is gone cannot end a lingering one,
        // nor undo it; a flush (before a write on another connection)
        // commits it.
        let (_, committed) = linger_insert(&direct, 4, "d").await;
        assert!(direct.finish(vec![insert(5, Some("e"))]).await.is_err());
        direct.flush().await.unwrap();
        committed.wait().await.unwrap();
        assert_eq!(committed_rows(&dir), 1);
    }
}
