//! The store's core, written once for both SQL dialects: every statement that
//! differs between SQLite and PostgreSQL only in its placeholders (`?` or
//! `$n`, which `QueryBuilder::push_bind` writes for whichever driver runs it),
//! and the code that runs it. A backend keeps only what truly differs: claims,
//! locks, the change feed, pragmas, emit and record batches.
//!
//! - [`Dialect`]: the few words each database spells its own way, and how it
//!   runs a write transaction.
//! - [`SqlCore`]: a backend's pools and the operations on them, one file per
//!   subject: `tokens`, `catalog`, `handlers`, `executions`, `sessions`,
//!   `queue` (reads and settling interrupted attempts), `lines` (moving an
//!   object's line on: release, conflation, skip), `replays` (replay jobs:
//!   their statements, and reads), `health` (the operator views' figures:
//!   queue and outcomes per handler), `upkeep` (queue statistics and
//!   retention).
//!
//! A new statement goes here unless it needs something only one database
//! has: a `QueryBuilder<DB>` bound with [`Bind::bind`] (generic code's
//! `push_bind`; a type not yet bound anywhere joins [`Dialect`]'s `Binds<…>`
//! supertraits) and run on `self.reader()`, `DB::on(&mut *self.writer().await?)` or, inside
//! [`Dialect::write_tx`], `DB::on(&mut *tx)`. A new handler column goes into
//! `handlers::push_spec` (besides the migrations and `rows::handler`).

mod catalog;
mod executions;
mod handlers;
mod health;
pub(crate) mod lines;
pub(crate) mod queue;
pub(crate) mod replays;
mod sessions;
mod tokens;
mod upkeep;

use std::fmt::Display;
use std::ops::DerefMut;

use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type};

use crate::StoreResult;
use crate::rows::Columns;

/// What a database spells its own way, for the statements written once.
///
/// Its supertraits say what the generic code may do with any dialect (bind
/// these types, decode rows with [`Columns`]), so that code needs no bounds
/// of its own: Rust implies a trait's supertraits where the trait is
/// required, but not its other where-clauses.
pub(crate) trait Dialect:
    Database<Arguments: IntoArguments<Self> + Default, Row: Columns>
    + Binds<i64>
    + Binds<Option<i64>>
    + Binds<bool>
    + Binds<String>
    + Binds<Option<String>>
    + Binds<&'static str>
    + Binds<Vec<u8>>
    + Driver
{
    /// The case-insensitive match of searches: SQLite's `LIKE` ignores ASCII
    /// case; PostgreSQL's `ILIKE` is the same search.
    const LIKE: &'static str;
    /// Appended to a selection of rows the transaction then changes:
    /// PostgreSQL locks them (`FOR UPDATE`), since other nodes write too;
    /// SQLite has one writer, so nothing is appended.
    const FOR_UPDATE: &'static str;
    /// Appended to a selection of rows that must not be deleted before the
    /// transaction ends, while others may still change them: PostgreSQL's
    /// `FOR KEY SHARE`; nothing on SQLite.
    const FOR_KEY_SHARE: &'static str;
    /// Appended to a selection of rows to delete in batches: on PostgreSQL
    /// rows another node holds are passed over, not waited for.
    const SKIP_LOCKED: &'static str;
    /// Byte order for comparing text keys (ULIDs) whatever the database's
    /// collation: PostgreSQL's `COLLATE "C"`; SQLite compares bytes already.
    const BYTE_ORDER: &'static str;
    /// An event's place in emit order, as a column of `events e`: SQLite's
    /// `rowid` (insertion order), PostgreSQL's `seq` (a sequence).
    const EVENT_ORDER: &'static str;
    /// Run first in a read transaction, makes its statements see one
    /// snapshot: PostgreSQL's REPEATABLE READ; empty on SQLite, whose
    /// transactions read one snapshot of the WAL already.
    const SNAPSHOT_READS: &'static str;

    /// Where writes go: PostgreSQL's pool; SQLite's one write connection.
    type Writer: Clone + Send + Sync;
    /// A write connection while one caller holds it.
    type WriteGuard<'w>: DerefMut<Target = Self::Connection> + Send
    where
        Self: 'w;

    /// A write connection, for statements outside a transaction: one from
    /// PostgreSQL's pool; SQLite's one connection, once no one else holds it.
    fn writer(
        writer: &Self::Writer,
    ) -> impl Future<Output = Result<Self::WriteGuard<'_>, sqlx::Error>>;

    /// Runs `work` inside one write transaction on `writer`, committing when
    /// it succeeds and rolling back when it fails.
    fn write_tx<T>(
        writer: &Self::Writer,
        work: impl AsyncFnOnce(&mut Self::Connection) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<T>>;

    /// Inside a write transaction, before it reads whether a (handler,
    /// object) line is open: PostgreSQL takes the lines' advisory locks, so
    /// other nodes' transactions on them wait; SQLite's single writer needs
    /// nothing.
    fn lock_lines(
        conn: &mut Self::Connection,
        lines: &[lines::Line],
    ) -> impl Future<Output = StoreResult<()>>;

    /// Inside a write transaction that made deliveries due: PostgreSQL tells
    /// every node at commit; a single SQLite node wakes its own dispatcher.
    fn announce_work(conn: &mut Self::Connection) -> impl Future<Output = StoreResult<()>>;
}

/// What both drivers offer but sqlx does not name for generic code:
/// executors are per driver, and so is a statement's result.
pub(crate) trait Driver: Database {
    /// A connection as the executor of a statement.
    fn on<'c>(conn: &'c mut Self::Connection) -> impl Executor<'c, Database = Self>;
    /// A pool as the executor of a statement.
    fn pool<'p>(pool: &'p Pool<Self>) -> impl Executor<'p, Database = Self>;
    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

