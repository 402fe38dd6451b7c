//! One scripted story of the `Store` trait, told to both backends: SQLite in a
//! temporary directory and PostgreSQL in a fresh database of its own. Whatever
//! one backend does, the other must do the same.
//!
//! The PostgreSQL half needs a server (`PROVISIO_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): without one it prints that it
//! was skipped, unless `CI` is set, where it fails.

use std::collections::BTreeMap;

use provisio_core::catalog::{EventPattern, EventType};
use provisio_core::event::{DeliveryState, Event, ExecutionStatus, ObjectId};
use provisio_core::handler::{HandlerKind, HandlerSpec, OnFailure, Stage, Status};
use provisio_core::timefmt::from_millis;
use provisio_store::postgres::scratch::ScratchDatabase;
use provisio_store::postgres::{PgSettings, PgStore};
use provisio_store::sqlite::{Durability, SqliteStore};
use provisio_store::*;

#[tokio::test]
async fn sqlite_keeps_the_story() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("story.db"), Durability::Normal)
        .await
        .unwrap();
    assert!(store.single_node());
    assert!(store.watch().is_none());
    story(&store).await;
}

#[tokio::test]
async fn sqlite_bounds_each_handler_by_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("story.db"), Durability::Normal)
        .await
        .unwrap();
    each_handler_is_bounded_by_its_room(&store).await;
}

#[tokio::test]
async fn postgres_bounds_each_handler_by_its_room() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
    each_handler_is_bounded_by_its_room(&store).await;
    store.close().await;
}

/// A claim takes at most each handler's room, oldest due first across them,
/// and never looks at a handler it was not given.
async fn each_handler_is_bounded_by_its_room(store: &dyn Store) {
    let a = store.insert_handler(&spec("a", false)).await.unwrap().id;
    let b = store.insert_handler(&spec("b", false)).await.unwrap().id;
    let c = store.insert_handler(&spec("c", false)).await.unwrap().id;
    let batch: Vec<NewEvent> = (10_000..10_020)
        .map(|i| new_event(i, 1_000, &[(a, false), (b, false), (c, false)], None))
        .collect();
    store.insert_events(&batch).await.unwrap();
    let claimed = store
        .claim_due(&Claim {
            now_ms: 2_000,
            lease_until_ms: 60_000,
            limit: 100,
            handlers: &[(a, 3), (b, 30)],
        })
        .await
        .unwrap();
    let count = |h: i64| claimed.iter().filter(|d| d.handler_id == h).count();
    assert_eq!((count(a), count(b), count(c)), (3, 20, 0));
    let oldest_a: Vec<&str> = claimed
        .iter()
        .filter(|d| d.handler_id == a)
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(oldest_a, ["evt-10000", "evt-10001", "evt-10002"]);
    let limited = store
        .claim_due(&Claim {
            now_ms: 2_000,
            lease_until_ms: 60_000,
            limit: 5,
            handlers: &[(a, 100), (c, 100)],
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 5, "the limit holds across handlers");
}

#[tokio::test]
async fn postgres_keeps_the_story() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
    assert!(!store.single_node());
    let mut changes = store.watch().expect("PostgreSQL announces changes");
    assert_eq!(changes.recv().await, Some(StoreChange::Resync));
    story(&store).await;
    // Handler changes and new work were announced along the way.
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push(change);
    }
    assert!(seen.contains(&StoreChange::Routes), "{seen:?}");
    assert!(seen.contains(&StoreChange::Work), "{seen:?}");
    store.close().await;
}

/// An execution row holding a URL password, written by raw SQL the way a
/// row from before masking (or SQL copying a handler's target) holds one.
const ROW_WITH_PASSWORD: &str = "INSERT INTO executions (handler_id, handler_name, events_id,
    object_id, object_key, stage, attempt, status, started_at, duration_ms, request_target,
    request_headers, request_body, response_truncated)
    VALUES (1, 'h', 'clients.create', '1', '1', 'after', 1, 'fail', 0, 0,
    'http://alice:s3cret@10.0.0.1/hook', '{}', '', FALSE)";

#[tokio::test]
async fn sqlite_masks_a_stored_password_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("story.db");
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(ROW_WITH_PASSWORD).execute(&raw).await.unwrap();
    raw.close().await;
    password_is_masked_when_read(&store).await;
}

