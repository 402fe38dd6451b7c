//! Replay jobs: queueing and cancelling them on the single writer.

use sqlx::Sqlite;

use super::{Durability, SqliteStore, write_tx};
use crate::shared::SqlCore;
use crate::*;

/// The single writer makes the selection and the queueing exact: no emit or
/// record runs between them.
pub(super) async fn start_replay(
    store: &SqliteStore,
    job: &NewReplay,
) -> StoreResult<ReplayRecord> {
    write_tx(&store.core.write, Durability::Normal, async |tx| {
        SqlCore::<Sqlite>::start_replay_in(tx, job, |_| {}).await
    })
    .await
}

pub(super) async fn cancel_replay(
    store: &SqliteStore,
    id: &str,
    now: i64,
) -> StoreResult<(ReplayRecord, u64)> {
    write_tx(&store.core.write, Durability::Normal, async |tx| {
        let (handler_id, _) = SqlCore::<Sqlite>::replay_open_keys_in(tx, id).await?;
        SqlCore::<Sqlite>::cancel_replay_in(tx, id, handler_id, now).await
    })
    .await
}
