//! API tokens, stored as SHA-256 hashes.

use sqlx::postgres::PgPool;

use super::{conflict_on_unique, now_ms};
use crate::rows::token as from_row;
use crate::{StoreError, StoreResult, TokenHash, TokenRecord, TokenRef};

pub(super) async fn create(
    pool: &PgPool,
    name: &str,
    hash: &TokenHash,
) -> StoreResult<TokenRecord> {
    let row = sqlx::query(
        "INSERT INTO api_tokens (name, hash, created_at) VALUES ($1, $2, $3)
         RETURNING id, name, hash, created_at, revoked_at",
    )
    .bind(name)
    .bind(&hash.0[..])
    .bind(now_ms())
    .fetch_one(pool)
    .await
    .map_err(|e| conflict_on_unique(e, || format!("a live token named {name} exists")))?;
    from_row(&row)
}

/// Revokes the live token of that name unless it already has this hash, then
/// stores the new one, in one transaction. Two nodes starting at once with the
/// same `PROVISIO_ADMIN_TOKEN` serialize on the row lock of the live token; the
/// one that waited finds the row revoked, and its insert then clashes with the
/// winner's. One retry sees the winner's row, which already has this hash, so
/// neither node fails its start.
pub(super) async fn put(pool: &PgPool, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
    match put_once(pool, name, hash).await {
        Err(StoreError::Conflict(_)) => put_once(pool, name, hash).await,
        done => done,
    }
}

async fn put_once(pool: &PgPool, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
    let mut tx = pool.begin().await?;
    let now = now_ms();
    let live = sqlx::query(
        "SELECT id, name, hash, created_at, revoked_at FROM api_tokens
         WHERE name = $1 AND revoked_at IS NULL FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()?;
    match live {
        Some(record) if record.hash.ct_eq(hash) => {
            tx.commit().await?;
            return Ok(record);
        }
        Some(record) => {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(record.id)
                .execute(&mut *tx)
                .await?;
        }
        None => {}
    }
    let row = sqlx::query(
        "INSERT INTO api_tokens (name, hash, created_at) VALUES ($1, $2, $3)
         RETURNING id, name, hash, created_at, revoked_at",
    )
    .bind(name)
    .bind(&hash.0[..])
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        conflict_on_unique(e, || "that token is already live under another name".into())
    })?;
    tx.commit().await?;
    from_row(&row)
}

pub(super) async fn find(pool: &PgPool, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
    sqlx::query(
        "SELECT id, name, hash, created_at, revoked_at FROM api_tokens
         WHERE hash = $1 AND revoked_at IS NULL",
    )
    .bind(&hash.0[..])
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub(super) async fn list(pool: &PgPool) -> StoreResult<Vec<TokenRecord>> {
    sqlx::query("SELECT id, name, hash, created_at, revoked_at FROM api_tokens ORDER BY id")
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub(super) async fn revoke(pool: &PgPool, token: TokenRef<'_>) -> StoreResult<bool> {
    let query = match token {
        TokenRef::Id(id) => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND id = $2",
        )
        .bind(now_ms())
        .bind(id),
        TokenRef::Name(name) => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND name = $2",
        )
        .bind(now_ms())
        .bind(name),
    };
    Ok(query.execute(pool).await?.rows_affected() > 0)
}