#[tokio::test]
async fn postgres_masks_a_stored_password_when_read() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
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

/// Two nodes (two pools) on one fresh database, or `None` where PostgreSQL
/// is unreachable outside CI. The database lives as long as the handle.
async fn two_nodes() -> Option<(ScratchDatabase, PgStore, PgStore)> {
    let db = ScratchDatabase::create().await?;
    let a = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
    let b = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
    Some((db, a, b))
}

#[tokio::test]
async fn postgres_claims_from_two_pools_are_disjoint() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let handler = a.insert_handler(&spec("unordered", false)).await.unwrap();
    let batch: Vec<NewEvent> = (0..200)
        .map(|i| new_event(i, 1_000, &[(handler.id, false)], None))
        .collect();
    a.insert_events(&batch).await.unwrap();
    let handlers = [(handler.id, 150)];
    let claim = |limit| Claim {
        now_ms: 2_000,
        lease_until_ms: 60_000,
        limit,
        handlers: &handlers,
    };
    let (cx, cy) = (claim(150), claim(150));
    let (x, y) = tokio::join!(a.claim_due(&cx), b.claim_due(&cy));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 200, "every due delivery is leased once");
    let mut seqs: Vec<i64> = x.iter().chain(&y).map(|c| c.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "no delivery is leased by both");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn postgres_orders_concurrent_emits_for_one_object() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let handler = a.insert_handler(&spec("ordered", true)).await.unwrap();
    // Many small batches from two pools at once, all for object 7: exactly
    // one delivery may be pending at any time.
    let hid = handler.id;
    let emit = |store: PgStore, base: u64| async move {
        for i in 0..40 {
            let e = new_event(base + i, 1_000, &[(hid, true)], None);
            store.insert_events(&[e]).await.unwrap();
        }
    };
    tokio::join!(emit(a.clone(), 0), emit(b.clone(), 1_000));
    let claimed = a
        .claim_due(&Claim {
            now_ms: 2_000,
            lease_until_ms: 60_000,
            limit: 100,
            handlers: &[(hid, 100)],
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one open delivery per (handler, object)");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn postgres_two_nodes_put_one_new_admin_token_at_once() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    // Nodes restarted together with a changed PROVISIO_ADMIN_TOKEN: both
    // starts succeed and exactly one live token holds the new value.
    for round in 0..20u8 {
        let hash = TokenHash([round; 32]);
        let (x, y) = tokio::join!(a.put_token("admin", &hash), b.put_token("admin", &hash));
        assert_eq!(x.unwrap().id, y.unwrap().id, "round {round}");
    }
    let live: Vec<_> = a
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].hash, TokenHash([19; 32]));
    a.close().await;
    b.close().await;
}

fn spec(name: &str, ordered: bool) -> HandlerSpec {
    HandlerSpec {
        name: name.to_owned(),
        events_id: EventPattern::parse("clients.*").unwrap(),
        stage: Stage::After,
        status: Status::Enabled,
        priority: 10,
        kind: HandlerKind::Http,
        target: "http://127.0.0.1:9/hook".to_owned(),
        args: Vec::new(),
        headers: BTreeMap::from([("x-team".to_owned(), "blue".to_owned())]),
        timeout_ms: 2_000,
        max_attempts: 3,
        ordered,
        on_failure: OnFailure::Forbid,
    }
}

/// An event for object 7 (or `n`'s own object when `n >= 10_000`).
fn new_event(n: u64, at_ms: i64, handlers: &[(i64, bool)], key: Option<&str>) -> NewEvent {
    let object = if n >= 10_000 { n } else { 7 };
    NewEvent {
        event: Event {
            id: format!("evt-{n:05}"),
            events_id: "clients.update".to_owned(),
            object_id: ObjectId::from(object),
            dt: from_millis(at_ms),
            data: format!("{{\"n\":{n}}}"),
        },
        idempotency: key.map(|k| Idempotency {
            key: k.to_owned(),
            body_hash: [n as u8; 32],
        }),
        deliveries: handlers
            .iter()
            .enumerate()
            .map(|(i, (id, ordered))| NewDelivery {
                id: format!("dlv-{n:05}-{i}"),
                handler_id: *id,
                ordered: *ordered,
            })
            .collect(),
        created_at_ms: at_ms,
    }
}

