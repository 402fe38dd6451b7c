//! Replay jobs: the statements that start and cancel one (each backend runs
//! them inside its own transaction, PostgreSQL under the queues' advisory
//! locks: see `postgres/queue.rs`), and the reads of their progress.
//!
//! Starting a job is two statements over the same selection, written once
//! ([`push_selection`]): a count of the events that match, and an
//! `INSERT … SELECT` that queues one delivery per matching event not already
//! being replayed, in emit order. Nothing is loaded into memory, so a job
//! costs the same few round trips at any size.

use provisio_core::catalog::EventPattern;
use provisio_core::replay::{REPLAY_CANCELLED, ReplayState, ReplayStatus};
use sqlx::QueryBuilder;

use super::lines::{Line, move_lines_on};
use super::{Bind, Dialect, SqlCore};
use crate::query::{finished_states, open_states};
use crate::rows::{Columns, replay as from_row};
use crate::{NewReplay, Page, ReplayRecord, StoreError, StoreResult};

/// The ULID alphabet (Crockford's base 32).
const ULID_ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// A job's deliveries are numbered in five base-32 digits after the first 21
/// characters of the job's ULID: at most 2^25 deliveries a job.
const ID_DIGITS: u32 = 5;
pub(crate) const MAX_REPLAY: i64 = 1 << (5 * ID_DIGITS);

/// The replays' columns with their progress, counted from their deliveries
/// (index `deliveries_replay`). A job's remaining deliveries are those not
/// finished: `superseded` (a conflated delivery, replaced by a newer one of
/// its object) is final too, so a job whose deliveries were conflated still
/// comes to `done`.
fn select<DB: Dialect>() -> QueryBuilder<DB> {
    QueryBuilder::new(format!(
        "SELECT r.id, r.handler_id, r.events_id, r.object_id, r.from_at, r.to_at, r.status,
            r.latest_per_object, r.state, r.matched, r.queued, r.created_by, r.created_at,
            r.finished_at,
            (SELECT COUNT(*) FROM deliveries d WHERE d.replay_id = r.id AND d.state = 'success') AS sent,
            (SELECT COUNT(*) FROM deliveries d WHERE d.replay_id = r.id AND d.state = 'failed') AS ended_failed,
            (SELECT COUNT(*) FROM deliveries d WHERE d.replay_id = r.id AND d.state = 'failed'
                AND d.last_error = '{REPLAY_CANCELLED}') AS cancelled,
            (SELECT COUNT(*) FROM deliveries d WHERE d.replay_id = r.id
                AND NOT {}) AS remaining,
            (SELECT MAX(d.finished_at) FROM deliveries d WHERE d.replay_id = r.id) AS last_finished
         FROM replays r",
        finished_states!("d.state")
    ))
}

/// `WITH matched AS (…), fresh AS (…)`: the events the job's filter matches
/// (with their emit order `ord`; status `failed`: the latest of their
/// finished deliveries to the handler failed, so an event a running replay
/// is resending still matches), and of those the ones without an
/// unfinished delivery to the handler from a running replay. `keep` may add
/// a condition on `m` to `fresh` (PostgreSQL: only the objects whose queues
/// it locked).
fn push_selection<DB: Dialect>(
    q: &mut QueryBuilder<DB>,
    job: &NewReplay,
    keep: impl FnOnce(&mut QueryBuilder<DB>),
) {
    let f = &job.filter;
    let order = DB::EVENT_ORDER;
    q.push(format!(
        "WITH matched AS (SELECT id, object_key, ord FROM (SELECT e.id, e.object_key, {order} AS ord"
    ));
    if f.latest_per_object {
        q.push(format!(
            ", ROW_NUMBER() OVER (PARTITION BY e.object_key ORDER BY {order} DESC) AS newest"
        ));
    }
    q.push(" FROM events e WHERE e.created_at <= ")
        .bind(job.until_ms.min(f.to_ms.unwrap_or(i64::MAX)));
    if let Some(from) = f.from_ms {
        q.push(" AND e.created_at >= ").bind(from);
    }
    match &f.events_id {
        None | Some(EventPattern::All) => {}
        Some(EventPattern::Exact(id)) => {
            q.push(" AND e.events_id = ").bind(id.clone());
        }
        // A literal length: PostgreSQL would not pick `substr` for a bound
        // 64-bit integer.
        Some(EventPattern::Prefix(prefix)) => {
            q.push(format!(" AND substr(e.events_id, 1, {}) = ", prefix.len()))
                .bind(prefix.clone());
        }
    }
    if let Some(key) = &f.object_key {
        q.push(" AND e.object_key = ").bind(key.clone());
    }
    if f.status == ReplayStatus::Failed {
        q.push(
            " AND (SELECT d.state FROM deliveries d WHERE d.event_id = e.id AND d.handler_id = ",
        )
        .bind(job.handler_id)
        .push(" AND d.finished_at IS NOT NULL ORDER BY d.seq DESC LIMIT 1) = 'failed'");
    }
    q.push(") m");
    if f.latest_per_object {
        q.push(" WHERE m.newest = 1");
    }
    q.push(
        "), fresh AS (SELECT m.id, m.object_key, m.ord FROM matched m WHERE NOT EXISTS (
            SELECT 1 FROM deliveries d WHERE d.event_id = m.id AND d.handler_id = ",
    )
    .bind(job.handler_id)
    .push(format!(
        " AND d.replay_id IS NOT NULL AND {})",
        open_states!("d.state")
    ));
    keep(q);
    q.push(") ");
}

