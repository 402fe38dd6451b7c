//! One scripted story of the `Store` trait, told to both backends: SQLite in a
//! temporary directory and PostgreSQL in a fresh database of its own. Whatever
//! one backend does, the other must do the same.
//!
//! The PostgreSQL half needs a server (`PROVISIO_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): without one it prints that it
//! was skipped, unless `CI` is set, where it fails.
//!
//! # Layout
//!
//! - this file: the story's two tellings, and the order of its chapters;
//! - one module per chapter (`tokens`, `catalog`, `handlers`, `queue`,
//!   `log`, `upkeep`), each a function of a `&dyn Store` that carries on
//!   where the previous chapter left the store;
//! - `rooms`, `emit_claim`, `masking`, `lines` (blocked lines, skip, conflation), `figures`,
//!   `replays` and `pause`: shorter stories, each told to both backends;
//! - `nodes`: what only a shared database does (several nodes at once);
//! - `support`: the handlers, events and results the chapters are made of.

mod cancel;
mod catalog;
mod drain;
mod emit_claim;
mod figures;
mod handlers;
mod lines;
mod log;
mod masking;
mod nodes;
mod pause;
mod queue;
mod replays;
mod rooms;
mod support;
mod tokens;
mod upkeep;

use provisio_store::*;

#[tokio::test]
async fn sqlite_keeps_the_story() {
    let (_dir, store) = support::sqlite().await;
    assert!(store.single_node());
    assert!(store.watch().is_none());
    story(&store).await;
}

#[tokio::test]
async fn postgres_keeps_the_story() {
    let Some((db, store)) = support::postgres().await else {
        return;
    };
    assert!(!store.single_node());
    let mut changes = store.watch().expect("PostgreSQL announces changes");
    assert_eq!(changes.recv().await, Some(StoreChange::Resync));
    // Another node on the same database hears what this one announces.
    let settings = provisio_store::postgres::PgSettings::new(db.url());
    let other = provisio_store::postgres::PgStore::connect(&settings)
        .await
        .unwrap();
    let mut heard = other.watch().expect("PostgreSQL announces changes");
    assert_eq!(heard.recv().await, Some(StoreChange::Resync));
    story(&store).await;
    // Every write of the story, each kind of state change, kept the mirror
    // of due work (`due_deliveries`) equal to the pending deliveries.
    assert_eq!(db.unmirrored().await, 0);
    assert!(
        db.column::<i64>("SELECT count(*) FROM due_deliveries")
            .await[0]
            > 0
    );
    // Handler changes and new work were announced along the way, new work
    // to the other node only: this one woke its own dispatcher already.
    let drain = |rx: &mut tokio::sync::mpsc::Receiver<StoreChange>| {
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push(change);
        }
        seen
    };
    // NOTIFYs arrive a moment after their commit.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (own, others) = (drain(&mut changes), drain(&mut heard));
    assert!(own.contains(&StoreChange::Routes), "{own:?}");
    assert!(!own.contains(&StoreChange::Work), "{own:?}");
    assert!(others.contains(&StoreChange::Routes), "{others:?}");
    assert!(others.contains(&StoreChange::Work), "{others:?}");
    other.close().await;
    store.close().await;
}

async fn story(store: &dyn Store) {
    store.ping().await.unwrap();
    tokens::story(store).await;
    catalog::story(store).await;
    let handlers = handlers::story(store).await;
    let t1 = queue::story(store, &handlers).await;
    log::story(store, &handlers, t1).await;
    upkeep::story(store, &handlers).await;
}
