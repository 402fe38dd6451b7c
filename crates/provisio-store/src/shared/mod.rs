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
//! - `store_impl`: [`impl_store!`], the `Store` trait mapped onto a backend.
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
mod store_impl;
mod tokens;
mod upkeep;

pub(crate) use store_impl::impl_store;

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
/// Runs `work` in a transaction on a connection of `pool`, begun with
/// `begin` (or a plain BEGIN) and committed at the end.
///
/// A caller cancelled before the end (an API request whose client went
/// away) leaves the connection closed rather than given back. sqlx's
/// `begin` counts a transaction only once its BEGIN has answered, so a
/// caller dropped while the BEGIN was in flight gave the pool a connection
/// the server held inside a transaction; the next caller's single-statement
/// writes then sat in it uncommitted and unseen by every other connection
/// (the store story `cancel` caught a new handler that emits could not see).
pub(crate) async fn transaction<DB: Database, T>(
    pool: &Pool<DB>,
    begin: Option<&'static str>,
    work: impl AsyncFnOnce(&mut DB::Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    /// Closes its connection when dropped before the end.
    struct Held<DB: Database> {
        conn: sqlx::pool::PoolConnection<DB>,
        finished: bool,
    }
    impl<DB: Database> Drop for Held<DB> {
        fn drop(&mut self) {
            if !self.finished {
                self.conn.close_on_drop();
            }
        }
    }

    let mut held = Held {
        conn: pool.acquire().await?,
        finished: false,
    };
    let result = async {
        let mut tx = match begin.map(sqlx::SqlStr::from_static) {
            Some(statement) => sqlx::Connection::begin_with(&mut *held.conn, statement).await?,
            None => sqlx::Connection::begin(&mut *held.conn).await?,
        };
        let value = work(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
    .await;
    held.finished = true;
    result
}

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
    /// When the next pending delivery of a running (not paused) handler
    /// becomes due or its lease lapses, as one row with the column `due`:
    /// a seek per running handler in the index of due work, which SQLite
    /// keeps on `deliveries` and PostgreSQL in `due_deliveries`.
    const NEXT_DUE: &'static str;

    /// Pushes the condition, after `WHERE state = 'pending' AND lease_until
    /// < ending_before AND`, that finds pending deliveries whose lease
    /// ended before `ending_before` without a scan: a lease moves
    /// `next_attempt_at` to its end, so a lapsed one is among its handler's
    /// due work, sought per existing handler where each backend keeps it
    /// (a deleted handler's open deliveries were failed by its deletion:
    /// none is pending).
    fn push_lapsed(q: &mut QueryBuilder<Self>, ending_before: i64);

    /// Where writes go: PostgreSQL's pool; SQLite's one write connection.
    type Writer: Clone + Send + Sync;
    /// A write connection while one caller holds it.
    type WriteGuard<'w>: DerefMut<Target = Self::Connection> + Send
    where
        Self: 'w;

    /// A write connection, for statements outside a transaction: one from
    /// PostgreSQL's pool; SQLite's one connection, once no one else holds it.
    fn writer(writer: &Self::Writer) -> impl Future<Output = StoreResult<Self::WriteGuard<'_>>>;

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

    /// Inside a write transaction holding the lines' locks, lets the next
    /// delivery of each of `lines` go where nothing of the line is pending
    /// or blocked any more ([`lines::push_release`]'s rows); returns how
    /// many went. SQLite runs that `UPDATE`; PostgreSQL a statement per
    /// line in one call (`pg_temp.provisio_release`), whose plans seek keys
    /// however the table has grown since they were made.
    fn release_lines(
        conn: &mut Self::Connection,
        lines: &[lines::Line],
        now: i64,
    ) -> impl Future<Output = StoreResult<u64>>;

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
    async fn writer(&self) -> StoreResult<DB::WriteGuard<'_>> {
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
