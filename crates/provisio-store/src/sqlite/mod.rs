//! The embedded SQLite backend: one file in the data directory, WAL journal,
//! versioned migrations applied at open.
//!
//! All writes go through one connection, [`Writer`] (SQLite admits one writer
//! at a time, and a single connection avoids lock contention and
//! `SQLITE_BUSY`); reads use a small pool of their own so the API's lists
//! never wait behind a write batch.

mod direct;
mod queue;
mod replays;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Sqlite};
use tokio::sync::{Mutex, MutexGuard};

use crate::shared::{Bind, Dialect, SqlCore};
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How hard SQLite makes each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss. Commits are batched, so the
    /// cost is one fsync per batch, not per event.
    Full,
    /// fsync at checkpoints only: survives a process crash (kill -9) but may
    /// lose the last commits on power loss.
    Normal,
}

/// SQLite's one write connection, shared by every writer in turn.
///
/// Not a pool of one: a pool pings its connection (a round trip to the
/// driver's worker thread, two thread wakes) from a task of its own every
/// time one is given back, which at low rates cost as much as the
/// statements themselves.
#[derive(Clone)]
pub(crate) struct Writer(Arc<WriterInner>);

struct WriterInner {
    slot: Mutex<Slot>,
    /// To open the connection again after a failed transaction.
    options: SqliteConnectOptions,
    /// The queue's write thread, whose lingering transaction commits
    /// before this connection writes (set once the thread runs).
    thread: std::sync::OnceLock<direct::Direct>,
}

/// The connection, and whether a transaction may be open on it.
struct Slot {
    /// `None` after a failed transaction closed it: the next writer opens a
    /// fresh one.
    conn: Option<SqliteConnection>,
    /// Set from BEGIN until COMMIT answered. Still set when a writer is
    /// taken, its last holder was cancelled mid-transaction (say, a client
    /// that went away): the next writer rolls that transaction back first,
    /// so it never commits half of someone else's work.
    in_tx: bool,
}

/// The write connection while one caller holds it.
pub(crate) struct WriteGuard<'w>(MutexGuard<'w, Slot>);

impl std::ops::Deref for WriteGuard<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.0.conn.as_ref().expect("a held writer is connected")
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.0.conn.as_mut().expect("a held writer is connected")
    }
}

impl Writer {
    async fn open(options: SqliteConnectOptions) -> Result<Self, sqlx::Error> {
        let conn = options.connect().await?;
        Ok(Self(Arc::new(WriterInner {
            slot: Mutex::new(Slot {
                conn: Some(conn),
                in_tx: false,
            }),
            options,
            thread: std::sync::OnceLock::new(),
        })))
    }

    /// Waits for the connection (as long as a pool would, then fails),
    /// reopening it if a failed transaction closed it and rolling back a
    /// transaction a cancelled holder left open; then has the write thread
    /// commit what lingers on its own connection, so this one does not wait
    /// on SQLite's lock.
    async fn take(&self) -> StoreResult<WriteGuard<'_>> {
        let guard = self.take_for_thread().await?;
        if let Some(thread) = self.0.thread.get() {
            thread.flush().await?;
        }
        Ok(guard)
    }

    /// Holds the writer for a call to the write thread: the thread's own
    /// connection does the writing.
    async fn take_for_thread(&self) -> Result<WriteGuard<'_>, sqlx::Error> {
        let mut slot = tokio::time::timeout(WRITER_WAIT, self.0.slot.lock())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        if slot.conn.is_none() {
            slot.conn = Some(self.0.options.connect().await?);
            slot.in_tx = false;
        }
        if slot.in_tx {
            let conn = slot.conn.as_mut().expect("connected above");
            // Fails with "no transaction is active" when the work had
            // ended after all: nothing to undo either way. An emit's commit
            // cut short may also have left `synchronous = FULL` behind.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            sqlx::raw_sql("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            slot.in_tx = false;
        }
        Ok(WriteGuard(slot))
    }
}

impl WriteGuard<'_> {
    /// Runs `work`, which opens and ends a transaction, with the connection
    /// marked as inside one until it ends (see `Slot::in_tx`); if it fails,
    /// the connection is discarded.
    async fn transaction<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.0.in_tx = true;
        let result = work(self).await;
        match result {
            Ok(_) => self.0.in_tx = false,
            Err(_) => self.discard().await,
        }
        result
    }

    /// After a failure inside a transaction: rolls back and closes the
    /// connection, so the next writer opens a fresh one. After a failed
    /// COMMIT (a full disk) SQLite may or may not have rolled back by
    /// itself, and a connection left inside a transaction fails every later
    /// write ("Safety level may not be changed inside a transaction") until
    /// a restart; a fresh connection recovers as soon as the disk has room.
    async fn discard(&mut self) {
        if let Some(mut conn) = self.0.conn.take() {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
        }
        self.0.in_tx = false;
    }
}

