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
//!   redeliver (`queue.rs`; redeliver and skip in `shared/lines.rs`).
//! - Changes reach every node through `LISTEN/NOTIFY`: triggers announce
//!   handler and catalog changes on `provisio_routes`; emits and redelivers
//!   announce new work on `provisio_work` ([`PgStore::watch`]), with the
//!   sending node's id as the payload: a node has woken its own dispatcher
//!   already and ignores its own announcements.
//!
//! Every commit is durable when it returns (PostgreSQL's default
//! `synchronous_commit = on`), so an accepted emit survives a crash of the
//! database server too; all but a record batch's, whose loss costs a
//! delivery sent again (`queue::RECORD_TX`).

/// The earliest due time of the running handlers' due work, a seek of
/// the mirror's primary key per handler: [`Dialect::NEXT_DUE`], and in the
/// claim with one condition more (`$also`: not the rows it just leased).
macro_rules! next_due {
    ($($also:literal)?) => {
        concat!(
            "SELECT MIN((SELECT MIN(w.next_attempt_at) FROM due_deliveries w
                         WHERE w.handler_id = h.id", $(" AND ", $also,)? ")) AS due
             FROM handlers h WHERE h.paused_reason IS NULL"
        )
    };
}

mod functions;
mod queue;
mod replays;
#[cfg(feature = "test-support")]
pub mod scratch;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};
use tokio::sync::mpsc;

use crate::shared::{Dialect, SqlCore};
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The notification channel for handler and catalog changes (sent by triggers).
const ROUTES_CHANNEL: &str = "provisio_routes";
/// The notification channel for new due work.
const WORK_CHANNEL: &str = "provisio_work";
/// The session setting that holds a node's id on each of its connections,
/// which its work announcements carry (`current_setting`), so the node can
/// tell its own from other nodes'.
const NODE_SETTING: &str = "provisio.node";

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

impl Dialect for Postgres {
    const LIKE: &'static str = "ILIKE";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_KEY_SHARE: &'static str = " FOR KEY SHARE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const BYTE_ORDER: &'static str = r#" COLLATE "C""#;
    const EVENT_ORDER: &'static str = "e.seq";
    const SNAPSHOT_READS: &'static str =
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    const NEXT_DUE: &'static str = next_due!();

    fn push_lapsed(q: &mut QueryBuilder<Postgres>, ending_before: i64) {
        // The keys found in the mirror of due work, then sought in
        // `deliveries` by `seq`: an array, so no join whose method follows
        // the estimates (a hash join would read all of `deliveries`).
        q.push(
            "seq = ANY(ARRAY(SELECT w.seq FROM due_deliveries w
               WHERE w.handler_id IN (SELECT id FROM handlers) AND w.next_attempt_at < ",
        )
        .push_bind(ending_before)
        .push(" AND w.lease_until < ")
        .push_bind(ending_before)
        .push("))");
    }

    type Writer = PgPool;
    type WriteGuard<'w> = PoolConnection<Postgres>;

    async fn writer(pool: &PgPool) -> StoreResult<PoolConnection<Postgres>> {
        Ok(pool.acquire().await?)
    }

    async fn write_tx<T>(
        pool: &PgPool,
        work: impl AsyncFnOnce(&mut PgConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        crate::shared::transaction(pool, None, work).await
    }

    async fn lock_lines(
        conn: &mut PgConnection,
        lines: &[crate::shared::lines::Line],
    ) -> StoreResult<()> {
        queue::lock_lines(conn, lines).await
    }

    async fn release_lines(
        conn: &mut PgConnection,
        lines: &[crate::shared::lines::Line],
        now: i64,
    ) -> StoreResult<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        let (handlers, objects): (Vec<i64>, Vec<String>) = lines.iter().cloned().unzip();
        let released: i64 = sqlx::query_scalar("SELECT pg_temp.provisio_release($1, $2, $3)")
            .bind(handlers)
            .bind(objects)
            .bind(now)
            .fetch_one(conn)
            .await?;
        Ok(u64::try_from(released).unwrap_or_default())
    }

    async fn announce_work(conn: &mut PgConnection) -> StoreResult<()> {
        notify_work(conn).await
    }
}

