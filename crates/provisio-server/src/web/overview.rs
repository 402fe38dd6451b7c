//! The overview: the queue over every handler, then per handler its state,
//! its queue and the last 24 hours of outcomes (deliveries, each counted once
//! however many attempts it took; before-stage calls) as a small
//! server-rendered SVG bar chart, with the p95 call duration. Failing
//! handlers come first. The counts come from the shared snapshot
//! (`crate::board`), so this page costs the same with a million rows queued.

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use provisio_core::handler::{Handler, Stage, Status};
use provisio_core::timefmt::from_millis;
use provisio_store::{HandlerFilter, Page};

use super::handlers::Paused;
use super::health_view::{Shown, age};
use super::session::Operator;
use super::{Chrome, NoticeQuery, PageResult, render};
use crate::AppState;
use crate::board::{HOUR_MS, HealthState, PAGE_WAIT, Queue, Snapshot};

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(overview))
}

const HOURS: i64 = 24;
/// Drawing units: each hour's bar is 8 wide in a 10-unit slot, at most 56 high.
const SLOT: i64 = 10;
const MAX_BAR: f64 = 56.0;
/// The p95 is of each handler's newest calls, at most this many: a bounded
/// walk of the log however much of it there is.
const P95_SAMPLE: u32 = 200;

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
    /// "deliveries" (after stage) or "calls" (before stage).
    unit: &'static str,
    shown: Shown,
    p95_ms: Option<u32>,
    bars: Vec<Bar>,
    paused: Option<Paused>,
    /// Deliveries held while paused.
    held: u64,
    failing: bool,
}

/// The queue over every handler, all four counts shown even when zero.
struct Totals {
    queue: Queue,
    oldest: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    totals: Totals,
    cards: Vec<Card>,
}

async fn overview(
    Operator { state, session }: Operator,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    let filter = HandlerFilter::default();
    let page = Page {
        page: 1,
        per_page: Page::MAX_PER_PAGE,
    };
    let ((handlers, _), snapshot) = tokio::try_join!(
        state.store().list_handlers(&filter, page),
        state.board().read(PAGE_WAIT),
    )?;
    let handlers: Vec<&Handler> = handlers
        .iter()
        .filter(|h| h.spec.status != Status::Archived)
        .collect();
    let ids: Vec<i64> = handlers.iter().map(|h| h.id).collect();
    let p95 = state
        .store()
        .call_p95(&ids, snapshot.since_ms, P95_SAMPLE)
        .await?;
    let now = snapshot.as_of_ms;
    let mut cards: Vec<Card> = handlers
        .iter()
        .map(|h| card(h, &snapshot, p95.get(&h.id).copied()))
        .collect();
    // Failing first; otherwise the priority order the list came in.
    cards.sort_by_key(|c| !c.failing);
    let queue = snapshot.total_queue();
    let totals = Totals {
        oldest: queue.oldest_ms.map(|t| age(now - t)),
        queue,
    };
    let chrome = Chrome::new(&session, "overview", q.notice.as_deref());
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            chrome,
            totals,
            cards,
        },
    ))
}

fn card(h: &Handler, snapshot: &Snapshot, p95_ms: Option<u32>) -> Card {
    let now = snapshot.as_of_ms;
    let (health, queue) = snapshot.view(h);
    // The chart's 24 slots end with the current hour; outcomes from the
    // window's first, partial hour join the first slot.
    let first_hour = (now / HOUR_MS - (HOURS - 1)) * HOUR_MS;
    let mut hours: Vec<(i64, u64, u64)> = (0..HOURS)
        .map(|i| (first_hour + i * HOUR_MS, 0, 0))
        .collect();
    for b in snapshot
        .of(h.id)
        .map(|f| f.buckets.as_slice())
        .unwrap_or_default()
    {
        let slot = ((b.start_ms - first_hour) / HOUR_MS).clamp(0, HOURS - 1) as usize;
        hours[slot].1 += b.succeeded - b.forbidden;
        hours[slot].2 += b.failed;
    }
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
        unit: match h.spec.stage {
            Stage::After => "deliveries",
            Stage::Before => "calls",
        },
        failing: health.state == HealthState::Failing,
        shown: Shown::new(&health, &queue, now),
        p95_ms,
        bars,
        paused: Paused::of(h),
        held: queue.held,
    }
}