/// How long a writer waits for the connection before giving up.
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// Runs `work` inside one write transaction on the writer connection, at
/// `durability` for its commit (one fsync covers it and everything before).
/// If anything fails, the transaction is rolled back and the connection
/// closed (see [`WriteGuard::discard`]).
pub(crate) async fn write_tx<T>(
    writer: &Writer,
    durability: Durability,
    work: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    let (begin, commit) = begin_commit(durability);
    let mut conn = writer.take().await?;
    conn.transaction(async |conn| {
        sqlx::raw_sql(begin).execute(&mut *conn).await?;
        let value = work(conn).await?;
        sqlx::raw_sql(commit).execute(&mut *conn).await?;
        Ok(value)
    })
    .await
}

/// The statements that open and close a write transaction at `durability`.
/// Each pair goes in one round trip to the driver's worker thread: at low
/// rates those trips are the cost.
fn begin_commit(durability: Durability) -> (&'static str, &'static str) {
    match durability {
        Durability::Full => (
            "PRAGMA synchronous = FULL; BEGIN",
            "COMMIT; PRAGMA synchronous = NORMAL",
        ),
        Durability::Normal => ("BEGIN", "COMMIT"),
    }
}

impl Dialect for Sqlite {
    const LIKE: &'static str = "LIKE";
    const FOR_UPDATE: &'static str = "";
    const FOR_KEY_SHARE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const BYTE_ORDER: &'static str = "";
    const EVENT_ORDER: &'static str = "e.rowid";
    const SNAPSHOT_READS: &'static str = "";
    const NEXT_DUE: &'static str = "SELECT MIN((SELECT MIN(d.next_attempt_at) FROM deliveries d
                 WHERE d.state = 'pending' AND d.handler_id = h.id)) AS due
     FROM handlers h WHERE h.paused_reason IS NULL";

    fn push_lapsed(q: &mut QueryBuilder<Sqlite>, ending_before: i64) {
        // `deliveries_due_by_handler`, a seek per handler.
        q.push("handler_id IN (SELECT id FROM handlers) AND next_attempt_at < ")
            .bind(ending_before);
    }

    type Writer = Writer;
    type WriteGuard<'w> = WriteGuard<'w>;

    fn writer(writer: &Writer) -> impl Future<Output = StoreResult<WriteGuard<'_>>> {
        writer.take()
    }

    /// Every write transaction but an emit batch's commits at NORMAL: what
    /// it writes can be redone.
    fn write_tx<T>(
        writer: &Writer,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<T>> {
        write_tx(writer, Durability::Normal, work)
    }

    /// The single writer serializes every transaction already.
    async fn lock_lines(
        _conn: &mut SqliteConnection,
        _lines: &[crate::shared::lines::Line],
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn release_lines(
        conn: &mut SqliteConnection,
        lines: &[crate::shared::lines::Line],
        now: i64,
    ) -> StoreResult<u64> {
        let mut released = 0;
        for chunk in lines.chunks(crate::query::ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("");
            crate::shared::lines::push_release(&mut q, chunk, now);
            released += q.build().execute(&mut *conn).await?.rows_affected();
        }
        Ok(released)
    }

    /// The engine wakes its dispatcher after every change it makes.
    async fn announce_work(_conn: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    /// How durable an accepted emit's commit is.
    durability: Durability,
    /// The single writer connection (`core.write`) and the readers for lists
    /// and lookups (`core.read`).
    core: SqlCore<Sqlite>,
    /// The queue's write thread: emits, claims and records, each while
    /// holding `core.write`.
    direct: direct::Direct,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies migrations.
    pub async fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Emit commits raise this to FULL when `durability` asks for it.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .statement_cache_capacity(256);
        let write = Writer::open(options.clone()).await?;
        MIGRATOR.run(&mut *write.take().await?).await?;
        // No ping before each use: a file's connection cannot go stale the
        // way a network one does, and each ping is a round trip to the
        // driver's worker thread (two thread wakes).
        let read = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        let direct = direct::Direct::open(path, direct::LINGER).await?;
        let _ = write.0.thread.set(direct.clone());
        Ok(Self {
            durability,
            core: SqlCore { write, read },
            direct,
        })
    }

    /// Opens the database at `sqlite://path` or `sqlite:path`.
    pub async fn open_url(url: &str, durability: Durability) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?;
        Self::open(options.get_filename(), durability).await
    }
}

