//! Handler tests: what a handler would send for one event (after its filter
//! and its request template), and, when asked, what one real call answers.
//! Nothing is queued; a call that is made is logged, marked `test`.

use std::collections::BTreeMap;
use std::time::Duration;

use provisio_core::catalog::EventPattern;
use provisio_core::event::{Event, ObjectId, new_event_id};
use provisio_core::filter::FilterInput;
use provisio_core::handler::{Handler, HandlerDraft, HandlerKind, Stage};
use provisio_core::signing::SigningSecret;
use provisio_core::timefmt;

use crate::before::{Reply, read_reply};
use crate::outcome::{CallContext, LoggedCall, millis};
use crate::record::Recorded;
use crate::{Engine, EngineError, OpError};

/// The event a test uses.
#[derive(Debug, Clone)]
pub enum TestEvent {
    /// An event as given; the type's sample data when `data` is left out.
    Given {
        events_id: Option<String>,
        object_id: Option<ObjectId>,
        data: Option<String>,
    },
    /// An event from the log, by id.
    Logged(String),
}

/// What a test does: preview, or preview and send once.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub event: TestEvent,
    pub send: bool,
}

/// The request a handler makes, as shown (credentials masked).
#[derive(Debug, Clone)]
pub struct TestCall {
    /// `POST`, `PUT`, `PATCH`, `DELETE`; `RUN` for a script.
    pub method: String,
    /// The URL, or the script and its arguments.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// What the one real call answered.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// The HTTP status, or a script's exit code.
    pub status: Option<u16>,
    pub body: Option<String>,
    pub duration_ms: u32,
}

/// A before-stage handler's reply, read as the chain reads it.
#[derive(Debug, Clone)]
pub struct TestVerdict {
    pub allowed: bool,
    /// The data after the handler (its reply's, or as given).
    pub data: String,
    pub reason: Option<String>,
}

/// A test's findings.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// The event the test used.
    pub event: Event,
    pub passed_filter: bool,
    /// Why the filter could not be evaluated.
    pub filter_error: Option<String>,
    /// `None` when the event did not pass or the template could not render.
    pub request: Option<TestCall>,
    pub response: Option<TestResponse>,
    /// A template that cannot render, or the call's failure.
    pub error: Option<String>,
    /// Before stage, once sent.
    pub verdict: Option<TestVerdict>,
}

/// The most logged events one dry run looks at.
pub const MAX_DRY_RUN: u32 = 1000;
/// How many rendered requests a dry run shows.
const DRY_RUN_SAMPLES: usize = 5;

/// A handler over recent history.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    /// Logged events of the handler's pattern looked at, newest first.
    pub examined: u32,
    /// Those that pass its filter and render.
    pub passed: u32,
    /// Those its filter could not be evaluated for.
    pub filter_errors: u32,
    /// Those its request template could not render.
    pub render_errors: u32,
    /// The first few that pass (or fail to evaluate or render), as sent.
    pub samples: Vec<DrySample>,
}

/// One event of a dry run, and the request it would make.
#[derive(Debug, Clone)]
pub struct DrySample {
    pub event_id: String,
    pub events_id: String,
    pub request: Option<TestCall>,
    /// Why the filter or the template failed for it.
    pub error: Option<String>,
}

impl Engine {
    /// Tests a stored handler.
    pub async fn test_handler(&self, id: i64, test: TestRequest) -> Result<TestReport, OpError> {
        let handler = self.handler(id).await?;
        self.run_test(&handler, test).await
    }

    /// Tests a handler that is not saved: the draft is validated as a save
    /// would, and signs with a throwaway secret.
    pub async fn test_draft(
        &self,
        draft: HandlerDraft,
        test: TestRequest,
    ) -> Result<TestReport, OpError> {
        let handler = self.draft_handler(draft)?;
        self.run_test(&handler, test).await
    }

