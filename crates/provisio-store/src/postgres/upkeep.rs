//! Monitoring, the overview, retention and web sessions on PostgreSQL.

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::now_ms;
use crate::*;

pub(super) async fn queue_stats(pool: &PgPool) -> StoreResult<QueueStats> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS unfinished, MIN(created_at) AS oldest FROM deliveries
         WHERE state IN ('pending', 'waiting')",
    )
    .fetch_one(pool)
    .await?;
    Ok(QueueStats {
        unfinished: row.try_get::<i64, _>("unfinished")? as u64,
        oldest_created_ms: row.try_get("oldest")?,
    })
}

pub(super) async fn activity(
    pool: &PgPool,
    since_ms: i64,
    bucket_ms: i64,
) -> StoreResult<Vec<HandlerActivity>> {
    let rows = sqlx::query(
        "SELECT handler_id, (started_at / $1) * $1 AS bucket,
                COUNT(*) FILTER (WHERE status = 'success') AS successes,
                COUNT(*) FILTER (WHERE status = 'fail') AS failures
         FROM executions WHERE started_at >= $2
         GROUP BY handler_id, bucket ORDER BY handler_id, bucket",
    )
    .bind(bucket_ms.max(1))
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    let mut out = crate::rows::activity(&rows)?;
    let p95s = sqlx::query(
        "SELECT handler_id, percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95
         FROM executions WHERE started_at >= $1 GROUP BY handler_id",
    )
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    for row in p95s {
        let handler_id: i64 = row.try_get("handler_id")?;
        let p95: Option<i64> = row.try_get("p95")?;
        if let Some(a) = out.iter_mut().find(|a| a.handler_id == handler_id) {
            a.p95_ms = p95.map(|v| v.clamp(0, i64::from(u32::MAX)) as u32);
        }
    }
    Ok(out)
}

pub(super) async fn prune(pool: &PgPool, before_ms: i64, batch: u32) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let limit = i64::from(batch);
    let mut removed = 0;
    removed += sqlx::query(
        "DELETE FROM executions WHERE id IN
            (SELECT id FROM executions WHERE started_at < $1 ORDER BY started_at LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Only this node's finished rows are touched; SKIP LOCKED keeps two nodes
    // pruning at once from waiting on each other.
    removed += sqlx::query(
        "DELETE FROM deliveries WHERE seq IN
            (SELECT seq FROM deliveries WHERE state IN ('success', 'failed') AND finished_at < $1
             ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Event ids are ULIDs, so "older than" is a range of the primary key (in
    // byte order, whatever the database's collation).
    let oldest_kept = ulid::Ulid::from_parts(before_ms.max(0) as u64, 0).to_string();
    removed += sqlx::query(
        r#"DELETE FROM events WHERE id IN
            (SELECT e.id FROM events e WHERE e.id COLLATE "C" < $1
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
             ORDER BY e.id COLLATE "C" LIMIT $2)"#,
    )
    .bind(oldest_kept)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let now = now_ms();
    removed += sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(now - IDEMPOTENCY_WINDOW_MS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    removed += sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(removed)
}

pub(super) async fn create_session(
    pool: &PgPool,
    id_hash: &[u8; 32],
    session: &SessionRecord,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO web_sessions (id_hash, token_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id_hash[..])
        .bind(session.token_id)
        .bind(&session.csrf)
        .bind(now_ms())
        .bind(session.expires_at_ms)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn find_session(
    pool: &PgPool,
    id_hash: &[u8; 32],
) -> StoreResult<Option<SessionRecord>> {
    let row = sqlx::query(
        "SELECT s.token_id, s.csrf, s.expires_at FROM web_sessions s
         JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL
         WHERE s.id_hash = $1",
    )
    .bind(&id_hash[..])
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(SessionRecord {
            token_id: row.try_get("token_id")?,
            csrf: row.try_get("csrf")?,
            expires_at_ms: row.try_get("expires_at")?,
        })
    })
    .transpose()
}

pub(super) async fn delete_session(
    pool: &PgPool,
    id_hash: &[u8; 32],
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1 OR expires_at < $2")
        .bind(&id_hash[..])
        .bind(now_ms)
        .execute(pool)
        .await?;
    Ok(())
}