macro_rules! impl_driver {
    ($($db:ty),*) => {$(
        impl Driver for $db {
            fn on<'c>(conn: &'c mut Self::Connection) -> impl Executor<'c, Database = Self> {
                conn
            }

            fn pool<'p>(pool: &'p Pool<Self>) -> impl Executor<'p, Database = Self> {
                pool
            }

            fn rows_affected(done: &Self::QueryResult) -> u64 {
                done.rows_affected()
            }
        }
    )*};
}

impl_driver!(sqlx::Sqlite, sqlx::Postgres);

/// A backend's connections, on which the shared operations run.
pub(crate) struct SqlCore<DB: Dialect> {
    /// Where writes go: SQLite's single writer connection, or PostgreSQL's
    /// pool.
    pub(crate) write: DB::Writer,
    /// Where lists and lookups go: SQLite's read-only pool, so they never
    /// wait behind a write batch; on PostgreSQL the same pool as `write`.
    pub(crate) read: Pool<DB>,
}

impl<DB: Dialect> SqlCore<DB> {
    fn reader(&self) -> impl Executor<'_, Database = DB> {
        DB::pool(&self.read)
    }

    /// The write connection, for one statement: `q.build().execute(DB::on(&mut
    /// *self.writer().await?))`.
    async fn writer(&self) -> Result<DB::WriteGuard<'_>, sqlx::Error> {
        DB::writer(&self.write).await
    }

    /// One page of a list: `q` (a `SELECT` with its filter) in `order`
    /// (an `ORDER BY` list), each row decoded by `decode`.
    async fn fetch_page<T>(
        &self,
        mut q: QueryBuilder<DB>,
        order: &'static str,
        page: crate::Page,
        decode: impl Fn(&DB::Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        q.push(" ORDER BY ")
            .push(order)
            .push(" LIMIT ")
            .bind(i64::from(page.per_page))
            .push(" OFFSET ")
            .bind(page.offset());
        let rows = q.build().fetch_all(self.reader()).await?;
        rows.iter().map(decode).collect()
    }
}

