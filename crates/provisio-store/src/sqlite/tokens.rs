//! API tokens, stored as SHA-256 hashes.

use sqlx::sqlite::SqlitePool;

use super::{conflict_on_unique, now_ms};
use crate::rows::token as from_row;
use crate::{StoreResult, TokenHash, TokenRecord, TokenRef};

pub(super) async fn create(
    pool: &SqlitePool,
    name: &str,
    hash: &TokenHash,
) -> StoreResult<TokenRecord> {
    let row = sqlx::query(
        "INSERT INTO api_tokens (name, hash, created_at) VALUES (?, ?, ?)
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

pub(super) async fn put(
    pool: &SqlitePool,
    name: &str,
    hash: &TokenHash,
) -> StoreResult<TokenRecord> {
    let mut tx = pool.begin().await?;
    let now = now_ms();
    let existing = sqlx::query("SELECT id, name, hash, created_at, revoked_at FROM api_tokens WHERE name = ? AND revoked_at IS NULL")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = existing {
        let record = from_row(&row)?;
        if record.hash.ct_eq(hash) {
            tx.commit().await?;
            return Ok(record);
        }
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ?")
            .bind(now)
            .bind(record.id)
            .execute(&mut *tx)
            .await?;
    }
    let row = sqlx::query(
        "INSERT INTO api_tokens (name, hash, created_at) VALUES (?, ?, ?)
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

pub(super) async fn find(pool: &SqlitePool, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
    let row = sqlx::query("SELECT id, name, hash, created_at, revoked_at FROM api_tokens WHERE hash = ? AND revoked_at IS NULL")
        .bind(&hash.0[..])
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn list(pool: &SqlitePool) -> StoreResult<Vec<TokenRecord>> {
    let rows =
        sqlx::query("SELECT id, name, hash, created_at, revoked_at FROM api_tokens ORDER BY id")
            .fetch_all(pool)
            .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn revoke(pool: &SqlitePool, token: TokenRef<'_>) -> StoreResult<bool> {
    let query = match token {
        TokenRef::Id(id) => {
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE revoked_at IS NULL AND id = ?")
                .bind(now_ms())
                .bind(id)
        }
        TokenRef::Name(name) => sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE revoked_at IS NULL AND name = ?",
        )
        .bind(now_ms())
        .bind(name),
    };
    Ok(query.execute(pool).await?.rows_affected() > 0)
}
