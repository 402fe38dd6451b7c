//! The emit path: an accepted event and its deliveries are committed before the
//! caller hears 202. Emits are funnelled to the dispatcher, which commits
//! whatever has queued up in one transaction (group commit) with its next
//! claim: under load the cost of a commit is shared by many events, a lone
//! emit still commits at once, and its delivery is leased by that same commit
//! (see `dispatch.rs`).

use provisio_core::event::{Event, ObjectId, new_event_id};
use provisio_core::handler::Stage;
use provisio_core::timefmt::to_millis;
use provisio_store::{
    Claim, Claimed, EmitOutcome, Idempotency, NewDelivery, NewEvent, Store, StoreResult,
};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::{Engine, EngineError};

/// Emits queued for the dispatcher before callers wait for room.
pub(crate) const QUEUE_DEPTH: usize = 8192;
/// Events with more data than this are routed on a blocking thread when a
/// filter looks at them.
const FILTER_INLINE_BYTES: usize = 64 * 1024;
/// The most events one transaction commits.
pub(crate) const MAX_BATCH: usize = 1024;

/// An event as a caller gives it, its fields checked: what both the emit
/// (after stage) and the before-stage chain take.
#[derive(Debug, Clone)]
pub struct EventInput {
    pub events_id: String,
    pub object_id: ObjectId,
    /// When the action happened; now if not given.
    pub dt: Option<OffsetDateTime>,
    /// Compact JSON object text.
    pub data: String,
}

/// The answer to an emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmitReceipt {
    pub event_id: String,
    pub deliveries: u32,
    /// True when the idempotency key had been seen: nothing new was stored.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("unknown event type {0}; add it to the catalog first")]
    UnknownEventType(String),
    #[error("this Idempotency-Key was used with a different body")]
    KeyReused,
    #[error("the event could not be stored: {0}")]
    NotStored(String),
    /// The database did not take the event within the emit timeout.
    #[error("the database did not answer within {} ms", .0.as_millis())]
    TimedOut(std::time::Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub(crate) struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<EmitOutcome, String>>,
}

impl Engine {
    /// Stores the event with one delivery per matching enabled after-stage
    /// handler, in priority order, and returns once that is committed.
    /// An `idempotency` key seen before answers what was stored then.
    pub async fn emit(
        &self,
        input: EventInput,
        idempotency: Option<Idempotency>,
    ) -> Result<EmitReceipt, EmitError> {
        let routes = self.routes();
        if routes.event_type(&input.events_id).is_none() {
            return Err(EmitError::UnknownEventType(input.events_id));
        }
        let now = self.0.config.clock.now();
        let event_id = new_event_id();
        let event = Event {
            id: event_id.clone(),
            events_id: input.events_id,
            object_id: input.object_id,
            dt: input.dt.unwrap_or(now),
            data: input.data,
        };
        // A filter's work grows with the data (up to ~0.1 s for the worst
        // filter over a 1 MiB event, see the benchmark): a large event is
        // routed off the runtime's workers.
        let (routed, event) = if event.data.len() > FILTER_INLINE_BYTES
            && routes.filters(Stage::After, &event.events_id)
        {
            tokio::task::spawn_blocking(move || (routes.route(Stage::After, &event), event))
                .await
                .map_err(|_| EngineError::ShuttingDown)?
        } else {
            (routes.route(Stage::After, &event), event)
        };
        let deliveries: Vec<NewDelivery> = routed
            .handlers
            .iter()
            .map(|handler| NewDelivery {
                id: ulid::Ulid::new().to_string(),
                handler_id: handler.id,
                ordered: handler.spec.ordered,
            })
            .collect();
        let filtered_out = routed.filtered_out;
        let count = deliveries.len() as u32;
        let events_id_label = event.events_id.clone();
        let event = NewEvent {
            event,
            idempotency,
            deliveries,
            filtered_out,
            created_at_ms: to_millis(now),
        };
        let (reply, answer) = oneshot::channel();
        self.0
            .emits
            .send(Pending { event, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        // Past the deadline the caller is answered and the reply channel
        // dropped; the dispatcher skips an emit whose caller is gone, so an emit
        // still queued then is certainly not stored.
        let outcome = tokio::time::timeout(self.0.config.emit_timeout, answer)
            .await
            .map_err(|_| EmitError::TimedOut(self.0.config.emit_timeout))?
            .map_err(|_| EngineError::ShuttingDown)?;
        match outcome.map_err(EmitError::NotStored)? {
            EmitOutcome::Stored => {
                metrics::counter!("provisio_events_emitted_total", "events_id" => events_id_label, "stage" => "after").increment(1);
                Ok(EmitReceipt {
                    event_id,
                    deliveries: count,
                    replayed: false,
                })
            }
            EmitOutcome::Replayed {
                event_id,
                deliveries,
            } => Ok(EmitReceipt {
                event_id,
                deliveries,
                replayed: true,
            }),
            EmitOutcome::KeyReused => Err(EmitError::KeyReused),
        }
    }
}

/// Commits queued emits in one transaction, with `claim` in it when given,
/// and answers their callers. What the claim leased comes back. When the
/// emit's transaction fails, the claim is made on its own, so due work does
/// not wait for emits the database refuses; unless the database cannot be
/// reached at all, where the claim would fail the same way and the
/// dispatcher retries it shortly.
pub(crate) async fn commit(
    store: &dyn Store,
    queued: &mut Vec<Pending>,
    claim: Option<&Claim<'_>>,
) -> Option<StoreResult<Claimed>> {
    let started = std::time::Instant::now();
    let claim_alone = async || match claim {
        Some(claim) => Some(store.claim_due(claim).await),
        None => None,
    };
    // Callers that gave up waiting are not stored: they were answered 503.
    let (events, replies): (Vec<NewEvent>, Vec<_>) = queued
        .drain(..)
        .filter(|p| !p.reply.is_closed())
        .map(|p| (p.event, p.reply))
        .unzip();
    if events.is_empty() {
        return claim_alone().await;
    }
    let claimed = match store.emit(&events, claim).await {
        Ok(emitted) => {
            for (reply, outcome) in replies.into_iter().zip(emitted.outcomes) {
                let _ = reply.send(Ok(outcome));
            }
            emitted.claimed.map(Ok)
        }
        Err(err) => {
            tracing::error!(error = %err, events = events.len(), "could not store emitted events");
            for reply in replies {
                let _ = reply.send(Err(err.to_string()));
            }
            if err.is_unavailable() {
                claim.map(|_| Err(err))
            } else {
                claim_alone().await
            }
        }
    };
    metrics::histogram!("provisio_emit_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("provisio_emit_batch_size").record(events.len() as f64);
    claimed
}
