//! The operator views' figures: each handler's queue by state and how its
//! deliveries (or before-stage calls) ended over a window. Every statement is
//! a grouped count or a `MAX` that an index answers without reading the
//! table (migration 0013 and the partial indexes of the queue), so the cost
//! grows with the rows counted, never with the history kept. The server
//! reads them through one cached snapshot (`provisio-server/src/board.rs`).

use std::collections::HashMap;

use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore, transaction};
use crate::query::open_states;
use crate::rows::Columns;
use crate::{Figures, HandlerFigures, OutcomeBucket, StoreResult};

impl<DB: Dialect> SqlCore<DB> {
    /// In one read transaction, so the counts and times agree with each
    /// other (a delivery that finishes meanwhile is not seen both pending
    /// and succeeded).
    pub(crate) async fn handler_figures(
        &self,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Figures> {
        // Only reads: its commit changes nothing.
        transaction(&self.read, None, async |tx| {
            if !DB::SNAPSHOT_READS.is_empty() {
                QueryBuilder::<DB>::new(DB::SNAPSHOT_READS)
                    .build()
                    .execute(DB::on(&mut *tx))
                    .await?;
            }
            let mut figures = last_outcomes::<DB>(tx).await?;
            open_counts::<DB>(tx, &mut figures).await?;
            outcome_buckets::<DB>(tx, &mut figures, since_ms, bucket_ms.max(1)).await?;
            Ok(figures)
        })
        .await
    }

    /// The p95 duration of each handler's newest `sample` calls since
    /// `since_ms` (handler tests left out): a walk down `executions_handler`
    /// per handler, so the cost is bounded whatever the log holds.
    pub(crate) async fn call_p95(
        &self,
        handler_ids: &[i64],
        since_ms: i64,
        sample: u32,
    ) -> StoreResult<HashMap<i64, u32>> {
        let mut p95 = HashMap::new();
        for id in handler_ids {
            let mut q =
                QueryBuilder::<DB>::new("SELECT duration_ms FROM executions WHERE handler_id = ");
            q.bind(*id)
                .push(" AND test = false AND started_at >= ")
                .bind(since_ms)
                .push(" ORDER BY id DESC LIMIT ")
                .bind(i64::from(sample));
            let mut durations = q
                .build()
                .fetch_all(self.reader())
                .await?
                .iter()
                .map(|row| row.int("duration_ms"))
                .collect::<StoreResult<Vec<i64>>>()?;
            if durations.is_empty() {
                continue;
            }
            durations.sort_unstable();
            let rank = (durations.len() as f64 * 0.95).ceil() as usize;
            let value = durations[rank.clamp(1, durations.len()) - 1];
            p95.insert(*id, value.clamp(0, i64::from(u32::MAX)) as u32);
        }
        Ok(p95)
    }
}

/// Every handler, with when it last succeeded and failed: one index seek
/// per handler and question (`deliveries_outcome`, `executions_failed`,
/// `executions_before`). Each state test repeats its partial index's
/// condition, which SQLite needs to use it.
async fn last_outcomes<DB: Dialect>(conn: &mut DB::Connection) -> StoreResult<Figures> {
    let mut q = QueryBuilder::<DB>::new(
        "SELECT h.id AS handler_id, h.paused_reason,
            (SELECT MAX(d.finished_at) FROM deliveries d WHERE d.handler_id = h.id
                AND d.state IN ('success', 'failed') AND d.state = 'success') AS delivered,
            (SELECT MAX(d.finished_at) FROM deliveries d WHERE d.handler_id = h.id
                AND d.state IN ('success', 'failed') AND d.state = 'failed') AS undelivered,
            (SELECT MAX(e.started_at) FROM executions e WHERE e.handler_id = h.id
                AND e.status = 'fail' AND e.test = false) AS call_failed,
            (SELECT MAX(e.started_at) FROM executions e WHERE e.handler_id = h.id
                AND e.stage = 'before' AND e.test = false AND e.status = 'success') AS call_succeeded
         FROM handlers h",
    );
    let mut figures = HashMap::new();
    for row in q.build().fetch_all(DB::on(&mut *conn)).await? {
        let latest = |a: Option<i64>, b: Option<i64>| a.max(b);
        figures.insert(
            row.int("handler_id")?,
            HandlerFigures {
                last_success_ms: latest(row.opt_int("delivered")?, row.opt_int("call_succeeded")?),
                last_failure_ms: latest(row.opt_int("undelivered")?, row.opt_int("call_failed")?),
                paused: row.opt_text("paused_reason")?.is_some(),
                ..HandlerFigures::default()
            },
        );
    }
    Ok(figures)
}

/// Counted in one ordered pass over `deliveries_open`, which holds the
/// handler, the state and the emit order (migration 0013); the oldest
/// delivery is then found by its `seq`.
async fn open_counts<DB: Dialect>(
    conn: &mut DB::Connection,
    figures: &mut Figures,
) -> StoreResult<()> {
    let mut q = QueryBuilder::<DB>::new(
        "SELECT handler_id,
            SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending,
            SUM(CASE WHEN state = 'waiting' THEN 1 ELSE 0 END) AS waiting,
            SUM(CASE WHEN state = 'blocked' THEN 1 ELSE 0 END) AS blocked,
            MIN(seq) AS first
         FROM deliveries WHERE ",
    );
    q.push(open_states!("state")).push(" GROUP BY handler_id");
    let mut first: HashMap<i64, i64> = HashMap::new();
    for row in q.build().fetch_all(DB::on(&mut *conn)).await? {
        let handler_id = row.int("handler_id")?;
        let Some(f) = figures.get_mut(&handler_id) else {
            continue; // a handler deleted since (its deliveries are failed)
        };
        let count = |column| row.int(column).map(|n| n.max(0) as u64);
        f.open.pending = count("pending")?;
        f.open.waiting = count("waiting")?;
        f.open.blocked = count("blocked")?;
        first.insert(handler_id, row.int("first")?);
    }
    if first.is_empty() {
        return Ok(());
    }
    let mut q =
        QueryBuilder::<DB>::new("SELECT handler_id, created_at FROM deliveries WHERE seq IN (");
    let mut list = q.separated(", ");
    for seq in first.values() {
        list.bind(*seq);
    }
    q.push(")");
    for row in q.build().fetch_all(DB::on(&mut *conn)).await? {
        if let Some(f) = figures.get_mut(&row.int("handler_id")?) {
            f.open.oldest_created_ms = Some(row.int("created_at")?);
        }
    }
    Ok(())
}

/// Outcomes since `since_ms` per handler and bucket: finished deliveries
/// (`deliveries_outcome`: handler, state, finished_at) and before-stage
/// calls (`executions_before`: handler, status, started_at), each a range
/// of an index per handler.
async fn outcome_buckets<DB: Dialect>(
    conn: &mut DB::Connection,
    figures: &mut Figures,
    since_ms: i64,
    bucket_ms: i64,
) -> StoreResult<()> {
    let mut q = QueryBuilder::<DB>::new("SELECT d.handler_id, (d.finished_at / ");
    q.bind(bucket_ms)
        .push(") * ")
        .bind(bucket_ms)
        .push(
            " AS bucket, d.state = 'success' AS ok, 0 AS refused, COUNT(*) AS n
             FROM handlers h CROSS JOIN deliveries d WHERE d.handler_id = h.id
                AND d.state IN ('success', 'failed') AND d.finished_at >= ",
        )
        .bind(since_ms)
        .push(" GROUP BY d.handler_id, bucket, ok UNION ALL SELECT e.handler_id, (e.started_at / ")
        .bind(bucket_ms)
        .push(") * ")
        .bind(bucket_ms)
        .push(
            " AS bucket, e.status = 'success' AS ok,
                SUM(CASE WHEN e.verdict = 'forbidden' THEN 1 ELSE 0 END) AS refused, COUNT(*) AS n
             FROM handlers h CROSS JOIN executions e WHERE e.handler_id = h.id
                AND e.stage = 'before' AND e.test = false
                AND e.status IN ('success', 'fail') AND e.started_at >= ",
        )
        .bind(since_ms)
        .push(" GROUP BY e.handler_id, bucket, ok");
    let mut buckets: HashMap<i64, Vec<OutcomeBucket>> = HashMap::new();
    for row in q.build().fetch_all(DB::on(&mut *conn)).await? {
        let start_ms = row.int("bucket")?;
        let n = row.int("n")?.max(0) as u64;
        let list = buckets.entry(row.int("handler_id")?).or_default();
        let at = match list.iter().position(|b| b.start_ms == start_ms) {
            Some(i) => i,
            None => {
                list.push(OutcomeBucket {
                    start_ms,
                    succeeded: 0,
                    forbidden: 0,
                    failed: 0,
                });
                list.len() - 1
            }
        };
        list[at].forbidden += row.int("refused")?.max(0) as u64;
        if row.flag("ok")? {
            list[at].succeeded += n;
        } else {
            list[at].failed += n;
        }
    }
    for (handler_id, mut list) in buckets {
        if let Some(f) = figures.get_mut(&handler_id) {
            list.sort_by_key(|b| b.start_ms);
            f.buckets = list;
        }
    }
    Ok(())
}
