//! A URL password stored by an older writer is masked when read, on both backends.

use provisio_store::*;

use crate::support::{postgres, sqlite};

/// An execution row holding a URL password, written by raw SQL the way a
/// row from before masking (or SQL copying a handler's target) holds one.
const ROW_WITH_PASSWORD: &str = "INSERT INTO executions (handler_id, handler_name, events_id,
    object_id, object_key, stage, attempt, status, started_at, duration_ms, request_target,
    request_headers, request_body, response_truncated)
    VALUES (1, 'h', 'clients.create', '1', '1', 'after', 1, 'fail', 0, 0,
    'http://alice:s3cret@10.0.0.1/hook', '{}', '', FALSE)";

#[tokio::test]
async fn sqlite_masks_a_stored_password_when_read() {
    let (dir, store) = sqlite().await;
    let path = dir.path().join("story.db");
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(ROW_WITH_PASSWORD).execute(&raw).await.unwrap();
    raw.close().await;
    password_is_masked_when_read(&store).await;
}

#[tokio::test]
async fn postgres_masks_a_stored_password_when_read() {
    let Some((db, store)) = postgres().await else {
        return;
    };
    let raw = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::query(ROW_WITH_PASSWORD).execute(&raw).await.unwrap();
    raw.close().await;
    password_is_masked_when_read(&store).await;
    store.close().await;
}

/// The store's one execution row, listed and read alone, shows no password.
async fn password_is_masked_when_read(store: &dyn Store) {
    let (rows, _) = store
        .list_executions(&ExecutionFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(rows[0].request.target, "http://alice:***@10.0.0.1/hook");
    let one = store.get_execution(rows[0].id).await.unwrap().unwrap();
    assert_eq!(one.request.target, "http://alice:***@10.0.0.1/hook");
}
