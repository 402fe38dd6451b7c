//! The metrics recorder's upkeep bounds what histograms hold between scrapes.
//!
//! A test binary of its own: it counts every heap allocation of the process,
//! which only means something when nothing else runs beside it.

use std::alloc::System;
use std::time::Duration;

use metrics::{Histogram, Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::PrometheusBuilder;
use provisio_server::telemetry::spawn_upkeep;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const EVERY: Duration = Duration::from_millis(5);
const ROUNDS: usize = 100;
const SAMPLES_PER_ROUND: usize = 10_000;

/// Records a million samples in rounds, pausing between rounds long enough
/// for several upkeeps, and returns how much more heap is in use after.
async fn heap_growth(histogram: &Histogram) -> isize {
    let region = Region::new(GLOBAL);
    for _ in 0..ROUNDS {
        for i in 0..SAMPLES_PER_ROUND {
            histogram.record(i as f64 / 1e6);
        }
        tokio::time::sleep(EVERY * 4).await;
    }
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

#[tokio::test(flavor = "current_thread")]
async fn upkeep_keeps_histograms_from_growing_between_scrapes() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1])
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    static METADATA: Metadata<'static> = Metadata::new("upkeep", Level::INFO, None);
    let histogram =
        recorder.register_histogram(&Key::from_name("probe_duration_seconds"), &METADATA);

    // With the server's upkeep task (at a short interval), a million samples
    // leave the heap nearly where it was.
    let upkeep = spawn_upkeep(handle.clone(), EVERY);
    let kept = heap_growth(&histogram).await;
    drop(upkeep);
    // What the server did before: nothing drains the samples until a scrape,
    // so a million of them take megabytes. (This also shows the count above
    // can see them.)
    let piled = heap_growth(&histogram).await;
    assert!(kept < 1_000_000, "with upkeep the heap grew {kept} bytes");
    assert!(
        piled > 4_000_000,
        "without upkeep the heap grew {piled} bytes"
    );

    let text = handle.render();
    assert!(
        text.contains(&format!(
            "probe_duration_seconds_count {}",
            2 * ROUNDS * SAMPLES_PER_ROUND
        )),
        "every sample is still counted: {text}"
    );
}