#[derive(Clone)]
pub struct PgStore {
    /// One pool serves reads and writes (`core.read` and `core.write` are
    /// the same pool).
    core: SqlCore<Postgres>,
    /// The queue's own connections, for the dispatcher's emits and claims
    /// and the recorder's batches: two of `max_connections` (one with
    /// three; with two, `core`'s pool). sqlx gives a pool's idle connections
    /// out oldest first, so at low rates every transaction went to the next
    /// of up to ten backends, each with cold caches: PostgreSQL spent
    /// ~10 % more CPU per event at 200/s than with two (issue 15).
    queue: PgPool,
    /// This node's id, set on every connection of its pool ([`NODE_SETTING`]).
    node: Arc<str>,
    /// When `due_deliveries` is vacuumed next ([`PgStore::finished`]).
    tidy: Arc<Tidy>,
}

impl PgStore {
    /// Connects and applies the migrations (concurrent starts are safe: the
    /// migrator holds an advisory lock while it runs).
    pub async fn connect(settings: &PgSettings) -> StoreResult<Self> {
        let store = Self::connect_unmigrated(settings).await?;
        MIGRATOR.run(&store.core.write).await?;
        Ok(store)
    }

    /// Connects without touching the schema.
    pub async fn connect_unmigrated(settings: &PgSettings) -> StoreResult<Self> {
        let node: Arc<str> = ulid::Ulid::new().to_string().into();
        let options = PgConnectOptions::from_str(&settings.url)?
            .application_name("provisio")
            .options([
                (
                    "statement_timeout",
                    format!("{}ms", settings.statement_timeout.as_millis()),
                ),
                (NODE_SETTING, node.to_string()),
            ]);
        let pool_options = |max: u32| {
            PgPoolOptions::new()
                // A ping before every use is a round trip to PostgreSQL for
                // each statement; a connection busy a moment ago is known to
                // work. One idle for a while (PostgreSQL may have restarted
                // meanwhile) is still pinged, so a stale one is replaced
                // instead of failing a request.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for > Duration::from_secs(1) {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .after_connect(|conn, _| Box::pin(open_session(conn)))
                .max_connections(max)
                .acquire_timeout(settings.acquire_timeout)
        };
        // The change listener holds one of the main pool's connections for
        // good, so that pool keeps two at least.
        let queue_max = settings.max_connections.saturating_sub(2).min(2);
        let main_max = settings.max_connections - queue_max;
        let pools = async {
            let main = pool_options(main_max).connect_with(options.clone()).await?;
            let queue = if queue_max == 0 {
                main.clone()
            } else {
                pool_options(queue_max).connect_lazy_with(options.clone())
            };
            Ok::<_, sqlx::Error>((main, queue))
        };
        match pools.await {
            Ok((pool, queue)) => Ok(Self {
                core: SqlCore {
                    write: pool.clone(),
                    read: pool,
                },
                queue,
                node,
                tidy: Arc::default(),
            }),
            // The pool reports only that it timed out; one direct attempt
            // tells why (refused, unknown host, bad password, no database,
            // no right to create the session's functions).
            Err(err) => match PgConnection::connect_with(&options).await {
                Err(cause) => Err(cause.into()),
                Ok(mut conn) => match open_session(&mut conn).await {
                    Err(cause) => Err(cause.into()),
                    Ok(()) => Err(err.into()),
                },
            },
        }
    }

    /// Counts `finished` deliveries recorded by this node and, once enough
    /// have been since the last vacuum of `due_deliveries` (and not too
    /// soon after it), vacuums it in the background (migration 0016: each
    /// delivery leaves two dead entries in its index, which claims step
    /// over until a vacuum takes them away). Autovacuum would come within
    /// a minute or so (the table's own thresholds); this keeps a drain's
    /// dead entries from burdening the claims for that long, and does not
    /// depend on autovacuum having a free worker. A vacuum of this table
    /// costs what the backlog is, however large the log has grown; another
    /// node's vacuum in progress is not waited for (`SKIP_LOCKED`).
    pub(crate) fn finished(&self, finished: usize) {
        if !self.tidy.due(finished, Instant::now()) {
            return;
        }
        let pool = self.core.write.clone();
        let tidy = self.tidy.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match sqlx::raw_sql("VACUUM (SKIP_LOCKED) due_deliveries")
                .execute(&pool)
                .await
            {
                Ok(_) => tracing::debug!(took = ?started.elapsed(), "vacuumed due_deliveries"),
                Err(err) => tracing::warn!(error = %err, "could not vacuum due_deliveries"),
            }
            tidy.done();
        });
    }

    /// Closes every connection, waiting for queries in progress.
    pub async fn close(&self) {
        self.queue.close().await;
        self.core.write.close().await;
    }
}

