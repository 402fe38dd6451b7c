//! The handlers, events, claims and results the story is made of.

use std::collections::BTreeMap;

use provisio_core::catalog::EventPattern;
use provisio_core::event::{DeliveryState, Event, ExecutionStatus, ObjectId};
use provisio_core::filter::Filter;
use provisio_core::handler::{HandlerKind, HandlerSpec, OnExhausted, OnFailure, Stage, Status};
use provisio_core::request::RequestTemplate;
use provisio_core::timefmt::from_millis;
use provisio_store::postgres::scratch::ScratchDatabase;
use provisio_store::postgres::{PgSettings, PgStore};
use provisio_store::sqlite::{Durability, SqliteStore};
use provisio_store::*;

/// A fresh SQLite store, in a temporary directory (`story.db` in it) that
/// lives as long as the returned handle.
pub async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("story.db"), Durability::Normal)
        .await
        .unwrap();
    (dir, store)
}

/// A PostgreSQL store on a fresh database, or `None` where PostgreSQL is
/// unreachable outside CI. The database lives as long as the handle.
pub async fn postgres() -> Option<(ScratchDatabase, PgStore)> {
    let db = ScratchDatabase::create().await?;
    let store = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
    Some((db, store))
}

/// The story's two handlers, by id: one ordered, one not.
pub struct Handlers {
    pub ordered: i64,
    pub unordered: i64,
}

pub fn spec(name: &str, ordered: bool) -> HandlerSpec {
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
        // Stored and read back on both backends, as written.
        filter: Some(Filter::parse("has(data.plan) && data.plan != 'trial'").unwrap()),
        request: Some(
            RequestTemplate::compile(
                serde_json::from_value(serde_json::json!({
                    "method": "PUT",
                    "url": "http://127.0.0.1:9/customers/{{ event.object_id }}",
                    "by_event": { "clients.delete": { "method": "DELETE", "body": null } }
                }))
                .unwrap(),
            )
            .unwrap(),
        ),
        on_exhausted: OnExhausted::Block,
        conflate: false,
        auto_pause: None,
        max_in_flight: None,
        rate_limit: None,
    }
}

/// An event for object 7 (or `n`'s own object when `n >= 10_000`).
/// Stores a batch without a claim, as most chapters emit, and says what
/// became of each event.
pub async fn insert_events(store: &dyn Store, batch: &[NewEvent]) -> Vec<EmitOutcome> {
    store.emit(batch, None).await.unwrap().outcomes
}

pub fn new_event(n: u64, at_ms: i64, handlers: &[(i64, bool)], key: Option<&str>) -> NewEvent {
    let object = if n >= 10_000 { n } else { 7 };
    NewEvent {
        filtered_out: Vec::new(),
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

pub fn finished(c: &ClaimedDelivery, next: DeliveryNext, at_ms: i64) -> AttemptResult {
    AttemptResult {
        delivery_seq: c.seq,
        handler_id: c.handler_id,
        object_key: c.event.object_id.key(),
        attempts: c.attempts + 1,
        next,
        conflate: false,
        spare_round: false,
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
            test: false,
            verdict: None,
        }),
    }
}

/// A claim at 2,000 ms of the named handlers' due work, each up to its
/// room, `limit` rows in all, leased until 60,000 ms.
pub fn claim_of(handlers: &[(i64, u32)], limit: u32) -> Claim<'_> {
    Claim {
        now_ms: 2_000,
        lease_until_ms: 60_000,
        limit,
        handlers,
    }
}

/// Leases what [`claim_of`] names.
pub async fn lease(store: &dyn Store, handlers: &[(i64, u32)], limit: u32) -> Vec<ClaimedDelivery> {
    store
        .claim_due(&claim_of(handlers, limit))
        .await
        .unwrap()
        .deliveries
}

/// Claims up to 100 due deliveries of any handler (ids 1 to 50 cover a
/// fresh store's) but those in `skip`.
pub async fn claim(store: &dyn Store, now_ms: i64, skip: &[i64]) -> Vec<ClaimedDelivery> {
    claim_and_due(store, now_ms, skip).await.deliveries
}

/// [`claim`], with the next due time the claim read after itself.
pub async fn claim_and_due(store: &dyn Store, now_ms: i64, skip: &[i64]) -> Claimed {
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

pub async fn states(store: &dyn Store, event_id: &str) -> Vec<DeliveryState> {
    let (_, deliveries) = store.get_event(event_id).await.unwrap().unwrap();
    deliveries.iter().map(|d| d.state).collect()
}
