//! The replay use cases: a job's filter checked the way the execution log's
//! is, against the handler and the catalog; starting, reading and cancelling
//! jobs, each followed by a wake.

use super::*;

/// A replay job as a caller asks for it: the handler and the filter, text
/// as given (empty text means any). Both adapters start jobs through
/// [`Engine::start_replay`], so they accept and refuse the same input.
#[derive(Debug, Default, Clone)]
pub struct ReplayRequest {
    pub handler_id: i64,
    /// An event type or pattern (`clients.*`).
    pub events_id: Option<String>,
    /// The object's id as text (`12` and `"12"` are the same object).
    pub object_id: Option<String>,
    /// Events stored from this instant or date (as the execution log reads it).
    pub from: Option<String>,
    /// Events stored up to this instant or date (to its end).
    pub to: Option<String>,
    /// `all` when left out.
    pub status: Option<ReplayStatus>,
    /// For each object only its most recent matching event (a resync).
    pub latest_per_object: bool,
}

fn replay_name(id: &str) -> String {
    format!("replay {id}")
}

impl Engine {
    /// Checks a replay request against the handler and the catalog: every
    /// problem, each under its field.
    async fn replay_filter(
        &self,
        request: &ReplayRequest,
    ) -> Result<(Handler, ReplayFilter), OpError> {
        let mut errors = FieldErrors::new();
        let id = request.handler_id;
        let handler = self.store().get_handler(id).await?;
        match &handler {
            None => errors.add("handler_id", format!("there is no {}", handler_name(id))),
            Some(h) if h.spec.stage == Stage::Before => errors.add(
                "handler_id",
                format!(
                    "{} runs at the before stage: replay is for after-stage handlers",
                    handler_name(id)
                ),
            ),
            Some(h) if h.spec.status != Status::Enabled => errors.add(
                "handler_id",
                format!(
                    "{} is {}: enable it first, or its replayed deliveries would not be sent",
                    handler_name(id),
                    h.spec.status
                ),
            ),
            Some(_) => {}
        }
        let text = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let events_id = match text(&request.events_id) {
            None => None,
            Some(p) => {
                let types = self.routes().event_type_ids();
                match EventPattern::parse(p.trim()).and_then(|pattern| {
                    pattern.check_against(types.iter().map(String::as_str))?;
                    Ok(pattern)
                }) {
                    Ok(pattern) => Some(pattern),
                    Err(message) => {
                        errors.add("events_id", message);
                        None
                    }
                }
            }
        };
        let mut bound_of = |value: &Option<String>, field: &str, end_of_day: bool| {
            bound(value, field, end_of_day).unwrap_or_else(|err| {
                if let OpError::Invalid(fields) = err {
                    for (field, message) in fields.iter() {
                        errors.add(field, message);
                    }
                }
                None
            })
        };
        let from_ms = bound_of(&request.from, "from", false);
        let to_ms = bound_of(&request.to, "to", true);
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && from > to
        {
            errors.add("to", "must not be before from");
        }
        match handler {
            Some(handler) if errors.is_empty() => Ok((
                handler,
                ReplayFilter {
                    events_id,
                    object_key: text(&request.object_id).map(|s| s.trim().to_owned()),
                    from_ms,
                    to_ms,
                    status: request.status.unwrap_or(ReplayStatus::All),
                    latest_per_object: request.latest_per_object,
                },
            )),
            _ => Err(OpError::Invalid(errors)),
        }
    }

    /// Starts a replay job: one new delivery to the handler per matching
    /// event, through the normal queue, in emit order per object. A filter
    /// that matches nothing is a job that is done at once.
    pub async fn start_replay(
        &self,
        request: &ReplayRequest,
        started_by: &str,
    ) -> Result<ReplayRecord, OpError> {
        let (handler, filter) = self.replay_filter(request).await?;
        let now = self.config().clock.now_ms();
        let job = NewReplay {
            id: ulid::Ulid::new().to_string(),
            handler_id: handler.id,
            ordered: handler.spec.ordered,
            filter,
            until_ms: now,
            created_by: started_by.to_owned(),
            created_at_ms: now,
        };
        let record = self
            .store()
            .start_replay(&job)
            .await
            .map_err(|err| match err {
                // Deleted since it was checked.
                StoreError::NotFound => OpError::invalid_field(
                    "handler_id",
                    format!("there is no {}", handler_name(handler.id)),
                ),
                other => other.into(),
            })?;
        metrics::counter!("provisio_replays_started_total").increment(1);
        metrics::counter!("provisio_replay_deliveries_queued_total").increment(record.queued);
        tracing::info!(
            replay = %record.id,
            handler = record.handler_id,
            matched = record.matched,
            queued = record.queued,
            latest_per_object = request.latest_per_object,
            by = %started_by,
            "replay started"
        );
        if record.queued > 0 {
            self.wake();
        }
        Ok(record)
    }

    /// Replay job `id` with its progress.
    pub async fn replay(&self, id: &str) -> Result<ReplayRecord, OpError> {
        self.store()
            .get_replay(id)
            .await?
            .ok_or_else(|| OpError::NotFound(replay_name(id)))
    }

    /// Replay jobs, newest first.
    pub async fn replays(&self, page: Page) -> Result<(Vec<ReplayRecord>, u64), OpError> {
        Ok(self.store().list_replays(page).await?)
    }

    /// Cancels what job `id` has not sent yet (attempts in flight finish);
    /// the deliveries its unsent ones held up in their objects' lines move on.
    pub async fn cancel_replay(&self, id: &str, by: &str) -> Result<ReplayRecord, OpError> {
        let now = self.config().clock.now_ms();
        let (record, released) = self
            .store()
            .cancel_replay(id, now)
            .await
            .map_err(about(|| replay_name(id)))?;
        tracing::info!(replay = %id, cancelled = record.cancelled, by = %by, "replay cancelled");
        if released > 0 {
            self.wake();
        }
        Ok(record)
    }
}
