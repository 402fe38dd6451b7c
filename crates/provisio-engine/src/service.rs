//! The use cases both adapters call, the JSON API and the web section alike:
//! every change to handlers, the event catalog or the queue, each followed by
//! what makes it take effect (a routing-table reload or a dispatcher wake)
//! before it returns, so neither adapter can forget that step. They report one
//! error, [`OpError`], which each adapter maps to its own response.

use provisio_core::FieldErrors;
use provisio_core::catalog::EventPattern;
use provisio_core::catalog::EventType;
use provisio_core::catalog::HANDLER_PAUSED;
use provisio_core::event::{ExecutionStatus, Verdict};
use provisio_core::handler::{
    Handler, HandlerDraft, HandlerSpec, Stage, Status, ValidationContext,
};
use provisio_core::replay::ReplayStatus;
use provisio_core::timefmt;
use provisio_store::{
    DeliveryRecord, ExecutionFilter, NewReplay, Page, PauseChange, Redelivery, ReplayFilter,
    ReplayRecord, StoreError,
};

use crate::{EmitError, Engine, EngineError, EventInput};

mod delivery;
mod replay;
pub use delivery::DeliveryDetail;
pub use replay::ReplayRequest;

/// Why a use case did not happen, in terms both adapters can say.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The input breaks a rule; one message per field.
    #[error("invalid input: {}", .0.summary())]
    Invalid(FieldErrors),
    /// What the change is about does not exist; names it (`handler 3`).
    #[error("{0} not found")]
    NotFound(String),
    /// The change clashes with what is stored; says how.
    #[error("{0}")]
    Conflict(String),
    /// Not done now, but worth trying again shortly; says how.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed or the engine is stopping: the adapter decides how to
    /// say so (the database's unavailability is worth a retry, the rest is ours).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl OpError {
    /// Invalid input in one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut fields = FieldErrors::new();
        fields.add(field, message);
        OpError::Invalid(fields)
    }
}

impl From<StoreError> for OpError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => OpError::NotFound("resource".into()),
            StoreError::Conflict(message) => OpError::Conflict(message),
            other => OpError::Engine(other.into()),
        }
    }
}

impl From<EmitError> for OpError {
    fn from(err: EmitError) -> Self {
        match err {
            EmitError::UnknownEventType(_) => OpError::invalid_field("events_id", err.to_string()),
            EmitError::KeyReused => OpError::Conflict(err.to_string()),
            EmitError::NotStored(_) => {
                OpError::Unavailable("the event could not be stored; try again".into())
            }
            EmitError::TimedOut(_) => OpError::Unavailable(format!(
                "{err}; the event may not have been stored: send it again with the same Idempotency-Key"
            )),
            EmitError::Engine(e) => OpError::Engine(e),
        }
    }
}

/// A store error of a change to `what`, where "not found" means `what` is gone.
fn about(what: impl FnOnce() -> String) -> impl FnOnce(StoreError) -> OpError {
    move |err| match err {
        StoreError::NotFound => OpError::NotFound(what()),
        other => other.into(),
    }
}

fn handler_name(id: i64) -> String {
    format!("handler {id}")
}

impl Engine {
    /// Checks a draft against the current catalog and the scripts directory.
    pub fn validate_handler(&self, draft: HandlerDraft) -> Result<HandlerSpec, FieldErrors> {
        let event_types = self.routes().event_type_ids();
        let check_script = |target: &str| self.check_script(target);
        draft.validate(&ValidationContext {
            event_types: &event_types,
            check_script: &check_script,
        })
    }

    /// The stored handler `id`.
    pub async fn handler(&self, id: i64) -> Result<Handler, OpError> {
        self.store()
            .get_handler(id)
            .await?
            .ok_or_else(|| OpError::NotFound(handler_name(id)))
    }

    /// Validates and stores a new handler; it governs the next emit.
    pub async fn create_handler(&self, draft: HandlerDraft) -> Result<Handler, OpError> {
        let spec = self.validate_handler(draft).map_err(OpError::Invalid)?;
        let handler = self.store().insert_handler(&spec).await?;
        self.reload().await?;
        Ok(handler)
    }