crate::shared::impl_store!(PgStore {
    fn single_node(&self) -> bool {
        false
    }

    fn watch(&self) -> Option<mpsc::Receiver<StoreChange>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(listen(self.core.write.clone(), self.node.clone(), tx));
        Some(rx)
    }
});

/// Deliveries a node records before it vacuums `due_deliveries`
/// ([`PgStore::finished`]), at most once every five seconds: at ordinary
/// rates a vacuum every five seconds of a table of a few rows, a
/// millisecond; after a drain, the vacuum that clears it within five
/// seconds of its end.
pub const VACUUM_DUE_AFTER: u64 = 1_000;

/// When [`PgStore::finished`] vacuums `due_deliveries`.
#[derive(Default)]
struct Tidy(std::sync::Mutex<TidyState>);

#[derive(Default)]
struct TidyState {
    /// Deliveries recorded since the last vacuum began.
    finished: u64,
    /// When the last vacuum began; `None` before the first.
    last: Option<Instant>,
    /// Whether a vacuum runs now.
    running: bool,
}

impl Tidy {
    /// The least time between two vacuums: during a long drain the table
    /// still holds the backlog, and each vacuum reads its whole index (a
    /// million rows left and 20,000 changed: 40-50 ms on this machine).
    const EVERY: Duration = Duration::from_secs(5);

    /// Counts `n` deliveries recorded at `now`; true when a vacuum should
    /// start now (it is then marked running until [`Tidy::done`]).
    fn due(&self, n: usize, now: Instant) -> bool {
        let mut state = self.0.lock().expect("tidy lock poisoned");
        state.finished += n as u64;
        if state.running
            || state.finished < VACUUM_DUE_AFTER
            || state.last.is_some_and(|at| now < at + Self::EVERY)
        {
            return false;
        }
        *state = TidyState {
            finished: 0,
            last: Some(now),
            running: true,
        };
        true
    }

    fn done(&self) {
        self.0.lock().expect("tidy lock poisoned").running = false;
    }
}

/// The change feed behind [`PgStore::watch`]: a `LISTEN` connection that is
/// re-established, with backoff, whenever it is lost. Notifications sent
/// while it was down are gone, so every (re)connection is announced as
/// [`StoreChange::Resync`]. Announcements of work this node made itself
/// (`node` in the payload) are passed over: it woke its own dispatcher when
/// it made them. Ends when the receiver is dropped.
async fn listen(pool: PgPool, node: Arc<str>, tx: mpsc::Sender<StoreChange>) {
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
                Ok(Some(n)) if n.payload() == &*node => continue,
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

/// Readies a new connection: the queue's functions
/// (`functions::SESSION_FUNCTIONS`), in its temporary schema.
async fn open_session(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(functions::SESSION_FUNCTIONS)
        .execute(conn)
        .await
        .map(drop)
}

/// Announces new due work to every node's dispatcher (delivered at commit),
/// signed with this connection's node id.
async fn notify_work(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, current_setting($2, true))")
        .bind(WORK_CHANNEL)
        .bind(NODE_SETTING)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_vacuumed_after_enough_deliveries_and_never_twice_at_once_or_too_often() {
        let tidy = Tidy::default();
        let start = Instant::now();
        let after = VACUUM_DUE_AFTER as usize;
        assert!(!tidy.due(after - 1, start), "too few yet");
        assert!(
            tidy.due(1, start),
            "the first comes as soon as enough are recorded"
        );
        assert!(!tidy.due(after, start + Tidy::EVERY), "one runs already");
        tidy.done();
        // The count restarted when the vacuum began: `after` are recorded
        // since, but too soon after it.
        assert!(!tidy.due(0, start + Tidy::EVERY / 2));
        assert!(tidy.due(0, start + Tidy::EVERY));
        tidy.done();
        assert!(
            !tidy.due(after - 1, start + Tidy::EVERY * 5),
            "too few since"
        );
        assert!(tidy.due(1, start + Tidy::EVERY * 5));
    }
}
