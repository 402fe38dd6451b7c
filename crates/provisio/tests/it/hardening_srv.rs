//! The HTTP surface under an outside attacker (issue 10): what no credential
//! is needed for must not grow memory, hold connections, or send a browser
//! elsewhere, and a lost database is a 503 in the web section too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use provisio::config::Database;
use provisio_store::postgres::PgSettings;
use provisio_store::postgres::scratch::ScratchDatabase;
use tokio::task::{AbortHandle, JoinHandle};

use crate::helpers::*;
use crate::web::{get_page, login, web_client};

/// Hundreds of made-up methods, on matched and unmatched paths, leave one
/// `other` method in `/metrics`, not one time series per method.
#[tokio::test]
async fn made_up_methods_do_not_grow_metrics() {
    let app = TestApp::spawn().await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("BLOWUP{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 {
            "/api/v1/handlers"
        } else {
            "/nowhere"
        };
        let resp = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(!text.contains("BLOWUP"), "a made-up method became a label");
    let other: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("provisio_http_request_duration_seconds_count{"))
        .filter(|l| l.contains(r#"method="other""#))
        .collect();
    assert!(
        !other.is_empty() && other.len() <= 4,
        "one series per (route, status) for every unknown method: {other:#?}"
    );
    // Every other test in this process adds its few series too; hundreds of
    // methods would add about a megabyte.
    assert!(text.len() < 256 * 1024, "/metrics is {} bytes", text.len());
}

/// A login link crafted to send the operator to another site after login
/// leads to `/` instead.
#[tokio::test]
async fn login_never_redirects_to_another_site() {
    let app = TestApp::spawn().await;
    let client = web_client();
    for (next, expected) in [
        ("/\t/evil.example/x", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example/x", "/"),
        ("/%09/evil.example/x", "/"),
        ("https://evil.example/x", "/"),
        ("/executions?status=fail", "/executions?status=fail"),
    ] {
        let resp = client
            .post(app.url("/login"))
            .form(&[("token", ADMIN_TOKEN), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(resp.headers()["location"], expected, "{next:?}");
    }
}

/// A method a path does not take is a 405 with the methods it does take, and
/// a body: the JSON error under `/api`, a page elsewhere.
#[tokio::test]
async fn method_not_allowed_has_a_body_and_the_allowed_methods() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(reqwest::Method::PUT, "/api/v1/events", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let resp = app
        .client
        .delete(app.url("/api/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    let resp = app
        .client
        .put(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    let resp = app.client.put(app.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("<html") && page.contains("Method not allowed"),
        "{page}"
    );
}

/// A TCP proxy on loopback that can be cut like a network failure: then every
/// connection through it is closed and new ones are refused.
struct CuttableProxy {
    addr: SocketAddr,
    accepting: JoinHandle<()>,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
}

impl CuttableProxy {
    async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let tracked = pipes.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(pipe.abort_handle());
            }
        });
        CuttableProxy {
            addr,
            accepting,
            pipes,
        }
    }

    /// Closes the listener (so connecting is refused) and every connection.
    async fn cut(self) {
        self.accepting.abort();
        let _ = self.accepting.await;
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

/// While PostgreSQL cannot be reached, the web section answers 503 with a
/// page that says so (as the API does), not 500, and a login is not told
/// its token is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_answer_503_while_postgres_is_unreachable() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let mut url = reqwest::Url::parse(db.url()).unwrap();
    let target: SocketAddr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
        .parse()
        .unwrap();
    let proxy = CuttableProxy::start(target).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let app = TestApp::spawn_with(|s| {
        let mut pg = PgSettings::new(url.as_str());
        pg.acquire_timeout = std::time::Duration::from_secs(1);
        s.store.database = Database::Postgres(pg);
    })
    .await;
    let client = web_client();
    let (cookie, _csrf) = login(&app, &client).await;

    proxy.cut().await;

    let unavailable = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let page = resp.text().await.unwrap();
        assert!(
            page.contains("<html") && page.contains("database"),
            "{page}"
        );
    };
    for path in ["/handlers", "/executions", "/"] {
        let resp = get_page(&app, &client, &cookie, path).await;
        unavailable(resp).await;
    }
    // A token never seen before, so no cache can answer for the database.
    let resp = client
        .post(app.url("/login"))
        .form(&[("token", "pvo_never_issued"), ("next", "/")])
        .send()
        .await
        .unwrap();
    unavailable(resp).await;
    // The API already answered 503; it still does.
    let (status, body) = app.get("/api/v1/handlers").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
}
