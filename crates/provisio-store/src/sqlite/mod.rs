//! The embedded SQLite backend: one file in the data directory, WAL journal,
//! versioned migrations applied at open.
//!
//! All writes go through one connection (SQLite admits one writer at a time, and
//! a single connection avoids lock contention and `SQLITE_BUSY`); reads use a
//! small pool of their own so the API's lists never wait behind a write batch.

mod catalog;
mod executions;
mod handlers;
mod queue;
mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use provisio_core::catalog::EventType;
use provisio_core::event::Event;
use provisio_core::handler::{Handler, HandlerSpec};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::*;
// For the submodules: shared with the PostgreSQL backend.
use crate::{conflict_on_unique, now_ms};

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
    // Each pair of statements goes in one round trip to the driver's worker
    // thread: at low rates those trips are the cost.
    let (begin, commit) = match durability {
        Durability::Full => (
            "PRAGMA synchronous = FULL; BEGIN",
            "COMMIT; PRAGMA synchronous = NORMAL",
        ),
        Durability::Normal => ("BEGIN", "COMMIT"),
    };
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

#[derive(Clone)]
pub struct SqliteStore {
    /// How durable an accepted emit's commit is.
    durability: Durability,
    /// The single writer connection.
    write: SqlitePool,
    /// Readers for lists and lookups.
    read: SqlitePool,
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
            write,
            read,
        })
    }

    /// Opens the database at `sqlite://path` or `sqlite:path`.
    pub async fn open_url(url: &str, durability: Durability) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?;
        Self::open(options.get_filename(), durability).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn single_node(&self) -> bool {
        // `serve` holds the data directory's lock while it uses the file.
        true
    }

    async fn create_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
        tokens::create(&self.write, name, hash).await
    }

    async fn put_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
        tokens::put(&self.write, name, hash).await
    }

    async fn find_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        tokens::find(&self.read, hash).await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        tokens::list(&self.read).await
    }

    async fn revoke_token(&self, token: TokenRef<'_>) -> StoreResult<bool> {
        tokens::revoke(&self.write, token).await
    }

    async fn seed_event_types(&self, types: &[EventType]) -> StoreResult<()> {
        catalog::seed(&self.write, types).await
    }

    async fn list_event_types(&self) -> StoreResult<Vec<EventType>> {
        catalog::list(&self.read).await
    }

    async fn insert_event_type(&self, event_type: &EventType) -> StoreResult<()> {
        catalog::insert(&self.write, event_type).await
    }

    async fn insert_handler(&self, spec: &HandlerSpec) -> StoreResult<Handler> {
        handlers::insert(&self.write, spec).await
    }

    async fn get_handler(&self, id: i64) -> StoreResult<Option<Handler>> {
        handlers::get(&self.read, id).await
    }

    async fn update_handler(&self, id: i64, spec: &HandlerSpec) -> StoreResult<Handler> {
        handlers::update(&self.write, id, spec).await
    }

    async fn rotate_handler_secret(&self, id: i64) -> StoreResult<Handler> {
        handlers::rotate_secret(&self.write, id).await
    }

    async fn delete_handler(&self, id: i64) -> StoreResult<bool> {
        handlers::delete(&self.write, id).await
    }

    async fn list_handlers(
        &self,
        filter: &HandlerFilter,
        page: Page,
    ) -> StoreResult<(Vec<Handler>, u64)> {
        handlers::list(&self.read, filter, page).await
    }

    async fn all_handlers(&self) -> StoreResult<Vec<Handler>> {
        // From the writer, so a change committed a moment ago is always seen.
        handlers::all(&self.write).await
    }

    async fn insert_events(&self, batch: &[NewEvent]) -> StoreResult<Vec<EmitOutcome>> {
        queue::insert_events(&self.write, self.durability, batch).await
    }

    async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        queue::claim_due(&self.write, claim).await
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        queue::next_due_ms(&self.write).await
    }

    async fn settle_interrupted(&self, now_ms: i64, leases_ending_before: i64) -> StoreResult<u64> {
        queue::settle_interrupted(&self.write, now_ms, leases_ending_before).await
    }

    async fn record(
        &self,
        attempts: &[AttemptResult],
        executions: &[ExecutionRecord],
    ) -> StoreResult<u64> {
        queue::record(&self.write, attempts, executions).await
    }

    async fn get_event(&self, id: &str) -> StoreResult<Option<(Event, Vec<DeliveryRecord>)>> {
        queue::get_event(&self.read, id).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT COUNT(*) AS unfinished, MIN(created_at) AS oldest FROM deliveries
             WHERE state IN ('pending', 'waiting')",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(QueueStats {
            unfinished: row.try_get::<i64, _>("unfinished")? as u64,
            oldest_created_ms: row.try_get("oldest")?,
        })
    }

    async fn redeliver(&self, delivery_id: &str, now_ms: i64) -> StoreResult<DeliveryRecord> {
        queue::redeliver(&self.write, delivery_id, now_ms).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
        executions::list(&self.read, filter, page).await
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
        executions::get(&self.read, id).await
    }

    async fn handler_activity(
        &self,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<HandlerActivity>> {
        executions::activity(&self.read, since_ms, bucket_ms).await
    }

    async fn prune(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        queue::prune(&self.write, before_ms, batch).await
    }

    async fn create_session(&self, id_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO web_sessions (id_hash, token_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&id_hash[..])
            .bind(session.token_id)
            .bind(&session.csrf)
            .bind(now_ms())
            .bind(session.expires_at_ms)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn find_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT s.token_id, s.csrf, s.expires_at FROM web_sessions s
             JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL
             WHERE s.id_hash = ?",
        )
        .bind(&id_hash[..])
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            use sqlx::Row;
            Ok(SessionRecord {
                token_id: row.try_get("token_id")?,
                csrf: row.try_get("csrf")?,
                expires_at_ms: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = ? OR expires_at < ?")
            .bind(&id_hash[..])
            .bind(now_ms)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
