//! The before-stage chain: every enabled before-stage handler matching the
//! event runs strictly one after another, in priority order (ties by id). Each
//! sees the data as the previous one left it and may replace it, leave it, or
//! forbid the action; a failed call counts as its `on_failure` says. The whole
//! chain is bounded by a deadline.

use std::time::{Duration, Instant};

use provisio_core::event::{Verdict, new_event_id, payload};
use provisio_core::filter::FilterInput;
use provisio_core::handler::{HandlerKind, OnFailure, Stage};
use provisio_core::timefmt;
use provisio_store::RequestRecord;

use crate::emit::EmitError;
use crate::outcome::{CallContext, CallOutcome, LoggedCall, millis};
use crate::record::Recorded;
use crate::routes::count_filter_check;
use crate::{Engine, EngineError, EventInput};

/// What one handler of the chain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Replied with new `data`.
    Changed,
    /// Replied without new data.
    Unchanged,
    /// Forbade the action (`allow: false` or HTTP 403).
    Forbidden,
    /// The call failed; its `on_failure` decided what that means.
    Failed,
    /// Not called: the chain deadline had passed.
    Skipped,
    /// Not called: the data as it stood did not pass the handler's filter.
    FilteredOut,
}

impl StepOutcome {
    /// What the log keeps of a step that made a call (or was due to): a
    /// skipped call failed the chain's deadline. `None` for a step that
    /// logs nothing (filtered out).
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            Self::Changed => Some(Verdict::Changed),
            Self::Unchanged => Some(Verdict::Unchanged),
            Self::Forbidden => Some(Verdict::Forbidden),
            Self::Failed | Self::Skipped => Some(Verdict::Failed),
            Self::FilteredOut => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
            Self::Forbidden => "forbidden",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::FilteredOut => "filtered_out",
        }
    }
}

/// One handler's part in the chain.
#[derive(Debug, Clone)]
pub struct BeforeStep {
    pub handler_id: i64,
    pub handler_name: String,
    pub outcome: StepOutcome,
    pub duration_ms: u32,
    pub error: Option<String>,
}

/// The chain's verdict.
#[derive(Debug, Clone)]
pub struct BeforeVerdict {
    /// Identifies this run in the execution log (`event_id` of its rows).
    pub id: String,
    pub allowed: bool,
    /// The data as the chain left it (compact JSON object text).
    pub data: String,
    /// Why the action was forbidden.
    pub reason: Option<String>,
    /// The handler that forbade it (or whose failure did).
    pub handler_id: Option<i64>,
    pub steps: Vec<BeforeStep>,
}

/// How a reply reads.
pub(crate) enum Reply {
    Changed(String),
    Unchanged,
    Forbidden(String),
    Failed(String),
}

impl Reply {
    /// The verdict the log keeps for this reply.
    pub(crate) fn verdict(&self) -> Verdict {
        match self {
            Self::Changed(_) => Verdict::Changed,
            Self::Unchanged => Verdict::Unchanged,
            Self::Forbidden(_) => Verdict::Forbidden,
            Self::Failed(_) => Verdict::Failed,
        }
    }
}