    /// Validates and stores handler `id`'s new settings; they govern the next emit.
    pub async fn update_handler(&self, id: i64, draft: HandlerDraft) -> Result<Handler, OpError> {
        let spec = self.validate_handler(draft).map_err(OpError::Invalid)?;
        self.replace_handler(id, &spec).await
    }

    /// Switches handler `id` between enabled and disabled, keeping its other
    /// settings as stored. An archived handler is a [`OpError::Conflict`]:
    /// bringing it back is a change of its settings, not a switch.
    pub async fn toggle_handler(&self, id: i64) -> Result<Handler, OpError> {
        let mut spec = self.handler(id).await?.spec;
        spec.status = match spec.status {
            Status::Enabled => Status::Disabled,
            Status::Disabled => Status::Enabled,
            Status::Archived => {
                return Err(OpError::Conflict(format!(
                    "{} is archived",
                    handler_name(id)
                )));
            }
        };
        self.replace_handler(id, &spec).await
    }

    async fn replace_handler(&self, id: i64, spec: &HandlerSpec) -> Result<Handler, OpError> {
        let handler = self
            .store()
            .update_handler(id, spec)
            .await
            .map_err(about(|| handler_name(id)))?;
        self.reload().await?;
        Ok(handler)
    }

    /// Deletes handler `id` (its unfinished deliveries fail); no emit routes to
    /// it afterwards.
    pub async fn delete_handler(&self, id: i64) -> Result<(), OpError> {
        if !self.store().delete_handler(id).await? {
            return Err(OpError::NotFound(handler_name(id)));
        }
        self.reload().await?;
        Ok(())
    }

    /// Gives handler `id` a new signing secret, used from the next attempt on.
    pub async fn rotate_secret(&self, id: i64) -> Result<Handler, OpError> {
        let handler = self
            .store()
            .rotate_handler_secret(id)
            .await
            .map_err(about(|| handler_name(id)))?;
        self.reload().await?;
        Ok(handler)
    }

    /// Adds a type to the catalog; handlers and emits may use it at once.
    pub async fn add_event_type(&self, event_type: EventType) -> Result<EventType, OpError> {
        self.store().insert_event_type(&event_type).await?;
        self.reload().await?;
        Ok(event_type)
    }

    /// Pauses handler `id` for the operator: its deliveries are still queued
    /// and kept (held), none is attempted until [`Engine::resume_handler`].
    /// A before-stage handler is a [`OpError::Conflict`]: it queues nothing,
    /// so a pause would hold nothing (disable it instead).
    pub async fn pause_handler(&self, id: i64) -> Result<Handler, OpError> {
        let handler = self.handler(id).await?;
        if handler.spec.stage == Stage::Before {
            return Err(OpError::Conflict(format!(
                "{} runs at the before stage, where nothing is queued to hold; disable it instead",
                handler_name(id)
            )));
        }
        let at_ms = self.config().clock.now_ms();
        let handler = self
            .store()
            .change_pause(id, PauseChange::Operator { at_ms })
            .await?
            .ok_or_else(|| OpError::NotFound(handler_name(id)))?;
        self.reload().await?;
        metrics::counter!("provisio_handler_pauses_total", "handler" => id.to_string(), "cause" => "operator").increment(1);
        tracing::info!(handler = id, "handler paused by the operator");
        Ok(handler)
    }

    /// Resumes handler `id`, however it was paused: its held deliveries are
    /// due again at once, in per-object order. Resuming a running handler
    /// changes nothing.
    pub async fn resume_handler(&self, id: i64) -> Result<Handler, OpError> {
        let was = self.handler(id).await?;
        let handler = self
            .store()
            .change_pause(id, PauseChange::Resume)
            .await?
            .ok_or_else(|| OpError::NotFound(handler_name(id)))?;
        self.reload().await?;
        self.conflate_backlog(&handler).await?;
        self.wake();
        if was.pause.is_some() {
            metrics::counter!("provisio_handler_resumes_total", "handler" => id.to_string(), "cause" => "operator").increment(1);
            tracing::info!(handler = id, "handler resumed by the operator");
        }
        Ok(handler)
    }