fn finished(c: &ClaimedDelivery, next: DeliveryNext, at_ms: i64) -> AttemptResult {
    AttemptResult {
        delivery_seq: c.seq,
        handler_id: c.handler_id,
        object_key: c.event.object_id.key(),
        attempts: c.attempts + 1,
        next,
        finished_at_ms: at_ms,
        last_error: (next != DeliveryNext::Succeeded).then(|| "HTTP 500".to_owned()),
        execution: Some(ExecutionRecord {
            id: 0,
            delivery_id: Some(c.id.clone()),
            handler_id: c.handler_id,
            handler_name: "ordered".to_owned(),
            event_id: Some(c.event.id.clone()),
            events_id: c.event.events_id.clone(),
            object_id: c.event.object_id.clone(),
            stage: Stage::After,
            attempt: c.attempts + 1,
            status: if next == DeliveryNext::Succeeded {
                ExecutionStatus::Success
            } else {
                ExecutionStatus::Fail
            },
            started_at: from_millis(at_ms - 5),
            duration_ms: 5,
            request: RequestRecord {
                target: "http://127.0.0.1:9/hook".to_owned(),
                headers: BTreeMap::from([("webhook-id".to_owned(), c.id.clone())]),
                body: c.event.payload(),
            },
            response_status: Some(if next == DeliveryNext::Succeeded {
                200
            } else {
                500
            }),
            response_body: Some("ok".to_owned()),
            response_truncated: false,
            error: (next != DeliveryNext::Succeeded).then(|| "HTTP 500".to_owned()),
            next_attempt_at: match next {
                DeliveryNext::RetryAt { at_ms } => Some(from_millis(at_ms)),
                _ => None,
            },
            data_after: None,
        }),
    }
}

/// Claims up to 100 due deliveries of any handler (ids 1 to 50 cover a
/// fresh store's) but those in `skip`.
async fn claim(store: &dyn Store, now_ms: i64, skip: &[i64]) -> Vec<ClaimedDelivery> {
    let handlers: Vec<(i64, u32)> = (1..=50)
        .filter(|id| !skip.contains(id))
        .map(|id| (id, 100))
        .collect();
    store
        .claim_due(&Claim {
            now_ms,
            lease_until_ms: now_ms + 30_000,
            limit: 100,
            handlers: &handlers,
        })
        .await
        .unwrap()
}

async fn states(store: &dyn Store, event_id: &str) -> Vec<DeliveryState> {
    let (_, deliveries) = store.get_event(event_id).await.unwrap().unwrap();
    deliveries.iter().map(|d| d.state).collect()
}

