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
        db: _db,
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

/// A receiver that answers a NUL byte, or a script that writes one to its
/// stderr, is logged like any other: PostgreSQL refuses NUL in text, and a
/// batch that can never commit would hold every later result behind it.
#[tokio::test]
async fn a_nul_byte_in_a_reply_or_an_error_is_logged_and_blocks_nothing() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let app = TestApp::spawn_with(|s| {
        s.store.database =
            provisio::config::Database::Postgres(provisio_store::postgres::PgSettings::new(url));
    })
    .await;
    let receiver = Receiver::sequence(vec![Reply::with_body(200, "ok\0then more")]).await;
    app.create_handler(json!({ "target": receiver.url(), "events_id": "clients.create" }))
        .await;
    app.write_script("nul.sh", "#!/bin/sh\nprintf 'bad\\000input' >&2\nexit 3\n");
    app.create_handler(json!({ "kind": "script", "target": "nul.sh",
                               "events_id": "clients.update", "max_attempts": 1,
                               "on_exhausted": "skip" }))
        .await;

    let sent = app.emit("clients.create", json!(1), json!({})).await;
    let failed = app.emit("clients.update", json!(1), json!({})).await;
    app.wait_for_event(sent["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "success"
    })
    .await;
    let error = app.wait_first_delivery_failed(&failed).await;
    assert!(error.contains("bad\u{FFFD}input"), "{error}");
    let rows = app.wait_executions("", 2).await;
    assert!(
        rows.iter()
            .any(|r| r["response_body"] == "ok\u{FFFD}then more"),
        "{rows:?}"
    );
    // Later results are recorded as usual.
    let later = app.emit("clients.create", json!(2), json!({})).await;
    app.wait_for_event(later["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "success"
    })
    .await;
}

/// Each connection creates the queue's functions in its temporary schema: a
/// role without the database's TEMPORARY privilege cannot run provisio, and
/// the start says why in one line, not that a pool timed out.
#[tokio::test]
async fn a_role_without_the_temporary_privilege_stops_the_start_with_one_line_saying_so() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let role = format!("{}_notemp", db.name());
    db.admin(&format!("CREATE ROLE {role} LOGIN")).await;
    db.admin(&format!(
        "REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC",
        db.name()
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = db.url_as(&role);
    for command in ["serve", "migrate"] {
        let args = [
            command,
            "--database-url",
            &url,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ];
        let (ok, _, stderr) = run_cli(&args, &[("PROVISIO_DATABASE_ACQUIRE_TIMEOUT", "1s")]);
        assert!(!ok, "{command} should fail");
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("provisio: cannot connect to PostgreSQL"),
            "{stderr}"
        );
        assert!(
            last.contains("permission denied to create temporary tables"),
            "{stderr}"
        );
    }
    db.admin(&format!("DROP ROLE {role}")).await;
}

/// PostgreSQL's `text` cannot hold U+0000. Every field that stores text
/// refuses it up front with a 422 naming the field, and an address holding
/// `%00` is a 400, as on SQLite, where they used to be 500s (a handler's
/// name, target or filter, an event type's description, a log filter, a
/// search, an id), or a 503 that also failed every emit committed in the
/// same batch (an `object_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_a_nul_character_is_refused_up_front_and_fails_no_other_emit() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let node = Node::start(&db);
    let client = http_client();
    let url = |path: &str| format!("{}/api/v1/{path}", node.base);
    let handler = json!({ "name": "h", "events_id": "clients.*", "target": "http://127.0.0.1:9/" });
    let with = |field: &str, value: Value| {
        let mut body = handler.clone();
        body[field] = value;
        body
    };
    let refused = [
        ("handlers", with("name", json!("h\u{0}x")), "name"),
        (
            "handlers",
            with("target", json!("http://127.0.0.1:9/\u{0}")),
            "target",
        ),
        (
            "handlers",
            with("filter", json!("data.x == 'a\u{0}'")),
            "filter",
        ),
        (
            "event-types",
            json!({ "id": "clients.nul_test", "description": "a\u{0}b" }),
            "description",
        ),
    ];
    for (path, body, field) in refused {
        let (status, answer) = call(&client, reqwest::Method::POST, url(path), Some(body)).await;
        assert_eq!(status, 422, "{path} {field}: {answer}");
        assert!(answer["error"]["fields"][field].is_string(), "{answer}");
    }
    // In an address (a search, a filter, an id) it can only come encoded,
    // and is refused before routing.
    for path in [
        "executions?object_id=a%00b",
        "executions?data=%00",
        "handlers?q=a%00",
        "events/a%00b",
    ] {
        let (status, answer) = call(&client, reqwest::Method::GET, url(path), None).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "malformed", "{path}: {answer}");
    }
    let page = client
        .get(format!("{}/handlers?q=%00", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("Bad address"));
    let (status, handlers) = call(&client, reqwest::Method::GET, url("handlers"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        handlers["items"].as_array().map(Vec::len),
        Some(0),
        "{handlers}"
    );

    // A bad emit among good ones, all at once: only it is refused.
    let (status, created) = call(
        &client,
        reqwest::Method::POST,
        url("handlers"),
        Some(handler.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let mut emits = tokio::task::JoinSet::new();
    for object_id in std::iter::once(json!("a\u{0}b")).chain((0..20).map(|i| json!(i))) {
        let (client, url) = (client.clone(), url("events"));
        let body = json!({ "events_id": "clients.create", "object_id": object_id, "data": {} });
        emits.spawn(async move {
            let bad = body["object_id"].is_string();
            (
                bad,
                call(&client, reqwest::Method::POST, url, Some(body)).await,
            )
        });
    }
    let mut accepted = 0;
    while let Some(done) = emits.join_next().await {
        match done.unwrap() {
            (true, (status, answer)) => {
                assert_eq!(status, 422, "{answer}");
                assert!(
                    answer["error"]["fields"]["object_id"].is_string(),
                    "{answer}"
                );
            }
            (false, (status, answer)) => {
                assert_eq!(status, 202, "{answer}");
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 20);
}
