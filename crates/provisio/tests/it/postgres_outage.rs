//! PostgreSQL going away under provisio: connections cut mid-run lose
//! nothing and keep per-object order; a database that stops answering
//! turns emits into prompt 503s, not hangs.

use std::sync::Arc;
use std::time::Duration;

use provisio_store::postgres::scratch::ScratchDatabase;
use serde_json::json;

use crate::helpers::*;
use crate::postgres::{Cluster, Emitter, assert_ordered, emit_all, wait_unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_the_database_connections_mid_run_loses_nothing() {
    let Some(Cluster {
        db,
        client,
        receiver,
        a,
        b,
    }) = Cluster::start().await
    else {
        return;
    };

    let (objects, per_object) = (10, 40);
    let emitter = Emitter::new(&client, &[&a, &b]);
    let emitting = tokio::spawn(emit_all(emitter.clone(), objects, per_object));
    receiver.wait_for(50).await;
    assert!(db.terminate_connections().await > 0);
    receiver.wait_for(150).await;
    assert!(db.terminate_connections().await > 0);

    emitting.await.unwrap();
    let received = wait_unique(&receiver, (objects * per_object) as usize).await;
    assert_ordered(&received, objects, per_object);
    let refusals = emitter.refusals.lock().unwrap().clone();
    assert!(
        refusals.iter().all(|s| *s == 503),
        "a lost database connection is a 503, not {refusals:?}"
    );
}

/// A loopback TCP proxy in front of PostgreSQL that can be cut: after
/// [`Blackhole::cut`] it drops every open connection and accepts new ones
/// without ever answering, as a database behind a dead network path does.
struct Blackhole {
    url: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn in_front_of(database_url: &str) -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = database_url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
        assert_ne!(url, database_url, "the scratch URL names 127.0.0.1:5432");
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    links.abort_all();
                    held.push(client);
                    continue;
                }
                let watch = flag.clone();
                links.spawn(async move {
                    let mut server = tokio::net::TcpStream::connect("127.0.0.1:5432")
                        .await
                        .unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = async {
                            while !watch.load(std::sync::atomic::Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Blackhole { url, cut, task }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With the database unreachable (every packet lost), emits answer 503
/// within the acquire timeout even when many queue up behind one another:
/// an emit waiting behind a batch that waits for a connection must not wait
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emits_answer_503_within_the_acquire_timeout_while_the_database_is_unreachable() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let proxy = Blackhole::in_front_of(db.url()).await;
    let app = TestApp::spawn_with(|s| {
        let mut pg = provisio_store::postgres::PgSettings::new(proxy.url.clone());
        pg.acquire_timeout = Duration::from_secs(1);
        s.store.database = provisio::config::Database::Postgres(pg);
    })
    .await;
    app.emit("clients.create", json!(1), json!({})).await;

    proxy.cut();
    // The open links notice the cut within 20 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let (client, url) = (app.client.clone(), app.url("/api/v1/events"));
        calls.push(tokio::spawn(async move {
            // Spread over the first second, so some wait behind a batch.
            tokio::time::sleep(Duration::from_millis(i * 50)).await;
            let started = std::time::Instant::now();
            let resp = client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "events_id": "clients.create", "object_id": i, "data": {} }))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (status, took) = call.await.unwrap();
        assert_eq!(status, 503);
        slowest = slowest.max(took);
    }
    println!(
        "while the database is unreachable, the slowest 503 took {slowest:?} (acquire timeout 1 s)"
    );
    assert!(
        slowest < Duration::from_millis(1600),
        "an emit waited {slowest:?}, past the 1 s acquire timeout"
    );
}
