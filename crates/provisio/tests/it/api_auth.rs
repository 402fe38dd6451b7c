//! Bearer tokens on every `/api` route; health endpoints without.

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn api_routes_refuse_a_missing_token_with_the_error_shape() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/api/v1/handlers"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (status, body) = read(resp).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_wrong_token_is_refused_on_every_api_route() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/handlers"),
        (reqwest::Method::POST, "/api/v1/handlers"),
        (reqwest::Method::GET, "/api/v1/event-types"),
        (reqwest::Method::POST, "/api/v1/events"),
        (reqwest::Method::GET, "/api/v1/executions"),
        (reqwest::Method::DELETE, "/api/v1/handlers/1"),
    ] {
        let resp = app
            .client
            .request(method, app.url(path))
            .bearer_auth("pvo_wrong")
            .send()
            .await
            .unwrap();
        let (status, body) = read(resp).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let resp = app
        .client
        .get(app.url("/api/v1/handlers"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_admin_token_is_accepted() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v1/handlers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 0);
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v1/nothing-here").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/api/v1/handlers/not-a-number").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}