    /// The automatic pause trips: pauses handler `id` with `reason` unless it
    /// is paused already, then tells whoever subscribed to
    /// `provisio.handler.paused`.
    pub(crate) async fn pause_automatically(&self, id: i64, reason: &str) -> Result<(), OpError> {
        let Some(settings) = self.routes().get(id).and_then(|h| h.spec.auto_pause) else {
            return Ok(());
        };
        let at_ms = self.config().clock.now_ms();
        let change = PauseChange::Automatic {
            reason,
            at_ms,
            probe_at_ms: at_ms + settings.probe_every.as_millis() as i64,
        };
        let Some(handler) = self.store().change_pause(id, change).await? else {
            return Ok(());
        };
        self.reload().await?;
        metrics::counter!("provisio_handler_pauses_total", "handler" => id.to_string(), "cause" => "automatic").increment(1);
        tracing::warn!(handler = id, name = %handler.spec.name, reason, "handler paused automatically");
        let data = serde_json::json!({
            "handler_id": id,
            "name": handler.spec.name,
            "reason": reason,
        });
        self.emit(
            EventInput {
                events_id: HANDLER_PAUSED.into(),
                object_id: id.into(),
                dt: None,
                data: data.to_string(),
            },
            None,
        )
        .await?;
        Ok(())
    }

    /// A probe of handler `id` succeeded: resumes it, unless the operator
    /// took the pause over meanwhile.
    pub(crate) async fn resume_after_probe(&self, id: i64) -> Result<(), OpError> {
        if self
            .store()
            .change_pause(id, PauseChange::SelfResume)
            .await?
            .is_none()
        {
            return Ok(());
        }
        self.reload().await?;
        if let Some(handler) = self.routes().get(id).cloned() {
            self.conflate_backlog(&handler).await?;
        }
        self.wake();
        metrics::counter!("provisio_handler_resumes_total", "handler" => id.to_string(), "cause" => "probe").increment(1);
        tracing::info!(handler = id, "handler resumed by itself: a probe succeeded");
        Ok(())
    }

    /// A resumed conflating handler sends each object's newest held delivery
    /// only: its backlog is conflated before the dispatcher sees it.
    async fn conflate_backlog(&self, handler: &Handler) -> Result<(), OpError> {
        if handler.spec.conflate {
            self.conflate_lines(handler.id).await?;
        }
        Ok(())
    }

    /// "Retry now": a finished delivery gets a fresh round of attempts, a
    /// pending one is due now, a waiting one's line head is due now (see
    /// [`Redelivery`]); then the dispatcher is woken.
    pub async fn redeliver(
        &self,
        delivery_id: &str,
    ) -> Result<(DeliveryRecord, Redelivery), OpError> {
        let now = self.config().clock.now_ms();
        let done = self
            .store()
            .redeliver(delivery_id, now)
            .await
            .map_err(about(|| format!("delivery {delivery_id}")))?;
        self.wake();
        Ok(done)
    }

    /// Gives up a blocked delivery: it fails as "skipped by `who`" (an API
    /// token's name) and the next waiting delivery of its object becomes due
    /// now. Only a blocked delivery can be skipped ([`OpError::Conflict`]).
    pub async fn skip_delivery(
        &self,
        delivery_id: &str,
        who: &str,
    ) -> Result<DeliveryRecord, OpError> {
        let now = self.config().clock.now_ms();
        let (delivery, moved) = self
            .store()
            .skip_blocked(delivery_id, who, now)
            .await
            .map_err(about(|| format!("delivery {delivery_id}")))?;
        tracing::warn!(
            delivery = delivery_id,
            handler = delivery.handler_id,
            who,
            released = moved.released,
            "skipped a blocked delivery; its object's line moves on"
        );
        metrics::counter!("provisio_deliveries_skipped_total").increment(1);
        crate::record::count_superseded(moved.superseded);
        self.wake();
        Ok(delivery)
    }

    /// Conflates handler `id`'s backlog at once: of each object's unsent
    /// deliveries only the newest stays (see `Store::conflate_lines`). For a
    /// handler that does not conflate it does nothing. Returns how many were
    /// superseded.
    pub async fn conflate_lines(&self, id: i64) -> Result<u64, OpError> {
        let now = self.config().clock.now_ms();
        let superseded = self
            .store()
            .conflate_lines(id, now)
            .await
            .map_err(about(|| handler_name(id)))?;
        crate::record::count_superseded(superseded);
        self.wake();
        Ok(superseded)
    }
}

