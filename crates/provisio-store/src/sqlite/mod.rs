//! The embedded SQLite backend: one file in the data directory, WAL journal,
//! versioned migrations applied at open.
//!
//! All writes go through one connection (SQLite admits one writer at a time, and
//! a single connection avoids lock contention and `SQLITE_BUSY`); reads use a
//! small pool of their own so the API's lists never wait behind a write batch.

mod queue;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::shared::{Dialect, SqlCore};
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

/// Runs `work` inside one write transaction on the writer connection, at
/// `durability` for its commit (one fsync covers it and everything before).
///
/// If anything fails, the transaction is rolled back and the connection is
/// closed rather than returned to the pool: after a failed COMMIT (a full
/// disk) SQLite may or may not have rolled back by itself, and a connection
/// left inside a transaction fails every later write ("Safety level may not
/// be changed inside a transaction") until a restart. The pool opens a fresh
/// connection for the next writer, so the store recovers as soon as the
/// disk has room again.
pub(crate) async fn write_tx<T>(
    pool: &SqlitePool,
    durability: Durability,
    work: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut conn = pool.acquire().await?;
    let (begin, commit) = begin_commit(durability);
    let result = async {
        sqlx::raw_sql(begin).execute(&mut *conn).await?;
        let value = work(&mut conn).await?;
        sqlx::raw_sql(commit).execute(&mut *conn).await?;
        Ok(value)
    }
    .await;
    if result.is_err() {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        conn.close_on_drop();
    }
    result
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

/// Runs the statements `build` appends (each ended by `;`, their `?` bound
/// in order across them) as one write transaction in a single round trip
/// to the driver's worker thread. For writes that need no answer from the
/// database between their statements. A failure rolls back and closes the
/// connection, as in [`write_tx`].
pub(crate) async fn one_trip(
    pool: &SqlitePool,
    durability: Durability,
    build: impl FnOnce(&mut sqlx::QueryBuilder<Sqlite>) -> bool,
) -> StoreResult<()> {
    let (begin, commit) = begin_commit(durability);
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(begin);
    q.push("; ");
    if !build(&mut q) {
        return Ok(());
    }
    q.push(commit);
    let mut conn = pool.acquire().await?;
    let result = q.build().execute(&mut *conn).await;
    if let Err(err) = result {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        conn.close_on_drop();
        return Err(err.into());
    }
    Ok(())
}

impl Dialect for Sqlite {
    const LIKE: &'static str = "LIKE";
    const FOR_UPDATE: &'static str = "";
    const FOR_KEY_SHARE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const BYTE_ORDER: &'static str = "";
    const EVENT_ORDER: &'static str = "e.rowid";
    const SNAPSHOT_READS: &'static str = "";

    /// Every write transaction but an emit batch's commits at NORMAL: what
    /// it writes can be redone.
    fn write_tx<T>(
        pool: &SqlitePool,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<T>> {
        write_tx(pool, Durability::Normal, work)
    }

    /// The single writer serializes every transaction already.
    async fn lock_lines(
        _conn: &mut SqliteConnection,
        _lines: &[crate::shared::lines::Line],
    ) -> StoreResult<()> {
        Ok(())
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
        let write = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            durability,
            core: SqlCore { write, read },
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
