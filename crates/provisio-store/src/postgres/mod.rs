//! The PostgreSQL backend: one database shared by any number of nodes.
//!
//! What makes it safe to share:
//!
//! - Workers lease due deliveries with `FOR UPDATE SKIP LOCKED`, so two nodes
//!   never lease the same row, and a lease moves `next_attempt_at` to its end,
//!   so a node that dies has its work taken over when the lease lapses.
//! - Per-object ordering is decided under a transaction-scoped advisory lock per
//!   (handler, object), taken by every write that decides or changes whether a
//!   (handler, object) queue is open: emits, recording a finished delivery, and
//!   redeliver (see `queue.rs`).
//! - Changes reach every node through `LISTEN/NOTIFY`: triggers announce
//!   handler and catalog changes on `provisio_routes`; emits and redelivers
//!   announce new work on `provisio_work` ([`PgStore::watch`]).
//!
//! Every commit is durable when it returns (PostgreSQL's default
//! `synchronous_commit = on`), so an accepted emit survives a crash of the
//! database server too.

mod catalog;
mod executions;
mod handlers;
mod queue;
#[cfg(feature = "test-support")]
pub mod scratch;
mod tokens;
mod upkeep;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use provisio_core::catalog::EventType;
use provisio_core::event::Event;
use provisio_core::handler::{Handler, HandlerSpec};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use crate::*;
// For the submodules: shared with the SQLite backend.
use crate::{conflict_on_unique, now_ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The notification channel for handler and catalog changes (sent by triggers).
const ROUTES_CHANNEL: &str = "provisio_routes";
/// The notification channel for new due work.
const WORK_CHANNEL: &str = "provisio_work";

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?…`; never logged, since it
    /// may hold a password.
    pub url: String,
    /// Pooled connections per node, the change listener's included.
    pub max_connections: u32,
    /// How long a query waits for a free or new connection before failing
    /// (an API request then answers 503).
    pub acquire_timeout: Duration,
    /// The server aborts any statement running longer (`statement_timeout`),
    /// so a stuck query or lock wait cannot hold a connection forever.
    pub statement_timeout: Duration,
}

impl PgSettings {
    /// Default pool settings for `url`, checked now so a typo is reported at
    /// start rather than at the first query. The error never repeats the URL,
    /// which may hold a password.
    pub fn parse(url: &str) -> Result<Self, String> {
        PgConnectOptions::from_str(url).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        Ok(Self::new(url))
    }

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }

    /// `host:port/database`, for messages: the URL without its credentials.
    pub fn display_target(&self) -> String {
        match PgConnectOptions::from_str(&self.url) {
            Ok(o) => format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or_default()
            ),
            Err(_) => "(unparsable URL)".into(),
        }
    }
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("target", &self.display_target())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and applies the migrations (concurrent starts are safe: the
    /// migrator holds an advisory lock while it runs).
    pub async fn connect(settings: &PgSettings) -> StoreResult<Self> {
        let store = Self::connect_unmigrated(settings).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// Connects without touching the schema.
    pub async fn connect_unmigrated(settings: &PgSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(&settings.url)?
            .application_name("provisio")
            .options([(
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await;
        match pool {
            Ok(pool) => Ok(Self { pool }),
            // The pool reports only that it timed out; one direct attempt
            // tells why (refused, unknown host, bad password, no database).
            Err(err) => match PgConnection::connect_with(&options).await {
                Err(cause) => Err(cause.into()),
                Ok(_) => Err(err.into()),
            },
        }
    }

    /// Closes every connection, waiting for queries in progress.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn single_node(&self) -> bool {
        false
    }

    fn watch(&self) -> Option<mpsc::Receiver<StoreChange>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(listen(self.pool.clone(), tx));
        Some(rx)
    }

    async fn create_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
        tokens::create(&self.pool, name, hash).await
    }

    async fn put_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
        tokens::put(&self.pool, name, hash).await
    }

    async fn find_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        tokens::find(&self.pool, hash).await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        tokens::list(&self.pool).await
    }

    async fn revoke_token(&self, token: TokenRef<'_>) -> StoreResult<bool> {
        tokens::revoke(&self.pool, token).await
    }

    async fn seed_event_types(&self, types: &[EventType]) -> StoreResult<()> {
        catalog::seed(&self.pool, types).await
    }

    async fn list_event_types(&self) -> StoreResult<Vec<EventType>> {
        catalog::list(&self.pool).await
    }

    async fn insert_event_type(&self, event_type: &EventType) -> StoreResult<()> {
        catalog::insert(&self.pool, event_type).await
    }

    async fn insert_handler(&self, spec: &HandlerSpec) -> StoreResult<Handler> {
        handlers::insert(&self.pool, spec).await
    }

    async fn get_handler(&self, id: i64) -> StoreResult<Option<Handler>> {
        handlers::get(&self.pool, id).await
    }

    async fn update_handler(&self, id: i64, spec: &HandlerSpec) -> StoreResult<Handler> {
        handlers::update(&self.pool, id, spec).await
    }

    async fn rotate_handler_secret(&self, id: i64) -> StoreResult<Handler> {
        handlers::rotate_secret(&self.pool, id).await
    }

    async fn delete_handler(&self, id: i64) -> StoreResult<bool> {
        handlers::delete(&self.pool, id).await
    }

    async fn list_handlers(
        &self,
        filter: &HandlerFilter,
        page: Page,
    ) -> StoreResult<(Vec<Handler>, u64)> {
        handlers::list(&self.pool, filter, page).await
    }

    async fn all_handlers(&self) -> StoreResult<Vec<Handler>> {
        handlers::all(&self.pool).await
    }

    async fn insert_events(&self, batch: &[NewEvent]) -> StoreResult<Vec<EmitOutcome>> {
        queue::insert_events(&self.pool, batch).await
    }

    async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        queue::claim_due(&self.pool, claim).await
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        queue::next_due_ms(&self.pool).await
    }

    async fn settle_interrupted(&self, now_ms: i64, leases_ending_before: i64) -> StoreResult<u64> {
        queue::settle_interrupted(&self.pool, now_ms, leases_ending_before).await
    }

    async fn record(
        &self,
        attempts: &[AttemptResult],
        executions: &[ExecutionRecord],
    ) -> StoreResult<u64> {
        queue::record(&self.pool, attempts, executions).await
    }

    async fn get_event(&self, id: &str) -> StoreResult<Option<(Event, Vec<DeliveryRecord>)>> {
        queue::get_event(&self.pool, id).await
    }

    async fn redeliver(&self, delivery_id: &str, now_ms: i64) -> StoreResult<DeliveryRecord> {
        queue::redeliver(&self.pool, delivery_id, now_ms).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
        executions::list(&self.pool, filter, page).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        upkeep::queue_stats(&self.pool).await
    }

    async fn handler_activity(
        &self,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<HandlerActivity>> {
        upkeep::activity(&self.pool, since_ms, bucket_ms).await
    }

    async fn prune(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        upkeep::prune(&self.pool, before_ms, batch).await
    }

    async fn create_session(&self, id_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()> {
        upkeep::create_session(&self.pool, id_hash, session).await
    }

    async fn find_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        upkeep::find_session(&self.pool, id_hash).await
    }

    async fn delete_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<()> {
        upkeep::delete_session(&self.pool, id_hash, now_ms).await
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
        executions::get(&self.pool, id).await
    }
}

/// The change feed behind [`PgStore::watch`]: a `LISTEN` connection that is
/// re-established, with backoff, whenever it is lost. Notifications sent
/// while it was down are gone, so every (re)connection is announced as
/// [`StoreChange::Resync`]. Ends when the receiver is dropped.
async fn listen(pool: PgPool, tx: mpsc::Sender<StoreChange>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let connected = tokio::select! {
            connected = subscribe(&pool) => connected,
            () = tx.closed() => return,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for changes from other nodes; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        if tx.send(StoreChange::Resync).await.is_err() {
            return;
        }
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = tx.closed() => return,
            };
            let change = match received {
                Ok(Some(n)) if n.channel() == ROUTES_CHANNEL => StoreChange::Routes,
                Ok(Some(_)) => StoreChange::Work,
                // Lost and already reconnected: whatever came meanwhile is gone.
                Ok(None) => StoreChange::Resync,
                Err(err) => {
                    tracing::warn!(error = %err, "lost the change listener; reconnecting");
                    break;
                }
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([ROUTES_CHANNEL, WORK_CHANNEL]).await?;
    Ok(listener)
}

/// Announces new due work to every node's dispatcher (delivered at commit).
async fn notify_work(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}