/// `substr(alphabet, digit + 1, 1) || …`: `n` in [`ID_DIGITS`] base-32 digits.
fn push_id_digits<DB: Dialect>(q: &mut QueryBuilder<DB>, n: &str) {
    for i in (0..ID_DIGITS).rev() {
        q.push(format!(
            " || substr('{ULID_ALPHABET}', CAST(({n} >> {}) & 31 AS INTEGER) + 1, 1)",
            5 * i
        ));
    }
}

impl<DB: Dialect> SqlCore<DB> {
    pub(crate) async fn get_replay(&self, id: &str) -> StoreResult<Option<ReplayRecord>> {
        let mut q = select::<DB>();
        q.push(" WHERE r.id = ").bind(id.to_owned());
        let row = q.build().fetch_optional(self.reader()).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Newest first.
    pub(crate) async fn list_replays(&self, page: Page) -> StoreResult<(Vec<ReplayRecord>, u64)> {
        let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) AS total FROM replays");
        let total = count.build().fetch_one(self.reader()).await?.int("total")?;
        let items = self
            .fetch_page(select(), "r.created_at DESC, r.id DESC", page, from_row)
            .await?;
        Ok((items, total as u64))
    }

    /// The job as its own transaction sees it.
    async fn replay_in(conn: &mut DB::Connection, id: &str) -> StoreResult<ReplayRecord> {
        let mut q = select::<DB>();
        q.push(" WHERE r.id = ").bind(id.to_owned());
        from_row(&q.build().fetch_one(DB::on(conn)).await?)
    }

    /// The objects a job would queue deliveries for: the queues PostgreSQL
    /// locks before it queues them.
    pub(crate) async fn replay_object_keys_in(
        conn: &mut DB::Connection,
        job: &NewReplay,
    ) -> StoreResult<Vec<String>> {
        let mut q = QueryBuilder::<DB>::new("");
        push_selection(&mut q, job, |_| {});
        q.push("SELECT DISTINCT object_key FROM fresh");
        q.build()
            .fetch_all(DB::on(conn))
            .await?
            .iter()
            .map(|row| row.text("object_key"))
            .collect()
    }

    /// Stores the job and queues its deliveries, inside the caller's
    /// transaction. An ordered handler's delivery waits behind any open one
    /// of its object (stored before, or earlier in this job), as an emit's
    /// does. [`StoreError::NotFound`] when the handler is gone.
    pub(crate) async fn start_replay_in(
        conn: &mut DB::Connection,
        job: &NewReplay,
        keep: impl FnOnce(&mut QueryBuilder<DB>),
    ) -> StoreResult<ReplayRecord> {
        // Makes a concurrent delete of the handler wait (PostgreSQL), so its
        // sweep of open deliveries sees the ones queued here; emits, which
        // take the same lock, go on.
        let mut q = QueryBuilder::<DB>::new("SELECT id FROM handlers WHERE id = ");
        q.bind(job.handler_id).push(DB::FOR_KEY_SHARE);
        if q.build()
            .fetch_optional(DB::on(&mut *conn))
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }

        let mut q = QueryBuilder::<DB>::new("");
        push_selection(&mut q, job, |_| {});
        q.push("SELECT COUNT(*) AS n FROM matched");
        let matched = q.build().fetch_one(DB::on(&mut *conn)).await?.int("n")?;
        if matched > MAX_REPLAY {
            return Err(StoreError::Conflict(format!(
                "the filter matches {matched} events; a replay resends at most {MAX_REPLAY}: narrow it"
            )));
        }

