//! The statements' plans on a migrated SQLite database: the partial
//! indexes' conditions and the seeks the queue's statements make.

use sqlx::{Connection, Row};

use crate::sqlite::{Durability, SqliteStore};

/// A database with every migration applied, and a connection to it
/// (the directory goes when the first is dropped).
async fn migrated() -> (tempfile::TempDir, sqlx::SqliteConnection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.db");
    drop(SqliteStore::open(&path, Durability::Normal).await.unwrap());
    let conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    (dir, conn)
}

/// SQLite uses a partial index only for a statement that repeats its
/// condition, so the migrations' conditions must be the macros' text.
#[tokio::test]
async fn the_state_indexes_conditions_are_the_ones_statements_repeat() {
    let (_dir, mut conn) = migrated().await;
    let condition = async |conn: &mut sqlx::SqliteConnection, index: &str| -> String {
        let sql: String = sqlx::query("SELECT sql FROM sqlite_master WHERE name = ?")
            .bind(index)
            .fetch_one(conn)
            .await
            .unwrap()
            .get("sql");
        sql.split_once(" WHERE ").unwrap().1.trim().to_owned()
    };
    assert_eq!(
        condition(&mut conn, "deliveries_open").await,
        open_states!("state")
    );
    assert_eq!(
        condition(&mut conn, "deliveries_finished").await,
        finished_states!("state")
    );

    // The line check an emit makes seeks the partial index once per
    // state, without building a list of them first.
    let line_open = concat!("SELECT ", line_open!("1", "'k'"));
    let steps = async |conn: &mut sqlx::SqliteConnection, explain: &str, column: &str| {
        sqlx::query(sqlx::AssertSqlSafe(format!("{explain} {line_open}")))
            .fetch_all(conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>(column))
            .collect::<Vec<_>>()
    };
    let plan = steps(&mut conn, "EXPLAIN QUERY PLAN", "detail").await;
    let seeks = plan.iter().filter(|step| step.contains("deliveries_open"));
    assert_eq!(seeks.count(), 3, "{plan:?}");
    let program = steps(&mut conn, "EXPLAIN", "opcode").await;
    assert!(
        !program.iter().any(|op| op == "OpenEphemeral"),
        "{program:?}"
    );
}

/// Every question about a line's open deliveries (its oldest or newest
/// waiting one, whether one is pending or blocked, which one blocks it)
/// is a seek of `deliveries_open` (handler, object, state, seq), in
/// `seq` order, without a sort. SQLite chose it even while the partial
/// indexes `deliveries_waiting` and `deliveries_blocked` existed (they
/// were only written, never read); migration 0017 dropped them.
#[tokio::test]
async fn a_lines_questions_seek_deliveries_open_in_order() {
    use crate::shared::lines::{push_conflation, push_release, push_release_line};

    let (_dir, mut conn) = migrated().await;
    let line = (1, "k".to_owned());
    let lines = [line.clone()];
    let mut statements = Vec::new();
    let mut text = |build: &dyn Fn(&mut sqlx::QueryBuilder<sqlx::Sqlite>)| {
        let mut q = sqlx::QueryBuilder::new("");
        build(&mut q);
        statements.push(q.sql().as_str().to_owned());
    };
    text(&|q| push_release_line(q, &line, 0));
    text(&|q| push_release(q, &lines, 0));
    text(&|q| push_conflation(q, &lines, 0));
    text(&|q| {
        q.push(format_args!(
            "SELECT {} FROM deliveries WHERE id = 'd'",
            crate::rows::DELIVERY_COLUMNS
        ));
    });
    for sql in statements {
        let plan: Vec<String> =
            sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get("detail"))
                .collect();
        let line_seeks: Vec<&String> = plan
            .iter()
            .filter(|step| step.contains("handler_id=? AND object_key=?"))
            .collect();
        assert!(!line_seeks.is_empty(), "{sql}: {plan:?}");
        assert!(
            line_seeks.iter().all(|step| step
                .contains("INDEX deliveries_open (handler_id=? AND object_key=? AND state=?)")),
            "{sql}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{sql}: {plan:?}"
        );
    }
}