/// A database that can bind a `T` ([`Dialect`]'s supertraits name which).
pub(crate) trait Binds<T>: Database {
    fn bind_to(q: &mut QueryBuilder<Self>, value: T);
    fn bind_in<Sep: Display>(row: &mut Separated<'_, Self, Sep>, value: T);
}

impl<DB: Database, T> Binds<T> for DB
where
    for<'t> T: Encode<'t, DB> + Type<DB>,
{
    fn bind_to(q: &mut QueryBuilder<DB>, value: T) {
        q.push_bind(value);
    }

    fn bind_in<Sep: Display>(row: &mut Separated<'_, DB, Sep>, value: T) {
        row.push_bind(value);
    }
}

/// `push_bind` for generic code: binds any type the database [`Binds`].
pub(crate) trait Bind<DB: Database> {
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<T>;
}

impl<DB: Database> Bind<DB> for QueryBuilder<DB> {
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<T>,
    {
        DB::bind_to(self, value);
        self
    }
}

impl<DB: Database, Sep: Display> Bind<DB> for Separated<'_, DB, Sep> {
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<T>,
    {
        DB::bind_in(self, value);
        self
    }
}

// Not derived: a derive would ask the database type to be `Clone` too.
impl<DB: Dialect> Clone for SqlCore<DB> {
    fn clone(&self) -> Self {
        Self {
            write: self.write.clone(),
            read: self.read.clone(),
        }
    }
}

