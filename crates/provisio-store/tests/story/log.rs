//! The execution log: listed, filtered, read alone.

use provisio_core::event::{ExecutionStatus, Verdict};
use provisio_core::handler::Stage;
use provisio_store::*;

use crate::support::*;

pub async fn story(store: &dyn Store, handlers: &Handlers, t1: i64) {
    let u = handlers.unordered;
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
    assert_eq!(
        count(ExecutionFilter {
            verdict: Some(Verdict::Changed),
            ..Default::default()
        })
        .await,
        1,
        "before-stage calls by verdict"
    );
    assert_eq!(
        count(ExecutionFilter {
            verdict: Some(Verdict::Forbidden),
            ..Default::default()
        })
        .await,
        0
    );
    assert_eq!(
        count(ExecutionFilter {
            response: Some("account locked".to_owned()),
            ..Default::default()
        })
        .await,
        1,
        "the response search ignores case"
    );
    // LIKE's wildcards typed by the operator are plain text, not patterns.
    for typed in ["%", "_", "o%k"] {
        assert_eq!(
            count(ExecutionFilter {
                response: Some(typed.to_owned()),
                ..Default::default()
            })
            .await,
            0,
            "{typed:?} is searched for literally"
        );
    }
    assert_eq!(
        count(ExecutionFilter {
            response: Some("ok".to_owned()),
            stage: Some(Stage::After),
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
    assert_eq!(before_row.verdict, Some(Verdict::Changed));
    assert!(
        rows.iter()
            .all(|r| r.stage == Stage::Before || r.verdict.is_none())
    );
    assert!(before_row.test, "a test call is marked");
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
}
