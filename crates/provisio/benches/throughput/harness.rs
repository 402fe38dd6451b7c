//! What every phase of the benchmark uses: the receiver (`Sink`), the
//! server under test, the emit call and the percentiles.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;

use crate::TOKEN;

/// The receiver: answers 200 at once (503 while `down`) and notes when each
/// event arrived. It runs on a thread of its own (a single-threaded
/// runtime), so its CPU time can be read apart from the load generator's:
/// the benchmark prints it to show the receiver is not the bottleneck.
#[derive(Default)]
pub struct Sink {
    pub received: AtomicU64,
    /// seq → arrival, for latency runs.
    pub arrivals: Mutex<HashMap<u64, Instant>>,
    pub done: Notify,
    pub target: AtomicU64,
    /// While set, every request is answered 503 and not counted.
    pub down: AtomicBool,
    /// The sink thread's id, for its CPU time.
    tid: AtomicU64,
}

impl Sink {
    /// User + system CPU seconds the sink's thread has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let tid = self.tid.load(Ordering::SeqCst);
        cpu_of(&format!("/proc/self/task/{tid}/stat"))
    }
}

/// Starts `sink` on a thread of its own and returns its address.
pub fn start_sink(sink: Arc<Sink>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // "/proc/thread-self" links to "PID/task/TID".
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        sink.tid.store(tid, Ordering::SeqCst);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move { sink.take(&body) }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

impl Sink {
    fn take(&self, body: &[u8]) -> axum::http::StatusCode {
        if self.down.load(Ordering::SeqCst) {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        let now = Instant::now();
        if let Some(seq) = seq_of(body) {
            self.arrivals.lock().unwrap().insert(seq, now);
        }
        let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.target.load(Ordering::SeqCst) {
            self.done.notify_waiters();
        }
        axum::http::StatusCode::OK
    }
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
        Server::start_under(&[], data_dir, database_url)
    }

    /// Starts the server as the last argument of `launcher` (a program and
    /// its arguments, such as `valgrind --tool=callgrind`); as [`Server::start`]
    /// when it is empty.
    pub fn start_under(
        launcher: &[String],
        data_dir: &std::path::Path,
        database_url: Option<&str>,
    ) -> Server {
        // `PROVISIO_BENCH_SERVER` runs another build of the server (say, the
        // one before a change) under this benchmark.
        let bin = std::env::var("PROVISIO_BENCH_SERVER")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_provisio").to_owned());
        let (program, args) = match launcher.split_first() {
            Some((program, args)) => (program.clone(), [args, &[bin]].concat()),
            None => (bin, Vec::new()),
        };
        let mut child = std::process::Command::new(program)
            .args(args)
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

    /// Asks the server to shut down (SIGTERM) and waits for it to exit,
    /// at most `limit`; whether it did.
    pub fn stop(&mut self, limit: Duration) -> bool {
        let pid = self.child.id().to_string();
        let asked = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + limit;
        while asked && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// User + system CPU seconds the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// The server's resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        rss_mib(self.child.id())
    }

    /// Context switches (voluntary and not) of the server's live threads
    /// so far: each is a thread parked and woken, the cost that dominates
    /// at low rates.
    pub fn context_switches(&self) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return 0;
        };
        tasks
            .flatten()
            .map(|task| {
                std::fs::read_to_string(task.path().join("status"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }
}

/// User + system CPU seconds of every process named `postgres` on the
/// machine (the benchmark's database server: its backends, WAL writer,
/// checkpointer), so far. Only meaningful on an otherwise quiet server.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|p| {
            std::fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|p| try_cpu_of(&p.path().join("stat").to_string_lossy()).unwrap_or(0.0))
        .sum()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process `pid`'s resident memory now, in MiB (`VmRSS`); 0 once it is gone.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU seconds from a `/proc/…/stat` file.
fn cpu_of(stat_path: &str) -> f64 {
    try_cpu_of(stat_path).expect("a readable /proc stat file")
}

/// User + system CPU seconds from a `/proc/…/stat` file, if it is there
/// (a process may end between listing and reading).
fn try_cpu_of(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_second())
}

pub fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// An emit of `clients.update` carrying `seq`; true when accepted.
pub async fn emit(client: &reqwest::Client, url: &str, seq: u64) -> bool {
    emit_as(client, url, "clients.update", seq, seq).await
}

/// An emit of `events_id` for `object_id`, carrying `seq`; true when
/// accepted.
pub async fn emit_as(
    client: &reqwest::Client,
    url: &str,
    events_id: &str,
    object_id: u64,
    seq: u64,
) -> bool {
    let body = json!({ "events_id": events_id, "object_id": object_id, "data": { "seq": seq, "name": "Bench client" } });
    let sent = client.post(url).bearer_auth(TOKEN).json(&body).send().await;
    // A refused emit (a 503 when the database did not answer in time) is
    // counted and shown beside the phase's figures, not a crash.
    match sent {
        Ok(resp) if resp.status() == 202 => return true,
        Ok(resp) => {
            let status = resp.status();
            note_refusal(&format!(
                "{status}: {}",
                resp.text().await.unwrap_or_default()
            ));
        }
        Err(err) => note_refusal(&err.to_string()),
    }
    false
}

/// Emits refused since the last phase printed its figures.
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn note_refusal(why: &str) {
    if REFUSED.fetch_add(1, Ordering::SeqCst) == 0 {
        eprintln!("an emit was refused: {why}");
    }
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
/// object and seq. Returns how many were accepted.
pub async fn emit_many(
    client: &reqwest::Client,
    urls: &[String],
    concurrency: usize,
    total: u64,
    event: impl Fn(u64) -> (&'static str, u64, u64) + Clone + Send + 'static,
) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let url = urls[w % urls.len()].clone();
        let (client, next, event) = (client.clone(), next.clone(), event.clone());
        let accepted = accepted.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                let (events_id, object_id, seq) = event(i);
                if emit_as(&client, &url, events_id, object_id, seq).await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    accepted.load(Ordering::SeqCst)
}

/// Creates an after-stage handler and returns its id.
pub async fn create_handler(client: &reqwest::Client, base: &str, spec: serde_json::Value) -> i64 {
    let created = client
        .post(format!("{base}/api/v1/handlers"))
        .bearer_auth(TOKEN)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{spec}");
    let handler: serde_json::Value = created.json().await.unwrap();
    handler["id"].as_i64().unwrap()
}

/// Deletes handler `id`, so later phases measure without it.
pub async fn delete_handler(client: &reqwest::Client, base: &str, id: i64) {
    let resp = client
        .delete(format!("{base}/api/v1/handlers/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "delete handler {id}");
}

/// `POST /api/v1/handlers/{id}/{action}` (pause, resume), which must answer 200.
pub async fn handler_action(client: &reqwest::Client, base: &str, id: i64, action: &str) {
    let resp = client
        .post(format!("{base}/api/v1/handlers/{id}/{action}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{action} handler {id}");
}

/// What makes a phase's figures suspect: "  (NOT ALL ARRIVED)" when `all`
/// is false, and how many emits were refused since the last phase.
pub fn incomplete(all: bool) -> String {
    let refused = REFUSED.swap(0, Ordering::SeqCst);
    let mut note = String::new();
    if !all {
        note.push_str("  (NOT ALL ARRIVED)");
    }
    if refused > 0 {
        note.push_str(&format!("  ({refused} EMITS REFUSED)"));
    }
    note
}