/// Implements [`Store`](crate::Store) for a backend holding its pools in a
/// `core: SqlCore<_>` field, so the mapping of the trait onto the code is
/// written once for both backends. Every method is the shared core's, but
/// for the methods given (`single_node`, `watch`) and those each backend
/// writes its own way, in modules of the same names in both, each taking the
/// store: `queue::{insert_events, claim_due, record, start_replay,
/// cancel_replay}` (claims, locks, emit and record batches, replay jobs).
macro_rules! impl_store {
    ($backend:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::Store for $backend {
            $($own)*

            async fn insert_events(&self, batch: &[NewEvent]) -> StoreResult<Vec<EmitOutcome>> {
                queue::insert_events(self, batch).await
            }

            async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Claimed> {
                queue::claim_due(self, claim).await
            }

            async fn record(
                &self,
                attempts: &[AttemptResult],
                executions: &[ExecutionRecord],
            ) -> StoreResult<RecordOutcome> {
                queue::record(self, attempts, executions).await
            }

            async fn redeliver(
                &self,
                delivery_id: &str,
                now_ms: i64,
            ) -> StoreResult<(DeliveryRecord, Redelivery)> {
                self.core.redeliver(delivery_id, now_ms).await
            }

            async fn get_delivery(&self, delivery_id: &str) -> StoreResult<Option<DeliveryRecord>> {
                self.core.get_delivery(delivery_id).await
            }

            async fn skip_blocked(
                &self,
                delivery_id: &str,
                who: &str,
                now_ms: i64,
            ) -> StoreResult<(DeliveryRecord, RecordOutcome)> {
                self.core.skip_blocked(delivery_id, who, now_ms).await
            }

            async fn conflate_lines(&self, handler_id: i64, now_ms: i64) -> StoreResult<u64> {
                self.core.conflate_lines(handler_id, now_ms).await
            }

            async fn start_replay(&self, job: &NewReplay) -> StoreResult<ReplayRecord> {
                queue::start_replay(self, job).await
            }

            async fn cancel_replay(
                &self,
                id: &str,
                now_ms: i64,
            ) -> StoreResult<(ReplayRecord, u64)> {
                queue::cancel_replay(self, id, now_ms).await
            }

            async fn get_replay(&self, id: &str) -> StoreResult<Option<ReplayRecord>> {
                self.core.get_replay(id).await
            }

            async fn list_replays(&self, page: Page) -> StoreResult<(Vec<ReplayRecord>, u64)> {
                self.core.list_replays(page).await
            }

            async fn handler_figures(&self, since_ms: i64, bucket_ms: i64) -> StoreResult<Figures> {
                self.core.handler_figures(since_ms, bucket_ms).await
            }

            async fn call_p95(
                &self,
                handler_ids: &[i64],
                since_ms: i64,
                sample: u32,
            ) -> StoreResult<std::collections::HashMap<i64, u32>> {
                self.core.call_p95(handler_ids, since_ms, sample).await
            }

            async fn ping(&self) -> StoreResult<()> {
                self.core.ping().await
            }

            async fn create_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
                self.core.create_token(name, hash).await
            }

            async fn put_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
                self.core.put_token(name, hash).await
            }

            async fn find_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
                self.core.find_token(hash).await
            }

            async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
                self.core.list_tokens().await
            }

            async fn revoke_token(&self, token: TokenRef<'_>) -> StoreResult<bool> {
                self.core.revoke_token(token).await
            }

            async fn seed_event_types(
                &self,
                types: &[provisio_core::catalog::EventType],
            ) -> StoreResult<()> {
                self.core.seed_event_types(types).await
            }

            async fn list_event_types(&self) -> StoreResult<Vec<provisio_core::catalog::EventType>> {
                self.core.list_event_types().await
            }

            async fn insert_event_type(
                &self,
                event_type: &provisio_core::catalog::EventType,
            ) -> StoreResult<()> {
                self.core.insert_event_type(event_type).await
            }

            async fn insert_handler(
                &self,
                spec: &provisio_core::handler::HandlerSpec,
            ) -> StoreResult<provisio_core::handler::Handler> {
                self.core.insert_handler(spec).await
            }

            async fn get_handler(
                &self,
                id: i64,
            ) -> StoreResult<Option<provisio_core::handler::Handler>> {
                self.core.get_handler(id).await
            }

            async fn update_handler(
                &self,
                id: i64,
                spec: &provisio_core::handler::HandlerSpec,
            ) -> StoreResult<provisio_core::handler::Handler> {
                self.core.update_handler(id, spec).await
            }

            async fn rotate_handler_secret(
                &self,
                id: i64,
            ) -> StoreResult<provisio_core::handler::Handler> {
                self.core.rotate_handler_secret(id).await
            }

            async fn delete_handler(&self, id: i64) -> StoreResult<bool> {
                self.core.delete_handler(id).await
            }

            async fn list_handlers(
                &self,
                filter: &HandlerFilter,
                page: Page,
            ) -> StoreResult<(Vec<provisio_core::handler::Handler>, u64)> {
                self.core.list_handlers(filter, page).await
            }

            async fn all_handlers(&self) -> StoreResult<Vec<provisio_core::handler::Handler>> {
                self.core.all_handlers().await
            }

            async fn change_pause(
                &self,
                id: i64,
                change: PauseChange<'_>,
            ) -> StoreResult<Option<provisio_core::handler::Handler>> {
                self.core.change_pause(id, change).await
            }

            async fn take_probe(&self, id: i64, now_ms: i64, next_ms: i64) -> StoreResult<bool> {
                self.core.take_probe(id, now_ms, next_ms).await
            }


            async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
                self.core.next_due_ms().await
            }

            async fn settle_interrupted(
                &self,
                now_ms: i64,
                leases_ending_before: i64,
            ) -> StoreResult<u64> {
                self.core.settle_interrupted(now_ms, leases_ending_before).await
            }

            async fn get_event(
                &self,
                id: &str,
            ) -> StoreResult<Option<(provisio_core::event::Event, Vec<DeliveryRecord>)>> {
                self.core.get_event(id).await
            }

            async fn recent_events(
                &self,
                pattern: &provisio_core::catalog::EventPattern,
                limit: u32,
            ) -> StoreResult<Vec<provisio_core::event::Event>> {
                self.core.recent_events(pattern, limit).await
            }

            async fn filtered_out(&self, event_id: &str) -> StoreResult<Vec<FilteredOut>> {
                self.core.filtered_out(event_id).await
            }

            async fn waiting_behind(
                &self,
                delivery_id: &str,
                limit: u32,
            ) -> StoreResult<Vec<DeliveryRecord>> {
                self.core.waiting_behind(delivery_id, limit).await
            }

            async fn queue_stats(&self) -> StoreResult<QueueStats> {
                self.core.queue_stats().await
            }

            async fn list_executions(
                &self,
                filter: &ExecutionFilter,
                page: Page,
            ) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
                self.core.list_executions(filter, page).await
            }

            async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
                self.core.get_execution(id).await
            }

            async fn prune(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
                self.core.prune(before_ms, batch).await
            }

            async fn create_session(
                &self,
                id_hash: &[u8; 32],
                session: &SessionRecord,
            ) -> StoreResult<()> {
                self.core.create_session(id_hash, session).await
            }

            async fn find_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
                self.core.find_session(id_hash).await
            }

            async fn delete_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<()> {
                self.core.delete_session(id_hash, now_ms).await
            }
        }
    };
}
pub(crate) use impl_store;
