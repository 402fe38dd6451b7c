//! The benchmark's phases after the burst: a fixed offered rate, the same
//! rate beside eight hung handlers, the before-stage chain, a replay, and
//! filters and templates.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Sink, emit, emit_many, percentile, start_sink, wait_received};
use crate::{Options, TOKEN};

/// Emits `rate` events a second for `seconds` and returns the emit → receiver
/// latencies, sorted, and whether every event arrived.
pub async fn fixed_rate(
    client: &reqwest::Client,
    emit_urls: &[String],
    sink: &Sink,
    rate: u64,
    seconds: u64,
    first_seq: u64,
) -> (Vec<Duration>, bool) {
    let base_count = sink.received.load(Ordering::SeqCst);
    sink.arrivals.lock().unwrap().clear();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let sent_at = Arc::new(Mutex::new(HashMap::with_capacity(total as usize)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        let seq = first_seq + i;
        let url = emit_urls[i as usize % emit_urls.len()].clone();
        let (client, sent_at) = (client.clone(), sent_at.clone());
        tasks.push(tokio::spawn(async move {
            sent_at.lock().unwrap().insert(seq, Instant::now());
            emit(&client, &url, seq).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all_arrived = wait_received(sink, base_count + total, Duration::from_secs(120)).await;
    let mut latencies: Vec<Duration> = {
        let arrivals = sink.arrivals.lock().unwrap();
        let sent_at = sent_at.lock().unwrap();
        sent_at
            .iter()
            .filter_map(|(seq, sent)| {
                arrivals
                    .get(seq)
                    .map(|arrived| arrived.saturating_duration_since(*sent))
            })
            .collect()
    };
    latencies.sort();
    (latencies, all_arrived)
}

/// Eight more handlers for the same events, whose receivers accept
/// connections and never answer (60 s timeout): the healthy handler's
/// latency at the fixed rate should stay what it was alone.
pub async fn hung_handlers(
    client: &reqwest::Client,
    base: &str,
    emit_urls: &[String],
    sink: &Sink,
    opts: &Options,
) {
    let mut holes = Vec::new();
    for i in 0..8 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("http://{}/hook", listener.local_addr().unwrap());
        holes.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        }));
        let created = client
            .post(format!("{base}/api/v1/handlers"))
            .bearer_auth(TOKEN)
            .json(
                &json!({ "name": format!("hung {i}"), "events_id": "clients.*",
                           "target": target, "timeout_ms": 60_000, "ordered": false }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (latencies, all_arrived) = fixed_rate(
        client,
        emit_urls,
        sink,
        opts.rate,
        opts.seconds,
        4_000_000_000,
    )
    .await;
    println!();
    println!(
        "beside 8 hung handlers: {} events/s for {} s to the healthy one{}",
        opts.rate,
        opts.seconds,
        if all_arrived {
            ""
        } else {
            "  (NOT ALL ARRIVED)"
        }
    );
    for (name, p) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "  emit -> receiver {name}:    {:>9.2} ms",
            percentile(&latencies, p).as_secs_f64() * 1000.0
        );
    }
    for hole in holes {
        hole.abort();
    }
}

/// Phase 3, the before-stage chain's own overhead: three no-op loopback handlers,
/// called one request at a time, compared with the same three calls made
/// directly by the client.
pub async fn before_chain(client: &reqwest::Client, base: &str, runs: usize) {
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

/// Phase 5, handler filters and request templates: what one filter costs per
/// event (the emit path evaluates it for every matching event), what one
/// template costs (each attempt renders it), and the worst a filter the save
/// check accepts can cost over the largest event the API takes (1 MiB).
pub fn filter_cost() {
    use provisio_core::event::ObjectId;
    use provisio_core::filter::{Filter, FilterInput};

    let object = ObjectId::parse("12345").unwrap();
    let time = |filter: &Filter, data: &str, runs: u32| {
        let started = Instant::now();
        for _ in 0..runs {
            // Per event: the conversion the emit does once, and one check.
            let input =
                FilterInput::new("clients.update", &object, "2026-11-27T10:00:00+00:00", data)
                    .unwrap();
            std::hint::black_box(filter.check(&input).ok());
        }
        started.elapsed() / runs
    };

    let typical = Filter::parse(r#"data.currency == "EUR" && data.balance < 0"#).unwrap();
    let data = json!({ "id": 12345, "name": "ACME Ltd", "currency": "EUR", "balance": -12.5,
                       "plan": "pro", "tags": ["vip", "b2b"] })
    .to_string();
    println!();
    println!("filters and templates: one of each per event, evaluated in process");
    println!(
        "  typical filter, {} B of data:  {:>7.1} µs per event",
        data.len(),
        time(&typical, &data, 20_000).as_secs_f64() * 1e6
    );

    // A request template: a PUT to the object's URL with a reshaped body.
    let template = provisio_core::request::RequestTemplate::compile(
        serde_json::from_value(json!({
            "method": "PUT",
            "url": "https://switch.example.net/api/v2/customers/{{ event.object_id }}",
            "body": "{\"name\": {{ data.name|tojson }}, \"currency\": {{ data.currency|tojson }}, \"credit\": {{ data.balance }}}"
        }))
        .unwrap(),
    )
    .unwrap();
    let runs = 20_000;
    let started = Instant::now();
    for _ in 0..runs {
        let rendered = template
            .render(
                "https://switch.example.net/api/v2/customers",
                "clients.update",
                "12345",
                "2026-11-27T10:00:00+00:00",
                &data,
            )
            .unwrap();
        std::hint::black_box(rendered);
    }
    println!(
        "  typical request template:       {:>7.1} µs per event",
        (started.elapsed() / runs).as_secs_f64() * 1e6
    );

    // The largest events: a list, or one string, filling the 1 MiB body
    // limit.
    let items: Vec<String> = (0..70_000).map(|i| format!("aaaaaaa{i}")).collect();
    let list = json!({ "l": items }).to_string();
    let string = json!({ "s": "a".repeat(1_000_000) }).to_string();
    let concat = (0..5).map(|_| "data.l").collect::<Vec<_>>().join(" + ");
    for (name, source, data) in [
        (
            "backtracking regex",
            r#"data.s.matches("^(a+)+b$")"#.to_owned(),
            &string,
        ),
        (
            "4 list concatenations",
            format!("size({concat}) > 0"),
            &list,
        ),
        (
            "map and filter",
            r#"size(data.l.map(x, x + x)) > size(data.l.filter(x, x.startsWith("a")))"#.to_owned(),
            &list,
        ),
    ] {
        assert!(data.len() <= 1024 * 1024);
        let filter = Filter::parse(&source).unwrap();
        println!(
            "  hostile: {name}, {} KiB of data: {:>7.1} ms",
            data.len() / 1024,
            time(&filter, data, 3).as_secs_f64() * 1e3
        );
    }
}

/// Replay: `events` events of a type of their own (`clients.accounts.update`,
/// 20 per object, so per-object order binds), delivered to the benchmark's
/// handler, then resent as one replay job to a handler created after them (a
/// back-fill) whose receiver is a second sink. Prints the job's start (its
/// `INSERT … SELECT`) and deliveries/s from the job's start to the last
/// delivery's arrival.
pub async fn replay(
    client: &reqwest::Client,
    base: &str,
    emit_urls: &[String],
    sink: &Sink,
    opts: &Options,
) {
    const PER_OBJECT: u64 = 20;
    let events_id = "clients.accounts.update";
    let base_count = sink.received.load(Ordering::SeqCst);
    let objects = (opts.events / PER_OBJECT).max(1);
    let emitted = Instant::now();
    emit_many(client, emit_urls, opts.concurrency, opts.events, move |i| {
        (events_id, 5_000_000_000 + i % objects, 5_000_000_000 + i)
    })
    .await;
    assert!(
        wait_received(sink, base_count + opts.events, Duration::from_secs(300)).await,
        "the events to replay were not all delivered"
    );
    let first_delivery = emitted.elapsed();

    let second = Arc::new(Sink::default());
    let addr = start_sink(second.clone()).await;
    let created = client
        .post(format!("{base}/api/v1/handlers"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "replayed", "events_id": events_id, "target": format!("http://{addr}/hook") }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let handler: serde_json::Value = created.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let resp = client
        .post(format!("{base}/api/v1/replays"))
        .bearer_auth(TOKEN)
        .json(&json!({ "handler_id": handler["id"], "events_id": events_id }))
        .send()
        .await
        .unwrap();
    let job_started_in = started.elapsed();
    assert_eq!(resp.status(), 202);
    let job: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(job["queued"], opts.events, "{job}");
    let all_arrived = wait_received(&second, opts.events, Duration::from_secs(300)).await;
    let took = started.elapsed();
    println!();
    println!(
        "replay: {} logged events ({} objects) back-filled to a new handler{}",
        opts.events,
        objects,
        if all_arrived {
            ""
        } else {
            "  (NOT ALL ARRIVED)"
        }
    );
    println!(
        "  first delivered:         {:>9.0} /s (emitted, same order per object)",
        opts.events as f64 / first_delivery.as_secs_f64()
    );
    println!(
        "  job start (POST):        {:>9.0} ms",
        job_started_in.as_secs_f64() * 1000.0
    );
    println!(
        "  replayed deliveries:     {:>9.0} /s (job start to the last arrival)",
        second.received.load(Ordering::SeqCst) as f64 / took.as_secs_f64()
    );
}
