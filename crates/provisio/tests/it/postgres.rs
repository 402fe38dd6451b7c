//! Several real `provisio serve` processes sharing one fresh PostgreSQL
//! database: work is shared and survives a node's death, per-object order
//! holds across nodes, handler changes reach every node. A database that
//! goes away is in `postgres_outage.rs`, which uses this file's cluster.
//!
//! Each test gets its own database (see `ScratchDatabase`). Without a
//! reachable server the tests print that they were skipped, unless `CI` is
//! set, where they fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisio_store::postgres::scratch::ScratchDatabase;
use serde_json::{Value, json};

use crate::helpers::*;

/// Fast retries, short leases: a dead node's work is taken over in about two
/// seconds (handler timeout 1 s + margin 1 s).
const NODE_ENV: &[(&str, &str)] = &[
    ("PROVISIO_ADMIN_TOKEN", ADMIN_TOKEN),
    ("PROVISIO_RETRY_SCHEDULE", "50ms,100ms,200ms"),
    ("PROVISIO_LEASE_MARGIN", "1s"),
    ("PROVISIO_DATABASE_ACQUIRE_TIMEOUT", "2s"),
    ("PROVISIO_LOG", "warn,provisio=info"),
];

/// How long the big runs may take on a slow machine.
const RUN_PATIENCE: Duration = Duration::from_secs(90);

pub(crate) struct Node {
    binary: Option<Binary>,
    pub(crate) base: String,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(crate) fn start(db: &ScratchDatabase) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let binary = Binary::serve_on(db.url(), dir.path(), NODE_ENV);
        Node {
            base: binary.url(""),
            binary: Some(binary),
            _dir: dir,
        }
    }

    fn kill9(&mut self) {
        self.binary.take().unwrap().kill9();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(binary) = self.binary.take() {
            binary.terminate();
        }
    }
}

