//! Instructions per event, counted by callgrind (`--only instructions`;
//! not part of a full run: it needs valgrind and about two minutes).
//!
//! On a shared two-core machine the same build's CPU per event wanders by
//! ±20 % from run to run, so a change worth a few percent cannot be seen in
//! the timed phases. Callgrind counts the instructions the server executes
//! (all its threads, user space only: not the kernel's work for its system
//! calls), which repeat within about 2 % whatever else the machine does.
//! The server runs twice under it, SQLite, at a low fixed rate for a short
//! and a long window; the difference, divided by the events between them,
//! leaves start-up and shutdown out.
//!
//! Valgrind's CPU does not report SHA extensions, so SHA-256 runs in
//! software there; and a `rep stos` (a large `memset`) counts once per
//! byte. Compare builds with each other, not with the timed figures.

use std::time::Duration;

use serde_json::json;

use super::fixed::fixed_rate;
use crate::Bench;
use crate::harness::{Server, create_handler};

/// Events a second: valgrind runs the server some fifty times slower.
const RATE: u64 = 20;
/// The two windows, in seconds.
const SHORT: u64 = 10;
const LONG: u64 = 40;

pub async fn run(bench: &Bench) {
    println!("\ninstructions per event (callgrind, SQLite, {RATE} events/s)");
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("  skipped: valgrind is not installed");
        return;
    }
    let Some(short) = instructions(bench, SHORT, 5_000_000_000).await else {
        return;
    };
    let Some(long) = instructions(bench, LONG, 6_000_000_000).await else {
        return;
    };
    let events = RATE * (LONG - SHORT);
    println!("  {SHORT} s window:           {short:>14} instructions");
    println!("  {LONG} s window:           {long:>14} instructions");
    println!(
        "  per event:           {:>14}",
        long.saturating_sub(short) / events
    );
}

/// The instructions a server under callgrind executed from start to
/// shutdown, `RATE` events a second for `seconds` in between (after a
/// short warm-up); `None`, said why, when it could not be counted.
async fn instructions(bench: &Bench, seconds: u64, first_seq: u64) -> Option<u64> {
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
    create_handler(
        &bench.client,
        &base,
        json!({ "name": "counted", "events_id": "clients.*", "target": format!("http://{}/hook", bench.sink_addr) }),
    )
    .await;
    let urls = [format!("{base}/api/v1/events")];
    let (_, warm) = fixed_rate(&bench.client, &urls, &bench.sink, RATE, 2, first_seq).await;
    let (_, all) = fixed_rate(
        &bench.client,
        &urls,
        &bench.sink,
        RATE,
        seconds,
        first_seq + 1_000,
    )
    .await;
    if !(warm && all) {
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
    total
}
