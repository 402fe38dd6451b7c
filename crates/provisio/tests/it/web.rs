//! The web section, server side: sessions, CSRF, expiry, error pages. (The
//! browser drives the pages themselves in `browser.rs`.)

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// A client that keeps cookies but does not follow redirects, so each step
/// can be checked.
pub(crate) fn web_client() -> reqwest::Client {
    let _ = http_client();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in and returns the session cookie and the page's CSRF token.
pub(crate) async fn login(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let resp = client
        .post(app.url("/login"))
        .form(&[("token", ADMIN_TOKEN), ("next", "/handlers")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/handlers");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = client
        .get(app.url("/handlers"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

/// GETs `path` with the session cookie.
pub(crate) async fn get_page(
    app: &TestApp,
    client: &reqwest::Client,
    cookie: &str,
    path: &str,
) -> reqwest::Response {
    client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_need_a_session_and_a_bad_token_is_refused() {
    let app = TestApp::spawn().await;
    let client = web_client();
    for path in [
        "/",
        "/handlers",
        "/handlers/new",
        "/executions",
        "/executions/1",
    ] {
        let resp = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
        assert!(
            resp.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login?next="),
            "{path}"
        );
    }
    let resp = client
        .post(app.url("/login"))
        .form(&[("token", "pvo_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.text().await.unwrap().contains("not valid"));
    // A login posted from another site is refused.
    let resp = client
        .post(app.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let client = web_client();
    let (cookie, csrf) = login(&app, &client).await;
    let h = app
        .create_handler(json!({ "target": "http://127.0.0.1:1/x" }))
        .await;
    let fields = [
        ("name", "Sneaky"),
        ("events_id", "clients.create"),
        ("stage", "after"),
        ("status", "enabled"),
        ("kind", "http"),
        ("target", "http://127.0.0.1:1/y"),
        ("priority", "100"),
    ];
    for token in ["", "wrong-token"] {
        let mut form = fields.to_vec();
        form.push(("csrf", token));
        let resp = client
            .post(app.url("/handlers"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "csrf {token:?}");
        let resp = client
            .post(app.url(&format!("/handlers/{}/toggle", h["id"])))
            .header("cookie", &cookie)
            .form(&[("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let resp = client
            .post(app.url(&format!("/handlers/{}/delete", h["id"])))
            .header("cookie", &cookie)
            .form(&[("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["status"], "enabled");

    // With the token, the same form works (and htmx may send it as a header).
    let mut form = fields.to_vec();
    form.push(("csrf", &csrf));
    let resp = client
        .post(app.url("/handlers"))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = client
        .post(app.url(&format!("/handlers/{}/toggle", h["id"])))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .form(&[("back", "/handlers")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 2);
    assert_eq!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == h["id"])
            .unwrap()["status"],
        "disabled"
    );
}

#[tokio::test]
async fn an_expired_session_sends_the_operator_back_to_login() {
    let app = TestApp::spawn_with(|s| s.session_ttl = Duration::from_millis(1500)).await;
    let client = web_client();
    let (cookie, _) = login(&app, &client).await;
    let resp = get_page(&app, &client, &cookie, "/handlers").await;
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let resp = get_page(&app, &client, &cookie, "/handlers").await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("notice=expired"), "{location}");
    let page = client
        .get(app.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Your session expired"),
        "the login page says why"
    );
}

#[tokio::test]
async fn logging_out_ends_the_session() {
    let app = TestApp::spawn().await;
    let client = web_client();
    let (cookie, csrf) = login(&app, &client).await;
    let resp = client
        .post(app.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = get_page(&app, &client, &cookie, "/handlers").await;
    assert_eq!(resp.status(), 303, "the old cookie no longer works");
}

#[tokio::test]
async fn error_pages_are_pages() {
    let app = TestApp::spawn().await;
    let client = web_client();
    let (cookie, _) = login(&app, &client).await;
    for path in ["/no-such-page", "/handlers/999/edit", "/executions/999"] {
        let resp = get_page(&app, &client, &cookie, path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND.as_u16(), "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("<h1>") && body.contains("not found"),
            "{path}: {body}"
        );
    }
    let (status, body) = app.get("/api/v1/no-such-thing").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_form_shows_errors_next_to_fields_and_keeps_the_input() {
    let app = TestApp::spawn().await;
    let client = web_client();
    let (cookie, csrf) = login(&app, &client).await;
    let resp = client
        .post(app.url("/handlers"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "My switch"),
            ("events_id", "clients.create"),
            ("stage", "after"),
            ("status", "enabled"),
            ("kind", "http"),
            ("target", "ftp://nope"),
            ("priority", "soon"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let page = resp.text().await.unwrap();
    assert!(page.contains("value=\"My switch\""), "the name is kept");
    assert!(page.contains("value=\"ftp://nope\""), "the target is kept");
    assert!(
        page.contains("id=\"target-error\""),
        "the target error is next to it"
    );
    assert!(page.contains("id=\"priority-error\">must be a whole number"));
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 0);
}
