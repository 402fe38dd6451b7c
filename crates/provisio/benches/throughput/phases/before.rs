//! The before-stage chain's own overhead: three no-op loopback handlers,
//! called one request at a time, against the same three calls made directly.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::percentile;
use crate::{Bench, TOKEN};

/// Times the chain with no handlers and with three, and the direct calls.
pub async fn run(bench: &Bench) {
    let (client, base, runs) = (&bench.client, &bench.base, bench.opts.chains);
    let noop = axum::Router::new().fallback(|| async { "" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let noop_url = format!("http://{}/noop", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, noop).await.unwrap() });

    let before_url = format!("{base}/api/v1/events/before");
    let body = json!({ "events_id": "clients.create", "object_id": 1, "data": { "name": "Bench client" } });
    let time_chain = |n: usize| {
        let (client, url, body) = (client.clone(), before_url.clone(), body.clone());
        async move {
            let mut took = Vec::with_capacity(n);
            for _ in 0..n {
                let started = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                took.push(started.elapsed());
            }
            took.sort();
            took
        }
    };

    let empty = time_chain(runs).await;
    for i in 0..3 {
        let created = client
            .post(format!("{base}/api/v1/handlers"))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": format!("noop {i}"), "events_id": "clients.create", "stage": "before", "target": noop_url }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    time_chain(100).await;
    let chain = time_chain(runs).await;

    let payload = json!({ "event": { "dt": "2026-11-26T10:00:00+00:00", "events_id": "clients.create", "object_id": 1 }, "data": { "name": "Bench client" } });
    let mut direct = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        for _ in 0..3 {
            client
                .post(&noop_url)
                .json(&payload)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        direct.push(started.elapsed());
    }
    direct.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let row = |label: &str, sorted: &[Duration]| {
        println!(
            "  {label:<24} p50 {:>6.2} ms   p99 {:>6.2} ms",
            ms(percentile(sorted, 0.5)),
            ms(percentile(sorted, 0.99))
        );
    };
    println!();
    println!("before-stage chain, {runs} sequential calls");
    row("no handlers:", &empty);
    row("three no-op handlers:", &chain);
    row("the three calls direct:", &direct);
    println!(
        "  chain overhead:          p50 {:>6.2} ms   p99 {:>6.2} ms   (three handlers minus the direct calls)",
        ms(percentile(&chain, 0.5).saturating_sub(percentile(&direct, 0.5))),
        ms(percentile(&chain, 0.99).saturating_sub(percentile(&direct, 0.99)))
    );
}