        let mut q = QueryBuilder::<DB>::new("");
        push_selection(&mut q, job, keep);
        q.push(
            "INSERT INTO deliveries (id, event_id, handler_id, object_key, state, next_attempt_at,
                                     created_at, replay_id)
             SELECT ",
        )
        .bind(job.id[..26 - ID_DIGITS as usize].to_owned());
        push_id_digits(&mut q, "f.n");
        q.push(", f.id, ")
            .bind(job.handler_id)
            .push(", f.object_key, ");
        if job.ordered {
            q.push("CASE WHEN f.k > 1 OR EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = ")
                .bind(job.handler_id)
                .push(format!(
                    " AND o.object_key = f.object_key AND {})
                 THEN 'waiting' ELSE 'pending' END",
                    open_states!("o.state")
                ));
        } else {
            q.push("'pending'");
        }
        q.push(", ")
            .bind(job.created_at_ms)
            .push(", ")
            .bind(job.created_at_ms)
            .push(", ")
            .bind(job.id.clone())
            .push(
                " FROM (SELECT id, object_key, ROW_NUMBER() OVER (ORDER BY ord) AS n,
                    ROW_NUMBER() OVER (PARTITION BY object_key ORDER BY ord) AS k FROM fresh) f
                 ORDER BY f.n",
            );
        let queued = DB::rows_affected(&q.build().execute(DB::on(&mut *conn)).await?);

        let f = &job.filter;
        let state = if queued == 0 {
            ReplayState::Done
        } else {
            ReplayState::Running
        };
        let mut q = QueryBuilder::<DB>::new(
            "INSERT INTO replays (id, handler_id, events_id, object_id, from_at, to_at, status,
                latest_per_object, state, matched, queued, created_by, created_at, finished_at)
             VALUES (",
        );
        let mut values = q.separated(", ");
        values
            .bind(job.id.clone())
            .bind(job.handler_id)
            .bind(f.events_id.as_ref().map(EventPattern::to_string))
            .bind(f.object_key.clone())
            .bind(f.from_ms)
            .bind(f.to_ms)
            .bind(f.status.as_str())
            .bind(f.latest_per_object)
            .bind(state.as_str())
            .bind(matched)
            .bind(queued as i64)
            .bind(job.created_by.clone())
            .bind(job.created_at_ms)
            .bind((queued == 0).then_some(job.created_at_ms));
        q.push(")");
        q.build().execute(DB::on(&mut *conn)).await?;
        Self::replay_in(conn, &job.id).await
    }

    /// The replay's handler and the objects of its unfinished deliveries, the
    /// row locked for the cancel (PostgreSQL); [`StoreError::NotFound`] when
    /// there is no such job.
    pub(crate) async fn replay_open_keys_in(
        conn: &mut DB::Connection,
        id: &str,
    ) -> StoreResult<(i64, Vec<String>)> {
        let mut q = QueryBuilder::<DB>::new("SELECT handler_id FROM replays WHERE id = ");
        q.bind(id.to_owned()).push(DB::FOR_UPDATE);
        let Some(row) = q.build().fetch_optional(DB::on(&mut *conn)).await? else {
            return Err(StoreError::NotFound);
        };
        let handler_id = row.int("handler_id")?;
        let mut q = QueryBuilder::<DB>::new(
            "SELECT DISTINCT object_key FROM deliveries WHERE replay_id = ",
        );
        q.bind(id.to_owned())
            .push(" AND ")
            .push(open_states!("state"));
        let keys = q
            .build()
            .fetch_all(DB::on(&mut *conn))
            .await?
            .iter()
            .map(|row| row.text("object_key"))
            .collect::<StoreResult<_>>()?;
        Ok((handler_id, keys))
    }

    /// Cancels a job inside the caller's transaction: its unfinished
    /// deliveries that no attempt holds fail with [`REPLAY_CANCELLED`], and in
    /// each of their objects' lines the oldest waiting delivery becomes due
    /// when nothing else open is ahead of it. Returns the job and how many
    /// deliveries became due. A job already cancelled is returned as it is;
    /// a job with nothing left to send is a [`StoreError::Conflict`].
    pub(crate) async fn cancel_replay_in(
        conn: &mut DB::Connection,
        id: &str,
        handler_id: i64,
        now: i64,
    ) -> StoreResult<(ReplayRecord, u64)> {
        let job = Self::replay_in(&mut *conn, id).await?;
        match job.state {
            ReplayState::Cancelled => return Ok((job, 0)),
            ReplayState::Done => {
                return Err(StoreError::Conflict(format!(
                    "replay {id} is done: nothing is left to cancel"
                )));
            }
            ReplayState::Running => {}
        }
        let mut q = QueryBuilder::<DB>::new(
            "UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, last_error = ",
        );
        q.bind(REPLAY_CANCELLED)
            .push(", finished_at = ")
            .bind(now)
            .push(" WHERE replay_id = ")
            .bind(id.to_owned())
            .push(format!(
                " AND {} AND lease_until IS NULL",
                open_states!("state")
            ));
        q.build().execute(DB::on(&mut *conn)).await?;

        // The lines it cancelled in move on as any line does.
        let mut q = QueryBuilder::<DB>::new(
            "SELECT DISTINCT object_key FROM deliveries WHERE replay_id = ",
        );
        q.bind(id.to_owned())
            .push(" AND finished_at = ")
            .bind(now)
            .push(" AND last_error = ")
            .bind(REPLAY_CANCELLED);
        let lines = q
            .build()
            .fetch_all(DB::on(&mut *conn))
            .await?
            .iter()
            .map(|row| Ok((handler_id, row.text("object_key")?)))
            .collect::<StoreResult<Vec<Line>>>()?;
        let released = move_lines_on::<DB>(&mut *conn, &lines, &lines, now)
            .await?
            .released;

        let mut q = QueryBuilder::<DB>::new("UPDATE replays SET state = ");
        q.bind(ReplayState::Cancelled.as_str())
            .push(", finished_at = ")
            .bind(now)
            .push(" WHERE id = ")
            .bind(id.to_owned());
        q.build().execute(DB::on(&mut *conn)).await?;
        Ok((Self::replay_in(conn, id).await?, released))
    }
}
