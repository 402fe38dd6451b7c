//! The overview: per handler, the last 24 hours of successes and failures as a
//! small server-rendered SVG bar chart, and the p95 duration.

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use provisio_core::handler::Status;
use provisio_core::timefmt::{from_millis, to_millis};
use provisio_store::{HandlerFilter, Page};
use time::OffsetDateTime;

use super::handlers::Paused;
use super::session::Operator;
use super::{Chrome, NoticeQuery, PageResult, render};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(overview))
}

const HOUR_MS: i64 = 3_600_000;
const HOURS: i64 = 24;
/// Drawing units: each hour's bar is 8 wide in a 10-unit slot, at most 56 high.
const SLOT: i64 = 10;
const MAX_BAR: f64 = 56.0;

struct Bar {
    x: i64,
    ok_y: f64,
    ok_h: f64,
    fail_y: f64,
    fail_h: f64,
    label: String,
}

struct Card {
    id: i64,
    name: String,
    events_id: String,
    status: &'static str,
    successes: u64,
    failures: u64,
    p95_ms: Option<u32>,
    bars: Vec<Bar>,
    paused: Option<Paused>,
    /// Deliveries held while paused.
    held: u64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    cards: Vec<Card>,
}

async fn overview(
    Operator { state, session }: Operator,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    let now = to_millis(OffsetDateTime::now_utc());
    // The chart's 24 slots end with the current hour.
    let first_hour = (now / HOUR_MS - (HOURS - 1)) * HOUR_MS;
    let filter = HandlerFilter::default();
    let ((handlers, _), activity) = tokio::try_join!(
        state.store().list_handlers(
            &filter,
            Page {
                page: 1,
                per_page: Page::MAX_PER_PAGE
            }
        ),
        state.store().handler_activity(first_hour, HOUR_MS),
    )?;
    let ids: Vec<i64> = handlers.iter().map(|h| h.id).collect();
    let queues = state.store().queue_counts(&ids).await?;
    let cards: Vec<Card> = handlers
        .iter()
        .filter(|h| h.spec.status != Status::Archived)
        .map(|h| {
            let buckets = activity.iter().find(|a| a.handler_id == h.id);
            let counts = |hour: i64| {
                buckets
                    .and_then(|a| a.buckets.iter().find(|(start, _, _)| *start == hour))
                    .map(|(_, s, f)| (*s, *f))
                    .unwrap_or((0, 0))
            };
            let hours: Vec<(i64, u64, u64)> = (0..HOURS)
                .map(|i| first_hour + i * HOUR_MS)
                .map(|h| (h, counts(h).0, counts(h).1))
                .collect();
            let peak = hours
                .iter()
                .map(|(_, s, f)| s + f)
                .max()
                .unwrap_or(0)
                .max(1) as f64;
            let bars = hours
                .iter()
                .enumerate()
                .map(|(i, (start, s, f))| {
                    let ok_h = *s as f64 / peak * MAX_BAR;
                    let fail_h = *f as f64 / peak * MAX_BAR;
                    let hour = from_millis(*start);
                    Bar {
                        x: i as i64 * SLOT + 1,
                        ok_y: 59.0 - ok_h,
                        ok_h,
                        fail_y: 59.0 - ok_h - fail_h,
                        fail_h,
                        label: format!("{:02}:00 UTC: {s} succeeded, {f} failed", hour.hour()),
                    }
                })
                .collect();
            Card {
                id: h.id,
                name: h.spec.name.clone(),
                events_id: h.spec.events_id.to_string(),
                status: h.spec.status.as_str(),
                successes: hours.iter().map(|(_, s, _)| s).sum(),
                failures: hours.iter().map(|(_, _, f)| f).sum(),
                p95_ms: buckets.and_then(|a| a.p95_ms),
                bars,
                paused: Paused::of(h),
                held: queues.get(&h.id).map_or(0, |c| c.held),
            }
        })
        .collect();
    let chrome = Chrome::new(&session, "overview", q.notice.as_deref());
    Ok(render(StatusCode::OK, &OverviewPage { chrome, cards }))
}