    /// A draft as a handler that could be saved, signing with a throwaway
    /// secret.
    fn draft_handler(&self, draft: HandlerDraft) -> Result<Handler, OpError> {
        let spec = self.validate_handler(draft).map_err(OpError::Invalid)?;
        let now = self.config().clock.now();
        Ok(Handler {
            id: 0,
            spec,
            pause: None,
            secret: SigningSecret::generate(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn run_test(&self, handler: &Handler, test: TestRequest) -> Result<TestReport, OpError> {
        let event = self.test_event(handler, test.event).await?;
        let msg_id = format!("test_{}", ulid::Ulid::new());
        let mut report = self.preview(handler, event, &msg_id);
        if !test.send || report.request.is_none() {
            return Ok(report);
        }
        let event = &report.event;
        let payload = event.payload();

        let started_at = self.config().clock.now();
        let object_key = event.object_id.key();
        let call = CallContext {
            msg_id: &msg_id,
            event_id: &event.id,
            events_id: &event.events_id,
            object_id: &object_key,
            stage: handler.spec.stage,
        };
        let timeout = Duration::from_millis(handler.spec.timeout_ms.into());
        let outcome = self
            .0
            .executors
            .call(handler, &call, payload, timeout)
            .await;
        report.response = Some(TestResponse {
            status: outcome.status,
            body: outcome.body.clone(),
            duration_ms: millis(outcome.duration),
        });
        let mut error = outcome.error.clone();
        let mut data_after = None;
        let mut logged_verdict = None;
        if handler.spec.stage == Stage::Before {
            let reply = read_reply(handler.spec.kind, &handler.spec.name, &outcome);
            logged_verdict = Some(reply.verdict());
            let (verdict, failure) = match reply {
                Reply::Changed(data) => {
                    data_after = Some(data.clone());
                    (verdict(true, data, None), None)
                }
                Reply::Unchanged => (verdict(true, event.data.clone(), None), None),
                Reply::Forbidden(reason) => {
                    (verdict(false, event.data.clone(), Some(reason)), None)
                }
                Reply::Failed(e) => {
                    let reason = format!(
                        "the call failed ({e}); its on_failure is {}",
                        handler.spec.on_failure
                    );
                    let allowed =
                        handler.spec.on_failure == provisio_core::handler::OnFailure::Allow;
                    (verdict(allowed, event.data.clone(), Some(reason)), Some(e))
                }
            };
            report.verdict = Some(verdict);
            error = failure;
        }
        report.error = error.clone();
        // Logged like any call, marked as a test (no delivery, attempt 1).
        if handler.id != 0 {
            let records = self
                .0
                .records
                .lock()
                .expect("records lock poisoned")
                .clone()
                .ok_or(EngineError::ShuttingDown)?;
            let row = LoggedCall {
                handler,
                delivery_id: None,
                event_id: event.id.clone(),
                events_id: event.events_id.clone(),
                object_id: event.object_id.clone(),
                stage: handler.spec.stage,
                attempt: 1,
                started_at,
                next_attempt_at: None,
                data_after,
                test: true,
                verdict: logged_verdict,
            }
            .record(outcome, error);
            let _ = records.send(Recorded::Execution(row)).await;
        }
        Ok(report)
    }

    /// What `handler` would do with `event`: its filter's verdict and the
    /// request it would send (nothing is sent).
    fn preview(&self, handler: &Handler, event: Event, msg_id: &str) -> TestReport {
        let mut report = TestReport {
            passed_filter: true,
            filter_error: None,
            request: None,
            response: None,
            error: None,
            verdict: None,
            event,
        };
        let event = &report.event;
        if let Some(filter) = &handler.spec.filter {
            let checked = FilterInput::new(
                &event.events_id,
                &event.object_id,
                &timefmt::format_seconds(event.dt),
                &event.data,
            )
            .and_then(|input| filter.check(&input));
            report.passed_filter = checked == Ok(true);
            report.filter_error = checked.err();
            if !report.passed_filter {
                return report;
            }
        }
        let payload = event.payload();
        report.request = match handler.spec.kind {
            HandlerKind::Http => match self.0.executors.http.prepare(handler, msg_id, payload) {
                Ok(prepared) => Some(TestCall {
                    method: prepared.method.to_string(),
                    url: provisio_core::handler::masked_target(&prepared.url).into_owned(),
                    headers: prepared.shown_headers(),
                    body: prepared.body,
                }),
                Err((e, _)) => {
                    report.error = Some(format!("the request template failed: {e}"));
                    None
                }
            },
            HandlerKind::Script => Some(TestCall {
                method: "RUN".into(),
                url: std::iter::once(handler.spec.target.as_str())
                    .chain(handler.spec.args.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                headers: BTreeMap::new(),
                body: payload,
            }),
        };
        report
    }

    /// A stored handler over the last `limit` logged events of its pattern.
    pub async fn dry_run_handler(&self, id: i64, limit: u32) -> Result<DryRun, OpError> {
        let handler = self.handler(id).await?;
        self.dry_run(&handler, limit).await
    }

    /// A draft over the last `limit` logged events of its pattern.
    pub async fn dry_run_draft(&self, draft: HandlerDraft, limit: u32) -> Result<DryRun, OpError> {
        let handler = self.draft_handler(draft)?;
        self.dry_run(&handler, limit).await
    }

    async fn dry_run(&self, handler: &Handler, limit: u32) -> Result<DryRun, OpError> {
        if !(1..=MAX_DRY_RUN).contains(&limit) {
            return Err(OpError::invalid_field(
                "limit",
                format!("must be from 1 to {MAX_DRY_RUN}"),
            ));
        }
        let events = self
            .store()
            .recent_events(&handler.spec.events_id, limit)
            .await?;
        // Up to a thousand filters and renders over events of up to 1 MiB:
        // off the runtime's workers, like a large emit's routing.
        let (engine, handler) = (self.clone(), handler.clone());
        tokio::task::spawn_blocking(move || engine.dry_run_over(&handler, events))
            .await
            .map_err(|_| OpError::Engine(EngineError::ShuttingDown))
    }

    fn dry_run_over(&self, handler: &Handler, events: Vec<Event>) -> DryRun {
        let mut run = DryRun {
            examined: events.len() as u32,
            ..DryRun::default()
        };
        for event in events {
            let report = self.preview(handler, event, "dry_run");
            match (&report.filter_error, &report.error) {
                (Some(_), _) => run.filter_errors += 1,
                (None, Some(_)) => run.render_errors += 1,
                (None, None) if report.passed_filter => run.passed += 1,
                _ => {}
            }
            let shown = report.passed_filter || report.filter_error.is_some();
            if shown && run.samples.len() < DRY_RUN_SAMPLES {
                run.samples.push(DrySample {
                    event_id: report.event.id,
                    events_id: report.event.events_id,
                    request: report.request,
                    error: report.filter_error.or(report.error),
                });
            }
        }
        run
    }

    /// The event a test uses: from the log, or as given, filled in from
    /// the handler and the catalog.
    async fn test_event(&self, handler: &Handler, event: TestEvent) -> Result<Event, OpError> {
        let (events_id, object_id, data) = match event {
            TestEvent::Logged(id) => {
                let (event, _) = self
                    .store()
                    .get_event(&id)
                    .await?
                    .ok_or_else(|| OpError::NotFound(format!("event {id}")))?;
                return Ok(event);
            }
            TestEvent::Given {
                events_id,
                object_id,
                data,
            } => (events_id, object_id, data),
        };
        let routes = self.routes();
        let events_id = match events_id {
            Some(id) => id,
            // A handler for one type is tested with that type.
            None => match &handler.spec.events_id {
                EventPattern::Exact(id) => id.clone(),
                _ => {
                    return Err(OpError::invalid_field(
                        "events_id",
                        "name an event type: this handler's pattern covers several",
                    ));
                }
            },
        };
        let Some(event_type) = routes.event_type(&events_id) else {
            return Err(OpError::invalid_field(
                "events_id",
                format!("unknown event type {events_id}"),
            ));
        };
        if !handler.spec.events_id.matches(&events_id) {
            return Err(OpError::invalid_field(
                "events_id",
                format!("the handler does not subscribe to {events_id}"),
            ));
        }
        let data = data
            .or_else(|| event_type.example.clone())
            .unwrap_or_else(|| "{}".into());
        let object_id = match object_id {
            Some(id) => id,
            None => sample_object(&data),
        };
        Ok(Event {
            id: new_event_id(),
            events_id,
            object_id,
            dt: self.config().clock.now(),
            data,
        })
    }
}

fn verdict(allowed: bool, data: String, reason: Option<String>) -> TestVerdict {
    TestVerdict {
        allowed,
        data,
        reason,
    }
}

/// The object a sample event is about: its data's `id` when it has one.
fn sample_object(data: &str) -> ObjectId {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|d| d.get("id").map(ToString::to_string))
        .and_then(|id| ObjectId::parse(&id).ok())
        .unwrap_or_else(|| ObjectId::from(1u64))
}