async fn story(store: &dyn Store) {
    store.ping().await.unwrap();

    // --- Tokens ---------------------------------------------------------
    let first = store.create_token("ci", &TokenHash([1; 32])).await.unwrap();
    assert!(matches!(
        store.create_token("ci", &TokenHash([2; 32])).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_token(&TokenHash([1; 32])).await.unwrap(),
        Some(first.clone())
    );
    let same = store.put_token("ci", &TokenHash([1; 32])).await.unwrap();
    assert_eq!(same.id, first.id, "putting the same hash keeps the token");
    let replaced = store.put_token("ci", &TokenHash([3; 32])).await.unwrap();
    assert_ne!(replaced.id, first.id);
    assert_eq!(store.find_token(&TokenHash([1; 32])).await.unwrap(), None);
    assert!(store.revoke_token(TokenRef::Name("ci")).await.unwrap());
    assert!(!store.revoke_token(TokenRef::Name("ci")).await.unwrap());
    let tokens = store.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.revoked_at.is_some()));
    // A token changed back to an earlier value (PROVISIO_ADMIN_TOKEN A → B →
    // A across restarts) is live again as a new row; the old row stays
    // revoked for the record, so its ended web sessions stay ended.
    let a = store.put_token("admin", &TokenHash([4; 32])).await.unwrap();
    store.put_token("admin", &TokenHash([5; 32])).await.unwrap();
    let a_again = store.put_token("admin", &TokenHash([4; 32])).await.unwrap();
    assert_ne!(a_again.id, a.id);
    assert_eq!(
        store.find_token(&TokenHash([4; 32])).await.unwrap(),
        Some(a_again.clone())
    );
    assert_eq!(store.find_token(&TokenHash([5; 32])).await.unwrap(), None);
    assert!(store.revoke_token(TokenRef::Name("admin")).await.unwrap());
    // A name that is another token's id: each reference means one token.
    let one = store
        .create_token("one", &TokenHash([10; 32]))
        .await
        .unwrap();
    let id_text = one.id.to_string();
    store
        .create_token(&id_text, &TokenHash([11; 32]))
        .await
        .unwrap();
    assert!(store.revoke_token(TokenRef::Name(&id_text)).await.unwrap());
    assert_eq!(store.find_token(&TokenHash([11; 32])).await.unwrap(), None);
    assert_eq!(
        store.find_token(&TokenHash([10; 32])).await.unwrap(),
        Some(one.clone()),
        "revoking by name leaves the token with that id"
    );
    assert!(store.revoke_token(TokenRef::Id(one.id)).await.unwrap());
    assert!(!store.revoke_token(TokenRef::Id(one.id)).await.unwrap());

    // --- Catalog --------------------------------------------------------
    let builtin = provisio_core::catalog::builtin();
    store.seed_event_types(&builtin).await.unwrap();
    store.seed_event_types(&builtin).await.unwrap();
    let custom = EventType {
        id: "billing.invoice".to_owned(),
        group: "Billing".to_owned(),
        description: "An invoice was issued".to_owned(),
        empty_data: false,
        builtin: false,
    };
    store.insert_event_type(&custom).await.unwrap();
    assert!(matches!(
        store.insert_event_type(&custom).await,
        Err(StoreError::Conflict(_))
    ));
    let types = store.list_event_types().await.unwrap();
    assert_eq!(types.len(), builtin.len() + 1, "seeding twice adds nothing");
    assert_eq!(types.last().unwrap(), &custom, "built-in types come first");

    // --- Handlers -------------------------------------------------------
    let ordered = store
        .insert_handler(&spec("Ordered sync", true))
        .await
        .unwrap();
    assert_eq!(ordered.spec, spec("Ordered sync", true));
    let mut other = spec("Other CRM", false);
    other.events_id = EventPattern::parse("billing.invoice").unwrap();
    other.kind = HandlerKind::Script;
    other.priority = -5;
    let unordered = store.insert_handler(&other).await.unwrap();
    let mut archived = spec("old_50%_thing", true);
    archived.status = Status::Archived;
    let archived = store.insert_handler(&archived).await.unwrap();

    let list = |filter: HandlerFilter| async move {
        let (items, total) = store.list_handlers(&filter, Page::default()).await.unwrap();
        assert_eq!(items.len() as u64, total);
        items.into_iter().map(|h| h.id).collect::<Vec<_>>()
    };
    assert_eq!(
        list(HandlerFilter::default()).await,
        vec![unordered.id, ordered.id],
        "priority order; archived hidden"
    );
    let all = HandlerFilter {
        include_archived: true,
        ..Default::default()
    };
    assert_eq!(list(all.clone()).await.len(), 3);
    let by_type = |t: &str| HandlerFilter {
        events_id: Some(t.to_owned()),
        ..all.clone()
    };
    assert_eq!(
        list(by_type("clients.create")).await,
        vec![ordered.id, archived.id]
    );
    assert_eq!(
        list(by_type("clients.*")).await,
        vec![ordered.id, archived.id]
    );
    assert_eq!(list(by_type("billing.invoice")).await, vec![unordered.id]);
    assert_eq!(list(by_type("clientsX.create")).await, Vec::<i64>::new());
    assert_eq!(
        list(HandlerFilter {
            kind: Some(HandlerKind::Script),
            ..all.clone()
        })
        .await,
        vec![unordered.id]
    );
    assert_eq!(
        list(HandlerFilter {
            status: Some(Status::Archived),
            ..Default::default()
        })
        .await,
        vec![archived.id]
    );
    assert_eq!(
        list(HandlerFilter {
            q: Some("SYNC".to_owned()),
            ..all.clone()
        })
        .await,
        vec![ordered.id],
        "the name search ignores case"
    );
    assert_eq!(
        list(HandlerFilter {
            q: Some("50%".to_owned()),
            ..all.clone()
        })
        .await,
        vec![archived.id],
        "LIKE wildcards in the search are literal"
    );
    let (page2, total) = store
        .list_handlers(
            &all,
            Page {
                page: 2,
                per_page: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!((page2.len(), total), (1, 3));

    let mut changed = spec("Ordered sync v2", true);
    changed.priority = 20;
    let updated = store.update_handler(ordered.id, &changed).await.unwrap();
    assert_eq!(updated.spec, changed);
    assert_eq!(updated.secret.expose(), ordered.secret.expose());
    let rotated = store.rotate_handler_secret(ordered.id).await.unwrap();
    assert_ne!(rotated.secret.expose(), ordered.secret.expose());
    assert!(matches!(
        store.update_handler(9_999, &changed).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.rotate_handler_secret(9_999).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.get_handler(ordered.id).await.unwrap().unwrap().spec,
        changed
    );
    assert_eq!(store.all_handlers().await.unwrap().len(), 3);

    // --- Events, ordering, idempotency ----------------------------------
    let h = ordered.id;
    let u = unordered.id;
    // Start-up releases leases to the wall clock's now; the story's instants
    // are placed around it: t0 well before, t1 well after.
    let wall = provisio_core::timefmt::to_millis(time::OffsetDateTime::now_utc());
    let t0 = wall - 10_000_000;
    let t1 = wall + 10_000_000;
    let first_batch = vec![
        new_event(1, t0, &[(h, true), (u, false)], Some("key-1")),
        new_event(2, t0, &[(h, true), (u, false)], None),
        // The same key in one batch, same body: answered from the first.
        new_event(1, t0, &[(h, true)], Some("key-1")),
        // The same key with another body.
        new_event(3, t0, &[(h, true)], Some("key-1")),
        new_event(10_001, t0, &[(h, true)], None),
    ];
    let outcomes = store.insert_events(&first_batch).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            EmitOutcome::Stored,
            EmitOutcome::Stored,
            EmitOutcome::Replayed {
                event_id: "evt-00001".to_owned(),
                deliveries: 2
            },
            EmitOutcome::KeyReused,
            EmitOutcome::Stored,
        ]
    );
    // In a later batch, the key is answered from storage.
    let later = store
        .insert_events(&[
            new_event(1, t0 + 1, &[(h, true), (u, false)], Some("key-1")),
            new_event(4, t0 + 1, &[(h, true)], Some("key-1")),
            new_event(5, t0 + 1, &[(h, true)], None),
        ])
        .await
        .unwrap();
    assert_eq!(
        later,
        vec![
            EmitOutcome::Replayed {
                event_id: "evt-00001".to_owned(),
                deliveries: 2
            },
            EmitOutcome::KeyReused,
            EmitOutcome::Stored,
        ]
    );
    // Past the window, the key is new again.
    let expired = store
        .insert_events(&[new_event(
            6,
            t0 + IDEMPOTENCY_WINDOW_MS + 10,
            &[],
            Some("key-1"),
        )])
        .await
        .unwrap();
    assert_eq!(expired, vec![EmitOutcome::Stored]);

    use DeliveryState::*;
    assert_eq!(states(store, "evt-00001").await, vec![Pending, Pending]);
    assert_eq!(
        states(store, "evt-00002").await,
        vec![Waiting, Pending],
        "ordered: behind event 1 in the same batch; unordered: due at once"
    );
    assert_eq!(
        states(store, "evt-00005").await,
        vec![Waiting],
        "behind stored unfinished deliveries"
    );
    assert_eq!(
        states(store, "evt-10001").await,
        vec![Pending],
        "another object"
    );
    let (event, _) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(event.object_id, ObjectId::from(7u64));
    assert_eq!(event.data, "{\"n\":1}");
    assert!(store.get_event("nope").await.unwrap().is_none());

    // --- Claims and leases ----------------------------------------------
    assert_eq!(store.next_due_ms().await.unwrap(), Some(t0));
    assert!(
        claim(store, t0 - 1, &[]).await.is_empty(),
        "nothing due yet"
    );
    let skipped = claim(store, t0, &[h]).await;
    assert_eq!(
        skipped.iter().map(|c| c.handler_id).collect::<Vec<_>>(),
        vec![u, u],
        "a saturated handler is skipped"
    );
    let claimed = claim(store, t0, &[]).await;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.event.id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt-00001", "evt-10001"],
        "leased deliveries are not due; oldest first"
    );
    assert!(claim(store, t0 + 1, &[]).await.is_empty());
    assert_eq!(
        store.next_due_ms().await.unwrap(),
        Some(t0 + 30_000),
        "the earliest lease end"
    );
    let (_, leased) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(leased[0].next_attempt_at, None, "a lease is not a schedule");

    // Settled at a single node's start-up: every leased delivery is due
    // again at once, and its interrupted attempt is logged as unknown
    // without using up an attempt of the round.
    assert_eq!(store.settle_interrupted(t1, i64::MAX).await.unwrap(), 4);
    let (unknown, _) = store
        .list_executions(
            &ExecutionFilter {
                status: Some(ExecutionStatus::Unknown),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(unknown.len(), 4);
    assert!(unknown.iter().all(|e| {
        e.attempt == 1
            && e.error
                .as_deref()
                .is_some_and(|m| m.starts_with("outcome unknown"))
    }));
    let again = claim(store, t1 + 2, &[]).await;
    assert_eq!(again.len(), 4);
    let by_event = |id: &str, handler: i64| {
        again
            .iter()
            .find(|c| c.event.id == id && c.handler_id == handler)
            .cloned()
            .unwrap()
    };

    // --- Record and release ---------------------------------------------
    let d1 = by_event("evt-00001", h);
    let retry = finished(&d1, DeliveryNext::RetryAt { at_ms: t1 + 500 }, t1 + 10);
    assert_eq!(store.record(&[retry], &[]).await.unwrap(), 0);
    assert_eq!(states(store, "evt-00002").await, vec![Waiting, Pending]);
    let (_, after_retry) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(
        after_retry[0].attempts, 2,
        "the interrupted attempt counts in the numbering"
    );
    assert_eq!(after_retry[0].next_attempt_at, Some(from_millis(t1 + 500)));
    assert_eq!(after_retry[0].last_error.as_deref(), Some("HTTP 500"));

    let d1 = claim(store, t1 + 500, &[])
        .await
        .into_iter()
        .find(|c| c.id == d1.id)
        .unwrap();
    assert_eq!(d1.attempts, 2);
    let before = ExecutionRecord {
        stage: Stage::Before,
        delivery_id: None,
        event_id: None,
        data_after: Some("{\"n\":0}".to_owned()),
        request: RequestRecord {
            target: "http://alice:s3cret@127.0.0.1:9/hook".to_owned(),
            ..finished(&d1, DeliveryNext::Succeeded, t1 + 600)
                .execution
                .unwrap()
                .request
        },
        ..finished(&d1, DeliveryNext::Succeeded, t1 + 600)
            .execution
            .unwrap()
    };
    let released = store
        .record(
            &[
                finished(&d1, DeliveryNext::Succeeded, t1 + 600),
                finished(&by_event("evt-10001", h), DeliveryNext::Failed, t1 + 600),
                finished(&by_event("evt-00001", u), DeliveryNext::Succeeded, t1 + 600),
            ],
            &[before],
        )
        .await
        .unwrap();
    assert_eq!(released, 1, "event 2 takes event 1's turn");
    assert_eq!(states(store, "evt-00001").await, vec![Success, Success]);
    assert_eq!(states(store, "evt-00002").await, vec![Pending, Pending]);
    assert_eq!(states(store, "evt-00005").await, vec![Waiting]);
    assert_eq!(states(store, "evt-10001").await, vec![Failed]);
    let (_, done) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(done[0].attempts, 3);
    assert_eq!(done[0].finished_at, Some(from_millis(t1 + 600)));

    // --- Redeliver --------------------------------------------------------
    assert!(matches!(
        store.redeliver("dlv-00002-0", t1 + 700).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.redeliver("nope", t1 + 700).await,
        Err(StoreError::NotFound)
    ));
    let behind = store.redeliver("dlv-00001-0", t1 + 700).await.unwrap();
    assert_eq!(
        behind.state, Waiting,
        "redelivered behind the object's unfinished deliveries"
    );
    let alone = store.redeliver("dlv-10001-0", t1 + 700).await.unwrap();
    assert_eq!(alone.state, Pending);
    assert_eq!(alone.next_attempt_at, Some(from_millis(t1 + 700)));
    let round = claim(store, t1 + 700, &[])
        .await
        .into_iter()
        .find(|c| c.id == "dlv-10001-0")
        .unwrap();
    assert_eq!((round.attempts, round.round_start), (2, 2));

    // --- Execution log ----------------------------------------------------
    let page = Page::default();
    let (rows, total) = store
        .list_executions(&ExecutionFilter::default(), page)
        .await
        .unwrap();
    assert_eq!(total, 9, "five calls and four interrupted attempts");
    assert!(rows.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let one = store.get_execution(rows[0].id).await.unwrap().unwrap();
    assert_eq!(one, rows[0]);
    assert!(store.get_execution(9_999).await.unwrap().is_none());
    let count = |filter: ExecutionFilter| async move {
        store.list_executions(&filter, page).await.unwrap().1
    };
    assert_eq!(
        count(ExecutionFilter {
            handler_id: Some(u),
            ..Default::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(ExecutionFilter {
            status: Some(ExecutionStatus::Fail),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(ExecutionFilter {
            stage: Some(Stage::Before),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ExecutionFilter {
            object_id: Some("10001".to_owned()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(ExecutionFilter {
            delivery_id: Some("dlv-00001-0".to_owned()),
            ..Default::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(ExecutionFilter {
            event_id: Some("evt-00001".to_owned()),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(ExecutionFilter {
            data: Some("\"n\":10001".to_owned()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ExecutionFilter {
            error: Some("http 500".to_owned()),
            ..Default::default()
        })
        .await,
        2,
        "the error search ignores case"
    );
    assert_eq!(
        count(ExecutionFilter {
            error: Some("HTTP 500".to_owned()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(ExecutionFilter {
            from_ms: Some(t1 + 500),
            to_ms: Some(t1 + 600),
            ..Default::default()
        })
        .await,
        4
    );
    let before_row = store
        .list_executions(
            &ExecutionFilter {
                stage: Some(Stage::Before),
                ..Default::default()
            },
            page,
        )
        .await
        .unwrap()
        .0
        .remove(0);
    assert_eq!(before_row.data_after.as_deref(), Some("{\"n\":0}"));
    assert_eq!(before_row.response_status, Some(200));
    assert_eq!(
        before_row.request.target, "http://alice:***@127.0.0.1:9/hook",
        "a URL's password never reaches the log, whoever writes the row"
    );
    assert_eq!(
        before_row
            .request
            .headers
            .get("webhook-id")
            .map(String::as_str),
        Some("dlv-00001-0")
    );

    // --- Deleting a handler fails its open deliveries -----------------------
    assert!(store.delete_handler(h).await.unwrap());
    assert!(!store.delete_handler(h).await.unwrap());
    assert_eq!(states(store, "evt-00005").await, vec![Failed]);
    assert!(store.get_handler(h).await.unwrap().is_none());
    assert_eq!(
        count(ExecutionFilter {
            handler_id: Some(h),
            ..Default::default()
        })
        .await,
        6,
        "executions outlive their handler"
    );

    // --- The overview, monitoring, sessions and retention -------------------
    let activity = store.handler_activity(0, 3_600_000).await.unwrap();
    let mine = activity
        .iter()
        .find(|a| a.handler_id == h)
        .expect("the handler's activity");
    assert_eq!(mine.buckets.iter().map(|(_, s, f)| s + f).sum::<u64>(), 4);
    assert!(mine.p95_ms.is_some());

    let token = store
        .create_token("web", &TokenHash([7; 32]))
        .await
        .unwrap();
    let session = SessionRecord {
        token_id: token.id,
        csrf: "csrf-1".into(),
        expires_at_ms: 4_000_000_000_000,
    };
    store.create_session(&[9; 32], &session).await.unwrap();
    assert_eq!(
        store.find_session(&[9; 32]).await.unwrap(),
        Some(session.clone())
    );
    assert!(store.revoke_token(TokenRef::Name("web")).await.unwrap());
    assert_eq!(
        store.find_session(&[9; 32]).await.unwrap(),
        None,
        "revoking the token ends its sessions"
    );
    store.delete_session(&[9; 32], 0).await.unwrap();

    let unfinished = store.queue_stats().await.unwrap().unfinished;
    assert!(count(ExecutionFilter::default()).await > 0);
    // Everything finished is older than this; batches of two until done.
    while store.prune(4_000_000_000_000, 2).await.unwrap() > 0 {}
    assert_eq!(
        count(ExecutionFilter::default()).await,
        0,
        "old executions are pruned"
    );
    assert_eq!(
        store.queue_stats().await.unwrap().unfinished,
        unfinished,
        "unfinished work is kept"
    );
}
