//! The test harness: a real provisio server per test, and a way to run the
//! real binary. Receivers are in `receiver.rs` (re-exported here).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::receiver::*;
use axum::http::StatusCode;
use provisio::config::Settings;
use provisio::serve::Running;
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// How long a test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(10);

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn http_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A running server with its own data directory.
pub struct TestApp {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    running: Option<Running>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server after `configure` adjusts its settings. Retries are fast
    /// (50 ms, then 100 ms) so retry tests take well under a second.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        Self::start(dir, configure).await
    }

    /// Starts a server on the data directory a stopped one left.
    pub async fn spawn_in(dir: tempfile::TempDir) -> TestApp {
        Self::start(dir, |_| {}).await
    }

    async fn start(dir: tempfile::TempDir, configure: impl FnOnce(&mut Settings)) -> TestApp {
        install_crypto();
        let mut settings = Settings::for_data_dir(dir.path());
        settings.admin_token = Some(provisio::config::Secret::new(ADMIN_TOKEN));
        settings.retry_schedule = provisio_core::retry::RetrySchedule::parse("50ms,100ms").unwrap();
        // The built binary supervises scripts; this test binary must never be
        // run as one (it would run the tests).
        settings.script_supervisor = Some(BIN.into());
        configure(&mut settings);
        let running = provisio::serve::start(settings).await.unwrap();
        TestApp {
            addr: running.addr,
            dir,
            client: http_client(),
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn scripts_dir(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    /// Writes an executable script into the scripts directory.
    pub fn write_script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.scripts_dir().join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Sends a request with the admin token and returns status and JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `POST /api/v1/handlers/{id}/{action}` (pause, resume), which must
    /// answer 200; the handler as it answered.
    pub async fn handler_action(&self, id: impl std::fmt::Display, action: &str) -> Value {
        let (status, handler) = self
            .post(&format!("/api/v1/handlers/{id}/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {handler}");
        handler
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Sends raw bytes as a POST body.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// Creates a handler (after stage, ordered, fast timeout unless given) and
    /// returns its JSON.
    pub async fn create_handler(&self, fields: Value) -> Value {
        let mut body =
            json!({ "name": "test handler", "events_id": "clients.create", "timeout_ms": 2000 });
        merge(&mut body, fields);
        let (status, handler) = self.post("/api/v1/handlers", body).await;
        assert_eq!(status, StatusCode::CREATED, "{handler}");
        handler
    }

    pub async fn emit(&self, events_id: &str, object_id: Value, data: Value) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/events",
                json!({ "events_id": events_id, "object_id": object_id, "data": data }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }

    /// The execution log for a query string such as `handler_id=1`.
    pub async fn executions(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/executions?per_page=500&{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    /// Waits until the execution log holds at least `n` rows for `query`.
    pub async fn wait_executions(&self, query: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let rows = self.executions(query).await;
            if rows.len() >= n {
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} executions for {query:?}, got {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GETs `path` (which must answer 200) until `check` holds for its JSON,
    /// for at most `patience`, and returns that JSON.
    pub async fn wait_get(
        &self,
        path: &str,
        patience: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let (status, body) = self.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            if check(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never reached the expected state: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds for the event's deliveries.
    pub async fn wait_for_event(&self, event_id: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_get(&format!("/api/v1/events/{event_id}"), PATIENCE, check)
            .await
    }

    /// Waits until the emitted event's first delivery has failed, and returns
    /// its last error.
    pub async fn wait_first_delivery_failed(&self, emitted: &Value) -> String {
        let event = self
            .wait_for_event(emitted["id"].as_str().unwrap(), |e| {
                e["deliveries"][0]["state"] == "failed"
            })
            .await;
        event["deliveries"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.running.take().unwrap().stop().await.unwrap();
        self.dir
    }
}

pub fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        for (k, v) in e {
            t.insert(k, v);
        }
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, value)
}

/// Asserts a response is the documented error shape with `code`, and returns
/// its `fields`.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) -> Value {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["fields"].clone()
}

/// The real `provisio` binary, started as a child process.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_provisio");

impl Binary {
    /// Runs `provisio serve` on a random port with `data_dir` and extra
    /// environment, and waits for its "listening" log line.
    pub fn serve(data_dir: &Path, env: &[(&str, &str)]) -> Binary {
        Self::serve_with(data_dir, &[], env)
    }

    /// Runs `provisio serve` with its state in the database at `url` (such
    /// as a PostgreSQL database several nodes share).
    pub fn serve_on(database_url: &str, data_dir: &Path, env: &[(&str, &str)]) -> Binary {
        Self::serve_with(data_dir, &["--database-url", database_url], env)
    }

    /// Runs `provisio serve` with extra arguments.
    pub fn serve_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Binary {
        use std::io::{BufRead, BufReader, Read};
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--scripts-dir")
            .arg(data_dir)
            .env_remove("PROVISIO_ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("provisio exited before listening")
                .unwrap();
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(addr) = entry["fields"]["addr"].as_str() {
                break addr.parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Binary {
            child,
            addr,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until the process printed a line containing `text` on stdout.
    pub async fn wait_stdout(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let out = self.stdout.lock().unwrap().clone();
            if out.contains(text) {
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stdout never contained {text:?}: {out}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

/// Runs `provisio ARGS…` to completion: (exit success, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("PROVISIO_ADMIN_TOKEN")
        .env_remove("PROVISIO_TOKEN")
        .env_remove("PROVISIO_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
