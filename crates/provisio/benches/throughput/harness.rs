//! What every phase of the benchmark uses: the receiver (`Sink`), the
//! server under test, the emit call and the percentiles.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;

use crate::TOKEN;

/// The receiver: answers 200 at once and notes when each event arrived.
#[derive(Default)]
pub struct Sink {
    pub received: AtomicU64,
    /// seq → arrival, for latency runs.
    pub arrivals: Mutex<HashMap<u64, Instant>>,
    pub done: Notify,
    pub target: AtomicU64,
}

pub async fn start_sink(sink: Arc<Sink>) -> SocketAddr {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            let now = Instant::now();
            if let Some(seq) = seq_of(&body) {
                sink.arrivals.lock().unwrap().insert(seq, now);
            }
            let n = sink.received.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= sink.target.load(Ordering::SeqCst) {
                sink.done.notify_waiters();
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Finds `"seq":N` in the body without a full parse.
pub fn seq_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"seq\":")? + 6;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub struct Server {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> Server {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_provisio"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(
                database_url
                    .map(|url| ["--database-url", url])
                    .into_iter()
                    .flatten(),
            )
            .arg("--data-dir")
            .arg(data_dir)
            .env("PROVISIO_ADMIN_TOKEN", TOKEN)
            .env("PROVISIO_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start provisio");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("provisio exited").unwrap();
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(addr) = entry["fields"]["addr"].as_str() {
                break addr.parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// User + system CPU seconds the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks_per_second()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub async fn emit(client: &reqwest::Client, url: &str, seq: u64) {
    emit_as(client, url, "clients.update", seq, seq).await;
}

/// An emit of `events_id` for `object_id`, carrying `seq`.
pub async fn emit_as(
    client: &reqwest::Client,
    url: &str,
    events_id: &str,
    object_id: u64,
    seq: u64,
) {
    let body = json!({ "events_id": events_id, "object_id": object_id, "data": { "seq": seq, "name": "Bench client" } });
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("emit");
    assert_eq!(
        resp.status(),
        202,
        "emit refused: {}",
        resp.text().await.unwrap_or_default()
    );
}

pub async fn wait_received(sink: &Sink, n: u64, limit: Duration) -> bool {
    sink.target.store(n, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = sink.done.notified();
        if sink.received.load(Ordering::SeqCst) >= n {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return sink.received.load(Ordering::SeqCst) >= n;
        }
    }
}

/// Emits `total` events from `concurrency` workers spread over `urls`, as
/// fast as they are accepted; `event(i)` gives the `i`-th event's type,
/// object and seq.
pub async fn emit_many(
    client: &reqwest::Client,
    urls: &[String],
    concurrency: usize,
    total: u64,
    event: impl Fn(u64) -> (&'static str, u64, u64) + Clone + Send + 'static,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let url = urls[w % urls.len()].clone();
        let (client, next, event) = (client.clone(), next.clone(), event.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                let (events_id, object_id, seq) = event(i);
                emit_as(&client, &url, events_id, object_id, seq).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}
