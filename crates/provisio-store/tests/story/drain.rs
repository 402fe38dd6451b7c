//! The day after a drain, on PostgreSQL: claims seek their due work as
//! quickly as on a fresh table once the node has vacuumed the mirror of due
//! work (`due_deliveries`), without waiting for autovacuum.

use provisio_store::postgres::VACUUM_DUE_AFTER;
use provisio_store::*;

use crate::support::*;

/// The pages a seek of the handler's next due time reads, from `EXPLAIN
/// (ANALYZE, BUFFERS)`: what each claim and each wake of the dispatcher
/// pays to get past the handler's finished work.
async fn pages_to_next_due(
    db: &provisio_store::postgres::scratch::ScratchDatabase,
    handler: i64,
) -> u64 {
    let plan = db
        .column::<String>(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF)
             SELECT MIN(next_attempt_at) FROM due_deliveries WHERE handler_id = {handler}"
        ))
        .await;
    let buffers = plan
        .iter()
        .find_map(|line| line.trim().strip_prefix("Buffers: shared "))
        .unwrap_or_else(|| panic!("no buffers in {plan:#?}"));
    buffers
        .split_whitespace()
        .filter_map(|part| part.split_once('='))
        .filter(|(kind, _)| matches!(*kind, "hit" | "read"))
        .map(|(_, n)| n.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn postgres_vacuums_due_work_after_a_drain() {
    let Some((db, store)) = postgres().await else {
        return;
    };
    // Only the node vacuums here, and every plan seeks, as the queue's do.
    db.admin("ALTER TABLE due_deliveries SET (autovacuum_enabled = false)")
        .await;
    db.admin(&format!(
        "ALTER DATABASE {} SET enable_seqscan = off",
        db.name()
    ))
    .await;
    let handler = store
        .insert_handler(&spec("drained", false))
        .await
        .unwrap()
        .id;
    let total = 10 * VACUUM_DUE_AFTER;
    let numbers: Vec<u64> = (10_000..10_000 + total).collect();
    for chunk in numbers.chunks(1_000) {
        let batch: Vec<NewEvent> = chunk
            .iter()
            .map(|&n| new_event(n, 1_000, &[(handler, false)], None))
            .collect();
        insert_events(&store, &batch).await;
    }
    // The drain: every delivery leased, in claims of 1,000, then recorded
    // in one batch (the node vacuums once it has recorded that many).
    let mut leased = Vec::new();
    loop {
        let claimed = lease(&store, &[(handler, 1_000)], 1_000).await;
        if claimed.is_empty() {
            break;
        }
        leased.extend(claimed);
    }
    assert_eq!(leased.len() as u64, total);
    // Each lease left the emitted version's index entry dead, and those
    // sort before any due work.
    let before = pages_to_next_due(&db, handler).await;
    assert!(before > 30, "{before} pages before the vacuum");

    let results: Vec<AttemptResult> = leased
        .iter()
        .map(|c| AttemptResult {
            // Without log rows, so the batch stays one statement.
            execution: None,
            ..finished(c, DeliveryNext::Succeeded, 3_000)
        })
        .collect();
    store.record(&results, &[]).await.unwrap();
    let vacuums = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'due_deliveries'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while db.column::<i64>(vacuums).await == [0] {
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not vacuum due_deliveries after {total} deliveries"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = pages_to_next_due(&db, handler).await;
    assert!(
        after <= 8,
        "{after} pages after the vacuum ({before} before)"
    );

    // New work is claimed as before.
    insert_events(
        &store,
        &[new_event(30_000, 4_000, &[(handler, false)], None)],
    )
    .await;
    assert_eq!(claim(&store, 5_000, &[]).await.len(), 1);
    store.close().await;
}
