//! Web sessions: only the hash of a session's id is stored.

use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::rows::Columns;
use crate::{SessionRecord, StoreResult, now_ms};

impl<DB: Dialect> SqlCore<DB> {
    pub(crate) async fn create_session(
        &self,
        id_hash: &[u8; 32],
        session: &SessionRecord,
    ) -> StoreResult<()> {
        let mut q = QueryBuilder::<DB>::new(
            "INSERT INTO web_sessions (id_hash, token_id, csrf, created_at, expires_at) ",
        );
        q.push_values([session], |mut row, s| {
            row.bind(id_hash.to_vec())
                .bind(s.token_id)
                .bind(s.csrf.clone())
                .bind(now_ms())
                .bind(s.expires_at_ms);
        });
        q.build()
            .execute(DB::on(&mut *self.writer().await?))
            .await?;
        Ok(())
    }

    /// The session with this id whose token is still live.
    pub(crate) async fn find_session(
        &self,
        id_hash: &[u8; 32],
    ) -> StoreResult<Option<SessionRecord>> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT s.token_id, t.name AS token_name, s.csrf, s.expires_at FROM web_sessions s
             JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL
             WHERE s.id_hash = ",
        );
        q.bind(id_hash.to_vec());
        let row = q.build().fetch_optional(self.reader()).await?;
        row.map(|row| {
            Ok(SessionRecord {
                token_id: row.int("token_id")?,
                token_name: row.text("token_name")?,
                csrf: row.text("csrf")?,
                expires_at_ms: row.int("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a session, and drops every expired one.
    pub(crate) async fn delete_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<()> {
        let mut q = QueryBuilder::<DB>::new("DELETE FROM web_sessions WHERE id_hash = ");
        q.bind(id_hash.to_vec())
            .push(" OR expires_at < ")
            .bind(now_ms);
        q.build()
            .execute(DB::on(&mut *self.writer().await?))
            .await?;
        Ok(())
    }
}
