//! The burst: `--events` emits as fast as `--concurrency` clients get them
//! accepted, to the one handler.

use super::burst_of;
use crate::Bench;
use crate::harness::incomplete;

/// Runs the burst and returns its deliveries/s end to end.
pub async fn run(bench: &Bench) -> f64 {
    let opts = &bench.opts;
    let run = burst_of(bench, opts.events, opts.events, |i| {
        let seq = 2_000_000_000 + i;
        ("clients.update", seq, seq)
    })
    .await;
    println!();
    println!(
        "burst: {} events, {} concurrent emitters",
        opts.events, opts.concurrency
    );
    println!("  emits accepted:          {:>9.0} /s", run.emits_per_s);
    println!(
        "  deliveries end to end:   {:>9.0} /s{}",
        run.deliveries_per_s,
        incomplete(run.all_arrived)
    );
    run.cpu.print_per_event(bench, opts.events).await;
    run.deliveries_per_s
}