impl Engine {
    /// Runs the before-stage chain for one event and returns the verdict.
    pub async fn run_before(&self, input: EventInput) -> Result<BeforeVerdict, EmitError> {
        let started = Instant::now();
        let routes = self.routes();
        if routes.event_type(&input.events_id).is_none() {
            return Err(EmitError::UnknownEventType(input.events_id));
        }
        let handlers: Vec<_> = routes
            .matching(Stage::Before, &input.events_id)
            .cloned()
            .collect();
        drop(routes);
        let records = self
            .0
            .records
            .lock()
            .expect("records lock poisoned")
            .clone();
        let records = records.ok_or(EngineError::ShuttingDown)?;

        let id = new_event_id();
        let clock = &self.0.config.clock;
        let dt = input.dt.unwrap_or_else(|| clock.now());
        let object_json = input.object_id.to_json();
        let object_key = input.object_id.key();
        let deadline = tokio::time::Instant::now() + self.0.config.before_deadline;
        let mut verdict = BeforeVerdict {
            id,
            allowed: true,
            data: input.data,
            reason: None,
            handler_id: None,
            steps: Vec::new(),
        };

        for handler in handlers {
            let started_at = clock.now();
            // A filter sees the data as the handlers before it left it. One
            // that cannot be evaluated counts as the handler's failure, so
            // its `on_failure` decides: a filter error never turns a forbid
            // into an allow.
            let unfiltered = match &handler.spec.filter {
                None => Ok(()),
                Some(filter) => {
                    let checked = FilterInput::new(
                        &input.events_id,
                        &input.object_id,
                        &timefmt::format_seconds(dt),
                        &verdict.data,
                    )
                    .and_then(|event| filter.check(&event));
                    count_filter_check(&checked);
                    match checked {
                        Ok(true) => Ok(()),
                        Ok(false) => {
                            verdict.steps.push(BeforeStep {
                                handler_id: handler.id,
                                handler_name: handler.spec.name.clone(),
                                outcome: StepOutcome::FilteredOut,
                                duration_ms: 0,
                                error: None,
                            });
                            continue;
                        }
                        Err(err) => Err(format!("not called: its filter failed: {err}")),
                    }
                }
            };
            let handler_timeout = Duration::from_millis(handler.spec.timeout_ms.into());
            let timeout = call_timeout(deadline, tokio::time::Instant::now(), handler_timeout);
            let body = payload(&input.events_id, &object_json, dt, &verdict.data);
            let (reply, outcome) = if let Err(err) = unfiltered {
                let mut outcome = CallOutcome::new(RequestRecord {
                    target: handler.spec.target.clone(),
                    body,
                    ..Default::default()
                });
                outcome.error = Some(err.clone());
                (Some(Reply::Failed(err)), outcome)
            } else if let Some(timeout) = timeout {
                let msg_id = format!("{}_{}", verdict.id, handler.id);
                let call = CallContext {
                    msg_id: &msg_id,
                    event_id: &verdict.id,
                    events_id: &input.events_id,
                    object_id: &object_key,
                    stage: Stage::Before,
                };
                let outcome = self.0.executors.call(&handler, &call, body, timeout).await;
                (
                    Some(read_reply(handler.spec.kind, &handler.spec.name, &outcome)),
                    outcome,
                )
            } else {
                let mut outcome = CallOutcome::new(RequestRecord {
                    target: handler.spec.target.clone(),
                    body,
                    ..Default::default()
                });
                outcome.error = Some("not called: the chain deadline had passed".into());
                (None, outcome)
            };

            let step_outcome = match &reply {
                None => StepOutcome::Skipped,
                Some(Reply::Changed(_)) => StepOutcome::Changed,
                Some(Reply::Unchanged) => StepOutcome::Unchanged,
                Some(Reply::Forbidden(_)) => StepOutcome::Forbidden,
                Some(Reply::Failed(_)) => StepOutcome::Failed,
            };
            let error = match &reply {
                None => outcome.error.clone(),
                Some(Reply::Failed(e)) => Some(e.clone()),
                _ => None,
            };
            let data_after = match &reply {
                Some(Reply::Changed(data)) => Some(data.clone()),
                _ => None,
            };
            verdict.steps.push(BeforeStep {
                handler_id: handler.id,
                handler_name: handler.spec.name.clone(),
                outcome: step_outcome,
                duration_ms: millis(outcome.duration),
                error: error.clone(),
            });
            let _ = records
                .send(Recorded::Execution(
                    LoggedCall {
                        handler: &handler,
                        delivery_id: None,
                        event_id: verdict.id.clone(),
                        events_id: input.events_id.clone(),
                        object_id: input.object_id.clone(),
                        stage: Stage::Before,
                        attempt: 1,
                        started_at,
                        next_attempt_at: None,
                        data_after,
                        test: false,
                        verdict: step_outcome.verdict(),
                    }
                    .record(outcome, error.clone()),
                ))
                .await;

            match reply {
                Some(Reply::Changed(data)) => verdict.data = data,
                Some(Reply::Unchanged) => {}
                Some(Reply::Forbidden(reason)) => {
                    verdict.allowed = false;
                    verdict.reason = Some(reason);
                    verdict.handler_id = Some(handler.id);
                    break;
                }
                Some(Reply::Failed(_)) | None => {
                    if handler.spec.on_failure == OnFailure::Forbid {
                        verdict.allowed = false;
                        verdict.reason = Some(format!(
                            "{} failed and its on_failure is forbid: {}",
                            handler.spec.name,
                            error.unwrap_or_default()
                        ));
                        verdict.handler_id = Some(handler.id);
                        break;
                    }
                }
            }
        }
        metrics::histogram!("provisio_before_chain_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("provisio_events_emitted_total", "events_id" => input.events_id.clone(), "stage" => "before").increment(1);
        Ok(verdict)
    }
}

/// How long the next handler of a chain may take, called at `now` under a
/// chain `deadline`: its own timeout, cut to what is left of the chain;
/// `None` once nothing is left, and the handler is skipped.
fn call_timeout(
    deadline: tokio::time::Instant,
    now: tokio::time::Instant,
    handler_timeout: Duration,
) -> Option<Duration> {
    let remaining = deadline.saturating_duration_since(now);
    (!remaining.is_zero()).then(|| remaining.min(handler_timeout))
}

/// A before-stage reply's fields, as far as the chain reads them. A derived
/// struct (not a map) so a duplicated `allow` or `data` is a parse error
/// rather than "the last one wins": two readers of one reply must never
/// disagree about whether it forbids.
#[derive(serde::Deserialize)]
struct ReplyBody {
    allow: Option<bool>,
    reason: Option<serde_json::Value>,
    /// Kept as the handler wrote it: parsed into a `Value`, an integer past
    /// 64 bits would come back rounded.
    data: Option<Box<serde_json::value::RawValue>>,
}

/// Reads a reply per DESIGN §4 "Before-stage replies" and §9: a reply that was
/// cut at the cap or cannot be parsed is a failure of the handler (its
/// `on_failure` applies), never "unchanged".
pub(crate) fn read_reply(kind: HandlerKind, name: &str, outcome: &CallOutcome) -> Reply {
    let body = outcome.body.as_deref().unwrap_or("").trim();
    let parsed: Result<ReplyBody, _> = serde_json::from_str(body);
    let reason = parsed
        .as_ref()
        .ok()
        .and_then(|reply| reply.reason.as_ref()?.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("forbidden by {name}"));
    if kind == HandlerKind::Http && outcome.status == Some(403) {
        return Reply::Forbidden(reason);
    }
    if let Some(error) = &outcome.error {
        return Reply::Failed(error.clone());
    }
    if outcome.truncated {
        return Reply::Failed(format!(
            "the reply is longer than {} KiB and was cut, so it cannot be read",
            crate::outcome::RESPONSE_BODY_CAP / 1024
        ));
    }
    if body.is_empty() {
        return Reply::Unchanged;
    }
    let reply = match parsed {
        Ok(reply) => reply,
        Err(err) => {
            return Reply::Failed(format!(
                "the reply is not a JSON object with a boolean allow and an object data: {err}"
            ));
        }
    };
    if reply.allow == Some(false) {
        return Reply::Forbidden(reason);
    }
    match reply.data {
        None => Reply::Unchanged,
        Some(data) if data.get().starts_with('{') => Reply::Changed(data.get().to_owned()),
        Some(_) => Reply::Failed("the reply's data is not a JSON object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use provisio_store::RequestRecord;
    use serde_json::{Value, json};

    fn reply(kind: HandlerKind, status: u16, body: &str, truncated: bool) -> Reply {
        let mut outcome = CallOutcome::new(RequestRecord::default());
        outcome.status = Some(status);
        outcome.body = Some(body.to_owned());
        outcome.truncated = truncated;
        read_reply(kind, "h", &outcome)
    }

    fn lets_through(reply: &Reply) -> bool {
        matches!(reply, Reply::Changed(_) | Reply::Unchanged)
    }

    /// Any JSON value, a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever else a reply holds, a top-level `"allow": false` never
        /// lets the action through.
        #[test]
        fn allow_false_is_never_read_as_allow(
            extra in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..8),
            kind in prop_oneof![Just(HandlerKind::Http), Just(HandlerKind::Script)],
        ) {
            let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
            object.insert("allow".into(), Value::Bool(false));
            let body = Value::Object(object).to_string();
            let read = reply(kind, 200, &body, false);
            prop_assert!(!lets_through(&read), "{body}");
        }

        /// A cut reply is a failure, whatever the part that arrived says.
        #[test]
        fn a_cut_reply_is_a_failure(body in ".{0,200}", status in 200u16..300) {
            prop_assert!(matches!(reply(HandlerKind::Http, status, &body, true), Reply::Failed(_)));
        }

        /// Arbitrary text never panics the reader, and text that is not a
        /// JSON object is never "unchanged" unless it is blank.
        #[test]
        fn arbitrary_text_is_read_safely(body in ".{0,200}") {
            let read = reply(HandlerKind::Script, 0, &body, false);
            let is_object = serde_json::from_str::<serde_json::Map<String, Value>>(&body).is_ok();
            if !is_object && !body.trim().is_empty() {
                prop_assert!(matches!(read, Reply::Failed(_)), "{body}");
            }
        }
    }

    #[test]
    fn each_call_gets_its_timeout_cut_to_what_is_left_of_the_chain() {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(10);
        let own = Duration::from_secs(3);
        assert_eq!(call_timeout(deadline, start, own), Some(own));
        let late = start + Duration::from_millis(8_500);
        assert_eq!(
            call_timeout(deadline, late, own),
            Some(Duration::from_millis(1_500))
        );
        // At or past the deadline the handler is skipped, not called with 0 s.
        assert_eq!(call_timeout(deadline, deadline, own), None);
        assert_eq!(call_timeout(deadline, deadline + own, own), None);
    }

    #[test]
    fn a_403_forbids_even_when_cut() {
        assert!(matches!(
            reply(HandlerKind::Http, 403, "{\"reason\": \"no", true),
            Reply::Forbidden(_)
        ));
    }
}
