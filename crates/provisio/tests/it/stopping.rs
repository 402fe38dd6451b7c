//! A graceful stop: attempts in flight finish and are recorded, and every
//! emit answered 202 before the stop is stored. A crash (kill -9) is in
//! `chaos.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_graceful_stop_finishes_attempts_in_flight_and_records_them() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::with(|_, _| Reply::delayed(200, Duration::from_millis(500))).await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    receiver.wait_for(1).await;
    let dir = app.stop().await;

    let app = TestApp::spawn_in(dir).await;
    let event = app
        .get(&format!(
            "/api/v1/events/{}",
            emitted["id"].as_str().unwrap()
        ))
        .await
        .1;
    assert_eq!(
        event["deliveries"][0]["state"], "success",
        "the attempt in flight was recorded: {event}"
    );
    assert_eq!(app.executions("").await.len(), 1);
    assert_eq!(receiver.received().len(), 1, "nothing was sent twice");
}

/// A graceful stop while emits pour in: every emit answered 202 is stored
/// (the dispatcher commits the emits queued before it stops and refuses
/// later ones), and the server does stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_amid_emits_keeps_every_accepted_one() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    let emitters: Vec<_> = (0..8)
        .map(|n| {
            let (client, url) = (app.client.clone(), app.url("/api/v1/events"));
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0u64.. {
                    let body = json!({ "events_id": "clients.update", "object_id": n * 1_000_000 + i, "data": {} });
                    let sent = client
                        .post(&url)
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(resp) = sent else { break };
                    if resp.status() != reqwest::StatusCode::ACCEPTED {
                        break;
                    }
                    let body: Value = resp.json().await.unwrap();
                    accepted.push(body["id"].as_str().unwrap().to_owned());
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tokio::time::timeout(Duration::from_secs(30), app.stop())
        .await
        .expect("the server stops while emits keep coming");
    let mut accepted = Vec::new();
    for emitter in emitters {
        accepted.extend(emitter.await.unwrap());
    }
    assert!(accepted.len() > 10, "emits were accepted before the stop");

    let app = TestApp::spawn_in(dir).await;
    for id in &accepted {
        let (status, event) = app.get(&format!("/api/v1/events/{id}")).await;
        assert_eq!(status, 200, "accepted {id}, then lost: {event}");
    }
}
