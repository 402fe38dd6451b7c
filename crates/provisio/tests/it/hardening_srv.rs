//! The HTTP surface under an outside attacker (issue 10): what no credential
//! is needed for must not grow memory, hold connections, or send a browser
//! elsewhere, and a lost database is a 503 in the web section too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use provisio::config::{Database, Settings};
use provisio_engine::{Engine, EngineConfig};
use provisio_server::{AppState, ServerConfig};
use provisio_store::postgres::PgSettings;
use provisio_store::postgres::scratch::ScratchDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

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
        pg.acquire_timeout = Duration::from_secs(1);
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

/// `provisio_server::run` itself, with connection settings `serve` does not
/// expose, over a fresh SQLite store.
struct DirectServer {
    addr: SocketAddr,
    stop: CancellationToken,
    served: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl DirectServer {
    async fn start(config: ServerConfig) -> DirectServer {
        provisio::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::for_data_dir(dir.path());
        let store = provisio::serve::open_store(&settings.store).await.unwrap();
        let engine = Engine::start(store, EngineConfig::new(settings.scripts_dir))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let served = tokio::spawn(provisio_server::run(
            listener,
            AppState::new(engine, config),
            stop.clone().cancelled_owned(),
        ));
        DirectServer {
            addr,
            stop,
            served,
            _dir: dir,
        }
    }
}

/// Connects and sends `bytes`, then sends nothing more.
async fn stall(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the server closes the connection: what it sent and how long
/// that took, or `None` if it was still open after `PATIENCE`.
async fn until_closed(mut stream: TcpStream) -> Option<(String, Duration)> {
    let started = Instant::now();
    let mut got = Vec::new();
    // EOF or a reset (an error): closed either way.
    let _closed = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .ok()?;
    Some((
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    ))
}

const SHORT: Duration = Duration::from_millis(1000);

fn short_timeouts() -> ServerConfig {
    ServerConfig {
        header_timeout: SHORT,
        body_timeout: SHORT,
        ..ServerConfig::default()
    }
}

/// A few hundred clients that never finish their headers neither keep
/// others out nor keep their connections: each is closed after the header
/// timeout, and shutting down does not wait for them longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off_and_starve_no_one() {
    let server = DirectServer::start(short_timeouts()).await;
    let mut stalled = Vec::new();
    for i in 0..300 {
        let partial: &[u8] = if i % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        } else {
            b"GE"
        };
        stalled.push(stall(server.addr, partial).await);
    }

    let started = Instant::now();
    let resp = http_client()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < SHORT / 2,
        "a normal request waited {:?}",
        started.elapsed()
    );

    let closed = futures_join(stalled.into_iter().map(until_closed).collect()).await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "stalled connections still open after {PATIENCE:?}");
    for (_, waited) in closed.into_iter().flatten() {
        assert!(waited < SHORT * 3, "closed only after {waited:?}");
    }

    // Graceful shutdown with a stalled client: bounded by the header timeout.
    let _late = stall(server.addr, b"GET /healthz HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.stop.cancel();
    tokio::time::timeout(PATIENCE, server.served)
        .await
        .expect("shutdown waited on a stalled client")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < SHORT * 3, "{:?}", started.elapsed());
}

/// A kept-alive connection left idle after its request is closed after the
/// header timeout.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = DirectServer::start(short_timeouts()).await;
    let stream = stall(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (answer, waited) = until_closed(stream).await.expect("still open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= SHORT / 2 && waited < SHORT * 3,
        "closed after {waited:?}"
    );
}

/// A body that stops arriving is answered and its connection closed after
/// the body timeout.
#[tokio::test]
async fn a_stalled_body_is_cut_off() {
    let server = DirectServer::start(short_timeouts()).await;
    let stream = stall(
        server.addr,
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=",
    )
    .await;
    let (answer, waited) = until_closed(stream).await.expect("still open");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(waited < SHORT * 3, "closed after {waited:?}");
}

/// Awaits every future (the test crate has no `futures` dependency).
async fn futures_join<T: Send + 'static>(
    futures: Vec<impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
