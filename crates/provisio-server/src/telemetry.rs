//! Telemetry: `/metrics` in the Prometheus text format, and the HTTP request timer.
//!
//! The `metrics` facade has one recorder per process, so the Prometheus
//! recorder is installed once and shared by every server in the process.
//! Each running server also runs the recorder's upkeep ([`spawn_upkeep`]),
//! which bounds the memory histograms hold between scrapes.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::task::AbortOnDropHandle;

use crate::AppState;
use crate::board::{HealthState, SCRAPE_WAIT, Snapshot};

/// Seconds: from a fast loopback call to a slow receiver's timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness, an
        // embedding program); then this one only renders what it records.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// How often recorded histogram samples are folded into their buckets when
/// nothing scrapes `/metrics`.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds `handle`'s recorded histogram samples into their buckets every
/// `every`, as a scrape does. The exporter keeps each sample until then, so
/// without this a server that nobody scrapes grows with every request and
/// emit. The task ends when the returned handle is dropped.
pub fn spawn_upkeep(handle: PrometheusHandle, every: Duration) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    }))
}

/// Renders every metric, after setting the queue and health gauges from the
/// handlers' shared snapshot (`crate::board`), so a scrape costs no count of
/// its own: with a million deliveries queued it waits at most
/// [`SCRAPE_WAIT`] for a refresh, and is otherwise answered from the last one.
pub async fn render(State(state): State<AppState>) -> Response {
    match state.board().read(SCRAPE_WAIT).await {
        Ok(snapshot) => set_gauges(&snapshot),
        Err(err) => tracing::warn!(error = %err, "queue statistics unavailable for /metrics"),
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// The queue over every handler, by state, its oldest delivery's age, and
/// how many handlers are in each health state (labels with fixed values).
fn set_gauges(snapshot: &Snapshot) {
    let q = snapshot.total_queue();
    metrics::gauge!("provisio_deliveries_unfinished").set(q.total() as f64);
    for (state, n) in [
        ("pending", q.pending),
        ("waiting", q.waiting),
        ("held", q.held),
        ("blocked", q.blocked),
    ] {
        metrics::gauge!("provisio_deliveries_queued", "state" => state).set(n as f64);
    }
    let age = q
        .oldest_ms
        .map(|t| (snapshot.as_of_ms - t).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("provisio_oldest_unfinished_delivery_age_seconds").set(age);
    let mut states = [
        (HealthState::Ok, 0u64),
        (HealthState::Failing, 0),
        (HealthState::Idle, 0),
    ];
    for f in snapshot.figures.values() {
        let (health, _) = crate::board::view(f.paused, Some(f), snapshot.since_ms);
        if let Some(entry) = states.iter_mut().find(|(s, _)| *s == health.state) {
            entry.1 += 1;
        }
    }
    for (state, n) in states {
        metrics::gauge!("provisio_handlers", "health" => state.as_str()).set(n as f64);
    }
}

/// Middleware: times every request by its route pattern (never the raw path,
/// which would make a time series per id). Every label has a bounded set of
/// values, since anyone can send a request: the method is one of nine names
/// or `other`, the route a pattern or `unmatched`, the status three digits.
pub async fn time_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    metrics::histogram!(
        "provisio_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; any other (HTTP allows any token) is
/// `other`, or each made-up method would make a time series of its own.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_others_are_one_value() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["BLOWUP1", "get", "PROPFIND", "X"] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }
}
