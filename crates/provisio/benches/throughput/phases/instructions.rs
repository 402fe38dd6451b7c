//! Instructions per event, counted by callgrind (`--only instructions`;
//! not part of a full run: it needs valgrind and about four minutes).
//!
//! On a shared two-core machine the same build's CPU per event wanders by
//! ±20 % from run to run, so a change worth a few percent cannot be seen in
//! the timed phases. Callgrind counts the instructions the server executes
//! (all its threads, user space only: not the kernel's work for its system
//! calls), which repeat within a few percent whatever else the machine
//! does (the low-rate figure varies most: ±4 % over three runs).
//! The server runs under it twice per figure, SQLite, given a load and
//! then more of the same; the difference, divided by the events (or
//! deliveries) between them, leaves start-up and shutdown out. Two
//! figures: per event at a low fixed rate, one handler (each emit and
//! attempt alone, as most of a day), and per delivery in a fan-out burst
//! to 20 handlers (emits, claims and records of hundreds).
//!
//! `PROVISIO_BENCH_CALLGRIND_DIR=DIR` keeps the four callgrind files there,
//! for `callgrind_annotate` (where the instructions went; compare a short
//! and a long run per function to leave start-up out).
//!
//! Valgrind's CPU does not report SHA extensions, so SHA-256 runs in
//! software there; and a `rep stos` (a large `memset`) counts once per
//! byte. Compare builds with each other, not with the timed figures.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::fixed::fixed_rate;
use crate::Bench;
use crate::harness::{Server, create_handler, emit_many, wait_received};

/// Events a second: valgrind runs the server some fifty times slower.
const RATE: u64 = 20;
/// The two windows, in seconds.
const SHORT: u64 = 10;
const LONG: u64 = 40;
/// The fan-out: handlers of the one event type, the two bursts' events,
/// and their emitters (enough for the emit path's batches).
const FANOUT: u64 = 20;
const FEW: u64 = 25;
const MANY: u64 = 100;
const EMITTERS: usize = 16;

/// What the server under callgrind is given to do between its start and
/// its shutdown.
#[derive(Clone, Copy)]
enum Load {
    /// `RATE` events a second for this many seconds, to one handler.
    Steady(u64),
    /// This many events as fast as `EMITTERS` emit them, each to `FANOUT`
    /// handlers: the batched paths (emits, claims and records of
    /// hundreds).
    FanOut(u64),
}

pub async fn run(bench: &Bench) {
    println!("\ninstructions (callgrind, SQLite)");
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("  skipped: valgrind is not installed");
        return;
    }
    let steady = [Load::Steady(SHORT), Load::Steady(LONG)];
    if let Some((short, long)) = difference(bench, steady, 5_000_000_000).await {
        println!(
            "  per event, {RATE} events/s:       {:>9}  ({SHORT} s: {short}, {LONG} s: {long})",
            long.saturating_sub(short) / (RATE * (LONG - SHORT))
        );
    }
    let bursts = [Load::FanOut(FEW), Load::FanOut(MANY)];
    if let Some((few, many)) = difference(bench, bursts, 8_000_000_000).await {
        println!(
            "  per delivery, fan-out to {FANOUT}:   {:>9}  ({FEW} events: {few}, {MANY}: {many})",
            many.saturating_sub(few) / ((MANY - FEW) * FANOUT)
        );
    }
}

/// The instructions of a server given each of the two loads, which differ
/// only in how much; `None`, said why, when either could not be counted.
async fn difference(bench: &Bench, loads: [Load; 2], first_seq: u64) -> Option<(u64, u64)> {
    let first = instructions(bench, loads[0], first_seq).await?;
    let second = instructions(bench, loads[1], first_seq + 500_000_000).await?;
    Some((first, second))
}

/// The instructions a server under callgrind executed from start to
/// shutdown, given `load` in between (after a short warm-up at `RATE`);
/// `None`, said why, when it could not be counted.
async fn instructions(bench: &Bench, load: Load, first_seq: u64) -> Option<u64> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("callgrind.out");
    let launcher = [
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        format!("--log-file={}", dir.path().join("valgrind.log").display()),
    ];
    let mut server = Server::start_under(&launcher, &dir.path().join("node"), None);
    let base = format!("http://{}", server.addr);
    let handlers = match load {
        Load::Steady(_) => 1,
        Load::FanOut(_) => FANOUT,
    };
    for i in 0..handlers {
        create_handler(
            &bench.client,
            &base,
            json!({ "name": format!("counted {i}"), "events_id": "clients.*", "target": format!("http://{}/hook", bench.sink_addr) }),
        )
        .await;
    }
    let urls = [format!("{base}/api/v1/events")];
    // A warm-up (connections, caches), then the load.
    let arrived = match load {
        Load::Steady(seconds) => {
            let (_, warm) = fixed_rate(&bench.client, &urls, &bench.sink, RATE, 2, first_seq).await;
            let seq = first_seq + 1_000;
            warm && fixed_rate(&bench.client, &urls, &bench.sink, RATE, seconds, seq)
                .await
                .1
        }
        Load::FanOut(events) => {
            fan_out(bench, &urls, 2, first_seq).await
                && fan_out(bench, &urls, events, first_seq + 1_000).await
        }
    };
    if !arrived {
        println!("  not counted: some events did not arrive");
        return None;
    }
    if !server.stop(Duration::from_secs(120)) {
        println!("  not counted: the server did not shut down");
        return None;
    }
    // "totals: N" (or "summary: N" in older versions): every thread's
    // instructions together.
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let total = text.lines().find_map(|l| {
        l.strip_prefix("totals:")
            .or_else(|| l.strip_prefix("summary:"))
            .and_then(|n| n.trim().parse().ok())
    });
    if total.is_none() {
        println!("  not counted: no totals in {}", out.display());
    }
    // For `callgrind_annotate`: where the instructions went.
    if let Some(keep) = std::env::var_os("PROVISIO_BENCH_CALLGRIND_DIR") {
        let name = match load {
            Load::Steady(seconds) => format!("callgrind.steady-{seconds}s.out"),
            Load::FanOut(events) => format!("callgrind.fanout-{events}.out"),
        };
        let kept = std::path::Path::new(&keep).join(name);
        if let Err(err) = std::fs::copy(&out, &kept) {
            println!("  could not keep {}: {err}", kept.display());
        }
    }
    total
}

/// Emits `events` from `EMITTERS` at once and waits for their deliveries
/// to all `FANOUT` handlers; true when every one arrived.
async fn fan_out(bench: &Bench, urls: &[String], events: u64, first_seq: u64) -> bool {
    let before = bench.sink.received.load(Ordering::SeqCst);
    let accepted = emit_many(&bench.client, urls, EMITTERS, events, move |i| {
        ("clients.update", i, first_seq + i)
    })
    .await;
    accepted == events
        && wait_received(
            &bench.sink,
            before + events * FANOUT,
            Duration::from_secs(300),
        )
        .await
}
