//! API tokens, stored as SHA-256 hashes.

use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::rows::token as from_row;
use crate::{
    StoreError, StoreResult, TokenHash, TokenRecord, TokenRef, conflict_on_unique, now_ms,
};

const SELECT: &str = "SELECT id, name, hash, created_at, revoked_at FROM api_tokens";

impl<DB: Dialect> SqlCore<DB> {
    pub(crate) async fn create_token(
        &self,
        name: &str,
        hash: &TokenHash,
    ) -> StoreResult<TokenRecord> {
        let row = insert(name, hash, now_ms())
            .build()
            .fetch_one(DB::on(&mut *self.writer().await?))
            .await
            .map_err(|e| conflict_on_unique(e, || format!("a live token named {name} exists")))?;
        from_row(&row)
    }

    /// Revokes the live token of that name unless it already has this hash,
    /// then stores the new one, in one transaction. Two PostgreSQL nodes
    /// starting at once with the same `PROVISIO_ADMIN_TOKEN` serialize on the
    /// row lock of the live token; the one that waited finds the row revoked,
    /// and its insert then clashes with the winner's. One retry sees the
    /// winner's row, which already has this hash, so neither node fails its
    /// start.
    pub(crate) async fn put_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
        match self.put_token_once(name, hash).await {
            Err(StoreError::Conflict(_)) => self.put_token_once(name, hash).await,
            done => done,
        }
    }

    async fn put_token_once(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
        DB::write_tx(&self.write, async |tx| {
            let now = now_ms();
            let mut q = QueryBuilder::<DB>::new(SELECT);
            q.push(" WHERE name = ")
                .bind(name.to_owned())
                .push(" AND revoked_at IS NULL")
                .push(DB::FOR_UPDATE);
            let live = q.build().fetch_optional(DB::on(&mut *tx)).await?;
            match live.as_ref().map(from_row).transpose()? {
                Some(record) if record.hash.ct_eq(hash) => return Ok(record),
                Some(record) => {
                    revoke(TokenRef::Id(record.id), now)
                        .build()
                        .execute(DB::on(&mut *tx))
                        .await?;
                }
                None => {}
            }
            let row = insert(name, hash, now)
                .build()
                .fetch_one(DB::on(&mut *tx))
                .await
                .map_err(|e| {
                    conflict_on_unique(e, || "that token is already live under another name".into())
                })?;
            from_row(&row)
        })
        .await
    }

    pub(crate) async fn find_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let mut q = QueryBuilder::<DB>::new(SELECT);
        q.push(" WHERE hash = ")
            .bind(hash.0.to_vec())
            .push(" AND revoked_at IS NULL");
        let row = q.build().fetch_optional(self.reader()).await?;
        row.as_ref().map(from_row).transpose()
    }

    pub(crate) async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let mut q = QueryBuilder::<DB>::new(SELECT);
        q.push(" ORDER BY id");
        q.build()
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    pub(crate) async fn revoke_token(&self, token: TokenRef<'_>) -> StoreResult<bool> {
        let done = revoke(token, now_ms())
            .build()
            .execute(DB::on(&mut *self.writer().await?))
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}

fn insert<DB: Dialect>(name: &str, hash: &TokenHash, now: i64) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new("INSERT INTO api_tokens (name, hash, created_at) VALUES (");
    q.bind(name.to_owned())
        .push(", ")
        .bind(hash.0.to_vec())
        .push(", ")
        .bind(now)
        .push(") RETURNING id, name, hash, created_at, revoked_at");
    q
}

/// Revokes the live token `token` names.
fn revoke<DB: Dialect>(token: TokenRef<'_>, now: i64) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new("UPDATE api_tokens SET revoked_at = ");
    q.bind(now).push(" WHERE revoked_at IS NULL AND ");
    match token {
        TokenRef::Id(id) => q.push("id = ").bind(id),
        TokenRef::Name(name) => q.push("name = ").bind(name.to_owned()),
    };
    q
}