crate::shared::impl_store!(SqliteStore {
    fn single_node(&self) -> bool {
        // `serve` holds the data directory's lock while it uses the file.
        true
    }
});

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Row, SqliteConnection};

    use super::MIGRATOR;

    /// Migration 0018 rebuilds `deliveries` without AUTOINCREMENT: every
    /// row, column and index comes through; `sqlite_sequence` no longer
    /// names the table; a new delivery still follows every stored one.
    #[tokio::test]
    async fn deliveries_lose_autoincrement_and_keep_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("up.db").display());
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        MIGRATOR.run_to(17, &mut conn).await.unwrap();

        sqlx::raw_sql(
            "INSERT INTO events (id, events_id, object_id, object_key, dt, data, created_at)
                 VALUES ('e1', 'clients.update', '1', '1', '2026-12-08T00:00:00Z', '{}', 1),
                        ('e2', 'clients.update', '2', '2', '2026-12-08T00:00:00Z', '{}', 2);
             INSERT INTO deliveries (id, event_id, handler_id, object_key, state, attempts,
                                     next_attempt_at, lease_until, last_error, created_at,
                                     finished_at, superseded_by, replay_id)
                 VALUES ('d1', 'e1', 7, '1', 'success', 1, NULL, NULL, NULL, 1, 5, NULL, NULL),
                        ('d2', 'e1', 8, '1', 'pending', 2, 90, 90, 'timed out', 1, NULL, NULL, 'r1'),
                        ('d3', 'e2', 7, '1', 'waiting', 0, NULL, NULL, NULL, 2, NULL, NULL, NULL),
                        ('d4', 'e2', 8, '2', 'blocked', 5, NULL, NULL, 'gone', 2, NULL, NULL, NULL),
                        ('d5', 'e2', 9, '2', 'superseded', 0, NULL, NULL, NULL, 2, 6, 'd3', NULL);
             -- Retention took the newest: the sequence stays above every row.
             DELETE FROM deliveries WHERE id = 'd5';",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let rows = async |conn: &mut SqliteConnection| -> Vec<String> {
            sqlx::query("SELECT * FROM deliveries ORDER BY seq")
                .fetch_all(conn)
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            let value: Option<String> = row.try_get_unchecked(i).unwrap();
                            value.unwrap_or_else(|| "NULL".into())
                        })
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect()
        };
        let schema = async |conn: &mut SqliteConnection, sql: &str| -> Vec<String> {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(conn)
                .await
                .unwrap()
        };
        const INDEXES: &str = "SELECT name || ': ' || coalesce(sql, '') FROM sqlite_master
                               WHERE type = 'index' AND tbl_name = 'deliveries' ORDER BY name";
        let before = rows(&mut conn).await;
        let indexes = schema(&mut conn, INDEXES).await;
        assert_eq!(before.len(), 4);
        assert_eq!(
            before[1],
            "2|d2|e1|8|1|pending|2|0|90|90|timed out|1|NULL|NULL|r1"
        );

        MIGRATOR.run(&mut conn).await.unwrap();

        assert_eq!(rows(&mut conn).await, before);
        assert_eq!(schema(&mut conn, INDEXES).await, indexes);
        let table = schema(
            &mut conn,
            "SELECT sql FROM sqlite_master WHERE name = 'deliveries'",
        )
        .await;
        assert!(!table[0].contains("AUTOINCREMENT"), "{table:?}");
        let sequences = schema(&mut conn, "SELECT name FROM sqlite_sequence ORDER BY name").await;
        assert!(
            !sequences.contains(&"deliveries".to_owned()),
            "{sequences:?}"
        );
        assert_eq!(schema(&mut conn, "PRAGMA integrity_check").await, ["ok"]);
        assert!(
            schema(&mut conn, "SELECT \"table\" FROM pragma_foreign_key_check")
                .await
                .is_empty()
        );

        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (id, event_id, handler_id, object_key, state, created_at)
             VALUES ('d6', 'e2', 7, '1', 'waiting', 3) RETURNING seq",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let highest: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM deliveries WHERE id <> 'd6'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(seq, highest + 1);
    }
}