pub(crate) async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, body) = read(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

/// Emits with an `Idempotency-Key`, retrying (on another node when one stops
/// answering) until the emit is accepted. Records every status other than
/// 202 it got, so tests can check how failures were answered.
pub(crate) struct Emitter {
    client: reqwest::Client,
    nodes: Vec<String>,
    dead: Mutex<HashSet<usize>>,
    pub(crate) refusals: Mutex<Vec<u16>>,
}

impl Emitter {
    pub(crate) fn new(client: &reqwest::Client, nodes: &[&Node]) -> Arc<Emitter> {
        Arc::new(Emitter {
            client: client.clone(),
            nodes: nodes.iter().map(|n| n.base.clone()).collect(),
            dead: Mutex::new(HashSet::new()),
            refusals: Mutex::new(Vec::new()),
        })
    }

    async fn emit(&self, preferred: usize, key: &str, body: &Value) {
        let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
        let mut node = preferred;
        loop {
            if !self.dead.lock().unwrap().contains(&node) {
                let sent = self
                    .client
                    .post(format!("{}/api/v1/events", self.nodes[node]))
                    .bearer_auth(ADMIN_TOKEN)
                    .header("idempotency-key", key)
                    .json(body)
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().as_u16() == 202 => return,
                    Ok(resp) => self.refusals.lock().unwrap().push(resp.status().as_u16()),
                    // The node is gone: send the same key elsewhere.
                    Err(_) => {}
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "emit {key} was never accepted"
            );
            node = (node + 1) % self.nodes.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Emits `per_object` events for each of `objects` objects: objects in
/// parallel, each object's events one after another (so emit order is
/// defined), alternating between the nodes.
pub(crate) async fn emit_all(emitter: Arc<Emitter>, objects: u64, per_object: u64) {
    let mut tasks = Vec::new();
    for object in 0..objects {
        let emitter = emitter.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_object {
                let body = json!({
                    "events_id": "clients.update",
                    "object_id": object,
                    "data": { "n": n },
                });
                let node = ((object + n) % emitter.nodes.len() as u64) as usize;
                emitter.emit(node, &format!("o{object}-n{n}"), &body).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Waits until the receiver has answered 200 to `n` distinct deliveries.
pub(crate) async fn wait_unique(receiver: &Receiver, n: usize) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
    loop {
        let got = receiver.received();
        let unique: HashSet<&str> = got
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.header("webhook-id"))
            .collect();
        if unique.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} distinct deliveries, got {}",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per object, the first arrival of each event is in emit order (a redelivery
/// after a node's death may repeat one, never overtake one).
#[track_caller]
pub(crate) fn assert_ordered(received: &[Received], objects: u64, per_object: u64) {
    let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut ids = HashSet::new();
    for r in received.iter().filter(|r| r.status == 200) {
        if !ids.insert(r.header("webhook-id").to_owned()) {
            continue;
        }
        let body = r.json();
        let object = body["event"]["object_id"].as_u64().unwrap();
        seen.entry(object)
            .or_default()
            .push(body["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(seen.len() as u64, objects);
    let expected: Vec<u64> = (0..per_object).collect();
    for (object, order) in seen {
        assert_eq!(order, expected, "object {object} arrived out of order");
    }
}

pub(crate) async fn create_handler(client: &reqwest::Client, node: &Node, target: String) -> Value {
    let (status, handler) = call(
        client,
        reqwest::Method::POST,
        format!("{}/api/v1/handlers", node.base),
        Some(json!({
            "name": "sync", "events_id": "clients.update", "target": target,
            "timeout_ms": 1000, "ordered": true, "max_attempts": 10,
        })),
    )
    .await;
    assert_eq!(status, 201, "{handler}");
    handler
}

/// Two nodes on a fresh database, with an ordered handler (created on node A)
/// pointing at a receiver that answers 200.
pub(crate) struct Cluster {
    pub(crate) db: ScratchDatabase,
    pub(crate) client: reqwest::Client,
    pub(crate) receiver: Receiver,
    pub(crate) a: Node,
    pub(crate) b: Node,
}

impl Cluster {
    pub(crate) async fn start() -> Option<Cluster> {
        let db = ScratchDatabase::create().await?;
        let client = http_client();
        let receiver = Receiver::ok().await;
        let a = Node::start(&db);
        let b = Node::start(&db);
        create_handler(&client, &a, receiver.url()).await;
        // Node B learns of the handler through NOTIFY, within the promised second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some(Cluster {
            db,
            client,
            receiver,
            a,
            b,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_deliver_everything_in_order_when_one_is_killed() {
    let Some(Cluster {
        db,
        client,
        receiver,
        mut a,
        b,
    }) = Cluster::start().await
    else {
        return;
    };

    let (objects, per_object) = (50, 40);
    let emitter = Emitter::new(&client, &[&a, &b]);
    let emitting = tokio::spawn(emit_all(emitter.clone(), objects, per_object));

    receiver.wait_for(300).await;
    emitter.dead.lock().unwrap().insert(0);
    a.kill9();

    emitting.await.unwrap();
    let received = wait_unique(&receiver, (objects * per_object) as usize).await;
    assert_ordered(&received, objects, per_object);
    // The log's count stops at 1,000: page through the successes instead.
    let mut logged = 0;
    for page in 1.. {
        let (status, log) = call(
            &client,
            reqwest::Method::GET,
            format!(
                "{}/api/v1/executions?status=success&per_page=500&page={page}",
                b.base
            ),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let items = log["items"].as_array().unwrap().len() as u64;
        if items == 0 {
            break;
        }
        logged += items;
    }
    assert!(logged >= objects * per_object, "{logged}");

    // Every delivery finishes (the dead node's through a lapsed lease),
    // and the mirror of due work follows each write through the kill: it
    // equals the pending deliveries at every look, and both end empty.
    let deadline = tokio::time::Instant::now() + RUN_PATIENCE;
    loop {
        assert_eq!(db.unmirrored().await, 0);
        let left = db
            .column::<i64>("SELECT count(*) FROM deliveries WHERE state <> 'success'")
            .await;
        if left == [0] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left:?} unfinished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        db.column::<i64>("SELECT count(*) FROM due_deliveries")
            .await,
        [0]
    );
}

#[tokio::test]
async fn a_handler_disabled_on_one_node_is_not_called_for_events_emitted_on_another() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let client = http_client();
    let receiver = Receiver::ok().await;
    let a = Node::start(&db);
    let b = Node::start(&db);
    let handler = create_handler(&client, &a, receiver.url()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let emit_on_b = || {
        call(
            &client,
            reqwest::Method::POST,
            format!("{}/api/v1/events", b.base),
            Some(json!({ "events_id": "clients.update", "object_id": 1, "data": {} })),
        )
    };
    let (status, body) = emit_on_b().await;
    assert_eq!(
        (status, body["deliveries"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    receiver.wait_for(1).await;

    let (status, body) = call(
        &client,
        reqwest::Method::PATCH,
        format!("{}/api/v1/handlers/{}", a.base, handler["id"]),
        Some(json!({ "status": "disabled" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (status, body) = emit_on_b().await;
    assert_eq!(
        (status, body["deliveries"].as_u64()),
        (202, Some(0)),
        "node B routed by a stale table: {body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the disabled handler was called"
    );
}
