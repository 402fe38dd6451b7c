//! A backlog: the receiver is down and the handler paused (as the automatic
//! pause holds it after a run of failures) while `--backlog` events queue;
//! then the receiver comes up, the handler resumes and the queue drains.
//! Prints the emit rate at the start and the end of the build-up (a backlog
//! should not slow the emits), the drain in deliveries/s, and the server's
//! RSS before, at its peak and after. Then the lowest fixed rate right after
//! the drain (what the drain left behind costs the next events: on
//! PostgreSQL, the queue's indexes full of dead entries until a vacuum),
//! and one object's line: `LINE` events for the same object held by a
//! pause, drained one release at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CpuMeter;
use crate::Bench;
use crate::harness::{emit_many, handler_action, incomplete, rss_mib, wait_received};

/// The first seq (and object) of the backlog's events.
const FIRST_SEQ: u64 = 6_000_000_000;

/// The first seq of the events at a fixed rate right after the drain.
const AFTER_SEQ: u64 = 6_500_000_000;

/// Events in the one-object line, and that object.
const LINE: u64 = 10_000;
const LINE_OBJECT: u64 = 7_000_000_000;

/// Samples the servers' summed RSS every 100 ms, keeping the highest.
struct PeakRss {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn start(bench: &Bench) -> PeakRss {
        let pids: Vec<u32> = bench.servers.iter().map(|s| s.child.id()).collect();
        let (peak_kib, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (peak, done) = (peak_kib.clone(), stop.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let now: f64 = pids.iter().map(|&pid| rss_mib(pid)).sum();
                peak.fetch_max((now * 1024.0) as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        PeakRss { peak_kib, stop }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::SeqCst) as f64 / 1024.0
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub async fn run(bench: &Bench) {
    let (sink, opts) = (&bench.sink, &bench.opts);
    let total = opts.backlog;
    let rss_before = bench.rss_mib();
    let peak = PeakRss::start(bench);
    sink.down.store(true, Ordering::SeqCst);
    handler_action(&bench.client, &bench.base, bench.handler_id, "pause").await;

    // The build-up in three stretches: the first and last tenth are timed.
    let tenth = (total / 10).max(1);
    let stretches = [(0, tenth), (tenth, total - tenth), (total - tenth, total)];
    let mut rates = Vec::new();
    let mut accepted = 0;
    let build_started = Instant::now();
    for (from, to) in stretches {
        let started = Instant::now();
        accepted += emit_many(
            &bench.client,
            &bench.emit_urls,
            opts.concurrency,
            to - from,
            move |i| {
                let seq = FIRST_SEQ + from + i;
                ("clients.update", seq, seq)
            },
        )
        .await;
        rates.push((to - from) as f64 / started.elapsed().as_secs_f64());
    }
    let built_in = build_started.elapsed();
    let rss_built = bench.rss_mib();

    let base_count = sink.received.load(Ordering::SeqCst);
    let cpu = CpuMeter::start(bench).await;
    let started = Instant::now();
    sink.down.store(false, Ordering::SeqCst);
    handler_action(&bench.client, &bench.base, bench.handler_id, "resume").await;
    let limit = Duration::from_secs(300.max(total / 1_000));
    let all_arrived = wait_received(sink, base_count + accepted, limit).await;
    let drained_in = started.elapsed();
    let delivered = sink.received.load(Ordering::SeqCst) - base_count;
    let rss_drained = bench.rss_mib();
    let peak_mib = peak.peak_mib();
    drop(peak);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_settled = bench.rss_mib();

    println!();
    println!(
        "backlog: {total} events queued while the receiver is down (handler paused), then drained{}",
        incomplete(all_arrived)
    );
    println!("  emits, first tenth:      {:>9.0} /s", rates[0]);
    println!(
        "  emits, last tenth:       {:>9.0} /s  ({:.0} % of the first; whole build-up {:.1} s)",
        rates[2],
        rates[2] * 100.0 / rates[0],
        built_in.as_secs_f64()
    );
    println!(
        "  drain:                   {:>9.0} deliveries/s",
        delivered as f64 / drained_in.as_secs_f64()
    );
    cpu.print_per_delivery(bench, delivered.max(1)).await;
    println!(
        "  server RSS:              {rss_before:.0} MiB before, {rss_built:.0} built up, {peak_mib:.0} peak, {rss_drained:.0} drained, {rss_settled:.0} 5 s later"
    );
    let rate = opts.lowest_rate();
    super::fixed::measure(bench, "right after the drain", "", rate, AFTER_SEQ).await;
    line(bench).await;
}

/// One object's `LINE` events queued behind a pause, then resumed: each
/// delivery is released by the record of the one before, so this is the
/// drain of an ordered line, one round trip per delivery (an operator's
/// day when one busy object's events piled up during an outage).
async fn line(bench: &Bench) {
    let sink = &bench.sink;
    handler_action(&bench.client, &bench.base, bench.handler_id, "pause").await;
    let accepted = emit_many(
        &bench.client,
        &bench.emit_urls,
        bench.opts.concurrency,
        LINE,
        |i| ("clients.update", LINE_OBJECT, LINE_OBJECT + i),
    )
    .await;
    let base_count = sink.received.load(Ordering::SeqCst);
    let cpu = CpuMeter::start(bench).await;
    let started = Instant::now();
    handler_action(&bench.client, &bench.base, bench.handler_id, "resume").await;
    let all_arrived = wait_received(sink, base_count + accepted, Duration::from_secs(300)).await;
    let delivered = sink.received.load(Ordering::SeqCst) - base_count;
    println!(
        "  one object's line of {LINE} (paused, then resumed): {:.0} deliveries/s{}",
        delivered as f64 / started.elapsed().as_secs_f64(),
        incomplete(all_arrived)
    );
    cpu.print_per_delivery(bench, delivered.max(1)).await;
}
