//! The benchmark's phases, a module each, and what they share: the CPU
//! meter, the idle check and the disk figure.

pub mod backlog;
pub mod before;
pub mod burst;
pub mod fanout;
pub mod filters;
pub mod fixed;
pub mod instructions;
pub mod replay;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Bench;
use crate::harness::{emit_many, wait_received};

/// The server's and the receiver's CPU time since it was started.
pub struct CpuMeter {
    server: f64,
    sink: f64,
    switches: u64,
    /// PostgreSQL's own CPU, when the benchmark runs on it.
    database: Option<f64>,
    /// The pages SQLite's write path has written to its WAL so far.
    wal_frames: Option<f64>,
    started: Instant,
}

impl CpuMeter {
    pub async fn start(bench: &Bench) -> CpuMeter {
        CpuMeter {
            wal_frames: bench.wal_frames().await,
            server: bench.server_cpu(),
            sink: bench.sink.cpu_seconds(),
            switches: bench.context_switches(),
            database: bench
                .opts
                .database_url
                .as_ref()
                .map(|_| crate::harness::postgres_cpu_seconds()),
            started: Instant::now(),
        }
    }

    /// Prints the server's and the receiver's CPU per event over `events`
    /// (and on PostgreSQL the database's); the receiver's share of one core
    /// shows it was not the bottleneck.
    pub async fn print_per_event(&self, bench: &Bench, events: u64) {
        self.print_per(bench, events, "event").await;
    }

    /// As [`CpuMeter::print_per_event`], per delivery: where one event
    /// makes many (a fan-out) or the deliveries were counted (a drain).
    pub async fn print_per_delivery(&self, bench: &Bench, deliveries: u64) {
        self.print_per(bench, deliveries, "delivery").await;
    }

    async fn print_per(&self, bench: &Bench, count: u64, unit: &str) {
        let server = bench.server_cpu() - self.server;
        let sink = bench.sink.cpu_seconds() - self.sink;
        let wall = self.started.elapsed().as_secs_f64();
        println!(
            "  server CPU per {unit}:{:>w$.3} ms  ({:.0} % of one core)",
            server * 1000.0 / count as f64,
            server * 100.0 / wall,
            w = 18 - unit.len()
        );
        println!(
            "  receiver CPU per {unit}:{:>w$.3} ms  ({:.0} % of one core)",
            sink * 1000.0 / count as f64,
            sink * 100.0 / wall,
            w = 16 - unit.len()
        );
        let switches = bench.context_switches().saturating_sub(self.switches);
        println!(
            "  server context switches: {:>9.1} per {unit}",
            switches as f64 / count as f64
        );
        if let (Some(before), Some(now)) = (self.wal_frames, bench.wal_frames().await) {
            println!(
                "  SQLite WAL pages per {unit}:{:>w$.1}",
                (now - before) / count as f64,
                w = 14 - unit.len()
            );
        }
        if let Some(before) = self.database {
            let database = crate::harness::postgres_cpu_seconds() - before;
            println!(
                "  PostgreSQL CPU per {unit}:{:>w$.3} ms  (server + PostgreSQL: {:.3} ms)",
                database * 1000.0 / count as f64,
                (server + database) * 1000.0 / count as f64,
                w = 14 - unit.len()
            );
        }
    }
}

/// A burst's outcome: emits/s accepted and deliveries/s end to end.
pub struct Burst {
    pub emits_per_s: f64,
    pub deliveries_per_s: f64,
    pub all_arrived: bool,
    pub cpu: CpuMeter,
}

/// Emits `events` (the `i`-th given by `event(i)`) from `--concurrency`
/// clients as fast as they are accepted, and waits for `deliveries`
/// arrivals.
pub async fn burst_of(
    bench: &Bench,
    events: u64,
    deliveries: u64,
    event: impl Fn(u64) -> (&'static str, u64, u64) + Clone + Send + 'static,
) -> Burst {
    let sink = &bench.sink;
    let base_count = sink.received.load(Ordering::SeqCst);
    let cpu = CpuMeter::start(bench).await;
    let started = Instant::now();
    let accepted = emit_many(
        &bench.client,
        &bench.emit_urls,
        bench.opts.concurrency,
        events,
        event,
    )
    .await;
    let emitted_in = started.elapsed();
    // Each accepted emit makes the same number of deliveries.
    let expected = deliveries * accepted / events.max(1);
    let all_arrived = wait_received(sink, base_count + expected, Duration::from_secs(300)).await;
    let delivered = sink.received.load(Ordering::SeqCst) - base_count;
    Burst {
        emits_per_s: events as f64 / emitted_in.as_secs_f64(),
        deliveries_per_s: delivered as f64 / started.elapsed().as_secs_f64(),
        all_arrived,
        cpu,
    }
}

/// The server's CPU while nothing happens: it should not poll.
pub async fn idle(bench: &Bench) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = bench.server_cpu();
    let seconds = 5;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = bench.server_cpu() - before;
    println!();
    println!("idle: {seconds} s with nothing to do");
    println!(
        "  server CPU:              {:>9.1} ms/s",
        used * 1000.0 / seconds as f64
    );
}

/// Disk per execution (SQLite: the data directories hold the whole state):
/// every event so far made one delivery and one execution. The WAL (and
/// its index) is left out and printed beside: its file keeps the size it
/// grew to (up to ~32 MB) and is written over after each checkpoint, so
/// it does not grow with the events.
pub fn disk_per_event(bench: &Bench, dir: &std::path::Path) {
    let executions = bench.sink.received.load(Ordering::SeqCst);
    let Sizes { data, wal } = dir_size(dir);
    println!();
    println!(
        "disk: {:.0} bytes per event (its event row, delivery and execution log row), ~{:.2} GB per million; WAL {:.1} MiB beside",
        data as f64 / executions as f64,
        data as f64 / executions as f64 * 1e6 / 1e9,
        wal as f64 / (1024.0 * 1024.0)
    );
}

/// Bytes on disk: the databases, and their WAL files and WAL indexes.
#[derive(Default)]
struct Sizes {
    data: u64,
    wal: u64,
}

/// The bytes of every file under `path`.
fn dir_size(path: &std::path::Path) -> Sizes {
    let mut sizes = Sizes::default();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => {
                let inner = dir_size(&entry.path());
                sizes.data += inner.data;
                sizes.wal += inner.wal;
            }
            Ok(m) => {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with("-wal") || name.ends_with("-shm") {
                    sizes.wal += m.len();
                } else {
                    sizes.data += m.len();
                }
            }
            Err(_) => {}
        }
    }
    sizes
}
