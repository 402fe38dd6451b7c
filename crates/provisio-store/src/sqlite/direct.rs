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
use std::time::Duration;

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
    /// Opens a transaction first, committed at this durability. `None`
    /// goes on with the transaction the caller's previous call left open.
    begin: Option<Durability>,
    stmts: Vec<Stmt>,
    /// Commits after the statements; otherwise the transaction stays open
    /// for the caller's next call.
    commit: bool,
    reply: oneshot::Sender<StoreResult<Vec<Row>>>,
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
                while let Ok(job) = inbox.recv() {
                    let result = thread.run(job.begin, job.stmts, job.commit);
                    let _ = job.reply.send(result);
                }
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
        self.call(Some(durability), stmts, true).await
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
        self.call(Some(durability), stmts, false).await
    }

    /// Runs `stmts` in the transaction [`Direct::start`] opened, and
    /// commits it.
    pub(crate) async fn finish(&self, stmts: Vec<Stmt>) -> StoreResult<Vec<Row>> {
        self.call(None, stmts, true).await
    }

    async fn call(
        &self,
        begin: Option<Durability>,
        stmts: Vec<Stmt>,
        commit: bool,
    ) -> StoreResult<Vec<Row>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                begin,
                stmts,
                commit,
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
        commit: bool,
    ) -> StoreResult<Vec<Row>> {
        let result = self.steps(begin, stmts, commit);
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn steps(
        &mut self,
        begin: Option<Durability>,
        stmts: Vec<Stmt>,
        commit: bool,
    ) -> StoreResult<Vec<Row>> {
        if let Some(durability) = begin {
            if !self.conn()?.is_autocommit() {
                // Left open by a caller that was cancelled between its calls.
                self.abandon();
            }
            let full = durability == Durability::Full;
            let conn = self.conn()?;
            if full {
                conn.prepare_cached("PRAGMA synchronous = FULL")?
                    .raw_execute()?;
            }
            conn.prepare_cached("BEGIN")?.raw_execute()?;
            self.full = full;
        } else if self.conn()?.is_autocommit() {
            return Err(StoreError::Database(sqlx::Error::Protocol(
                "the write transaction ended before its last statements".into(),
            )));
        }
        let conn = self.conn.as_ref().expect("connected above");
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
        if commit {
            conn.prepare_cached("COMMIT")?.raw_execute()?;
            if std::mem::take(&mut self.full) {
                conn.prepare_cached("PRAGMA synchronous = NORMAL")?
                    .raw_execute()?;
            }
        }
        Ok(rows)
    }

    /// After a failure, or before a transaction a cancelled caller left
    /// open: rolls back and restores `synchronous`; a connection that
    /// cannot do both (after a failed COMMIT on a full disk SQLite may not
    /// have rolled back) is closed, and the next call opens a fresh one,
    /// which works again as soon as the disk has room.
    fn abandon(&mut self) {
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
}