/// The execution log's filters as a caller gives them: empty text means any,
/// `from` and `to` are an instant or a date. Both adapters read them through
/// [`ExecutionSearch::to_filter`], so they accept and refuse the same input.
#[derive(Debug, Default, Clone)]
pub struct ExecutionSearch {
    pub handler_id: Option<i64>,
    pub events_id: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub stage: Option<Stage>,
    pub object_id: Option<String>,
    pub event_id: Option<String>,
    pub delivery_id: Option<String>,
    /// The request body contains this text.
    pub data: Option<String>,
    /// The error contains this text.
    pub error: Option<String>,
    /// The response body (a script's output) contains this text.
    pub response: Option<String>,
    pub verdict: Option<Verdict>,
    /// From this instant (ISO 8601) or date (`2026-11-26`, from its start, UTC).
    pub from: Option<String>,
    /// Up to this instant or date (to its end, UTC).
    pub to: Option<String>,
    /// Calls made for this replay job.
    pub replay_id: Option<String>,
}

impl ExecutionSearch {
    pub fn to_filter(&self) -> Result<ExecutionFilter, OpError> {
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(ExecutionFilter {
            handler_id: self.handler_id,
            events_id: non_empty(&self.events_id),
            status: self.status,
            stage: self.stage,
            object_id: non_empty(&self.object_id),
            delivery_id: non_empty(&self.delivery_id),
            event_id: non_empty(&self.event_id),
            data: non_empty(&self.data),
            error: non_empty(&self.error),
            response: non_empty(&self.response),
            verdict: self.verdict,
            from_ms: bound(&self.from, "from", false)?,
            to_ms: bound(&self.to, "to", true)?,
            replay_id: non_empty(&self.replay_id),
        })
    }
}

/// Parses a `from`/`to` bound: a full instant, or a date meaning its first
/// (or, for `to`, its last) millisecond in UTC.
fn bound(value: &Option<String>, field: &str, end_of_day: bool) -> Result<Option<i64>, OpError> {
    let Some(text) = value.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = timefmt::parse(text) {
        return Ok(Some(timefmt::to_millis(t)));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, date_format).map_err(|_| {
        OpError::invalid_field(
            field,
            "must be a date (2026-11-26) or an ISO 8601 date-time with offset",
        )
    })?;
    let start = timefmt::to_millis(date.midnight().assume_utc());
    Ok(Some(if end_of_day {
        start + 86_400_000 - 1
    } else {
        start
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(from: &str, to: &str) -> ExecutionSearch {
        ExecutionSearch {
            from: Some(from.into()),
            to: Some(to.into()),
            ..ExecutionSearch::default()
        }
    }

    #[test]
    fn a_date_bound_covers_the_whole_day_in_utc() {
        let filter = search("2026-11-26", "2026-11-26").to_filter().unwrap();
        let day = filter.from_ms.unwrap();
        assert_eq!(day % 86_400_000, 0);
        assert_eq!(filter.to_ms, Some(day + 86_400_000 - 1));
        let exact = search("2026-11-26T10:00:00+02:00", "").to_filter().unwrap();
        assert_eq!(exact.from_ms, Some(day + 8 * 3_600_000));
        assert_eq!(exact.to_ms, None, "empty text is no bound");
    }

    #[test]
    fn a_bound_that_does_not_parse_names_its_field() {
        let err = search("", "yesterday").to_filter().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: to: must be a date (2026-11-26) or an ISO 8601 date-time with offset"
        );
    }

    #[test]
    fn emit_errors_keep_the_words_callers_read() {
        let unknown = OpError::from(EmitError::UnknownEventType("a.b".into()));
        assert!(matches!(&unknown, OpError::Invalid(f) if f.get("events_id").is_some()));
        let reused = OpError::from(EmitError::KeyReused);
        assert!(matches!(reused, OpError::Conflict(_)));
        let lost = OpError::from(EmitError::NotStored("disk full".into()));
        assert_eq!(lost.to_string(), "the event could not be stored; try again");
    }
}
