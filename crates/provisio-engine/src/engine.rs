//! [`Engine`]: the handle the server holds. It starts each background task
//! with only what that task uses, and owns their shutdown.

use std::sync::Arc;

use provisio_store::Store;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker;
use crate::dispatch::{self, Dispatcher};
use crate::emit;
use crate::executor::Executors;
use crate::follow::{self, Follower};
use crate::outcome;
use crate::record::{self, Recorder};
use crate::retention::{self, Retention};
use crate::{EngineConfig, EngineError, RouteTable, Routes, http, netguard, scripts};

/// A cheap-to-clone handle on the running engine.
#[derive(Clone)]
pub struct Engine(pub(crate) Arc<Shared>);

/// What the engine's own methods (emit, the before stage, the use cases)
/// use; the background tasks each get their part of it when they start.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) routes: Routes,
    pub(crate) config: EngineConfig,
    /// Where emits queue for the dispatcher, which commits them.
    pub(crate) emits: mpsc::Sender<emit::Pending>,
    /// Wakes the dispatcher: new deliveries were committed, a retry or an
    /// ordered successor became due, or a concurrency slot freed up.
    pub(crate) wake: Arc<Notify>,
    /// The before stage calls handlers through these, as attempts do.
    pub(crate) executors: Executors,
    /// Where before-stage executions go; taken at shutdown so the recorder can
    /// finish once the dispatcher has drained.
    pub(crate) records: std::sync::Mutex<Option<mpsc::Sender<record::Recorded>>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Engine {
    /// Loads the routing table, settles attempts a previous run left leased
    /// (single node only: on a shared database, other nodes' leases are live),
    /// and starts the recorder, the dispatcher (which commits emits), retention
    /// and, on a shared database, the task that follows other nodes' changes.
    pub async fn start(store: Arc<dyn Store>, config: EngineConfig) -> anyhow::Result<Engine> {
        let routes = Routes::default();
        routes.replace(RouteTable::load(store.as_ref()).await?);
        if store.single_node() {
            // Whatever a previous run left leased was interrupted by its end.
            let now = config.clock.now_ms();
            let settled = store.settle_interrupted(now, i64::MAX).await?;
            if settled > 0 {
                tracing::warn!(
                    settled,
                    "attempts interrupted by the previous run are logged with status unknown and sent again"
                );
            }
        }
        let changes = store.watch();
        let executors = Executors {
            http: http::HttpExecutor::new(
                netguard::DenyList::new(config.deny_networks.clone()),
                outcome::RESPONSE_BODY_CAP,
                config.max_in_flight,
            )?,
            scripts: scripts::ScriptExecutor::new(
                config.scripts_dir.clone(),
                config.max_scripts,
                config.script_supervisor.clone(),
            ),
        };
        let (emits, emit_rx) = mpsc::channel(emit::QUEUE_DEPTH);
        let (records, records_rx) = mpsc::channel(record::QUEUE_DEPTH);
        let (breaker, breaker_rx) = mpsc::channel(breaker::QUEUE_DEPTH);
        let wake = Arc::new(Notify::new());
        let starved = Arc::new(crate::shares::Starved::default());
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        let recorder = Recorder {
            store: store.clone(),
            wake: wake.clone(),
            shutdown: shutdown.clone(),
            drain_timeout: config.drain_timeout,
        };
        tasks.spawn(record::run(recorder, records_rx));
        let dispatcher = Dispatcher {
            store: store.clone(),
            routes: routes.clone(),
            executors: executors.clone(),
            emits: emit_rx,
            results: records.clone(),
            wake: wake.clone(),
            starved,
            shutdown: shutdown.clone(),
            clock: config.clock.clone(),
            retry_schedule: config.retry_schedule.clone(),
            max_in_flight: config.max_in_flight,
            max_in_flight_per_handler: config.max_in_flight_per_handler,
            lease_margin: config.lease_margin,
            drain_timeout: config.drain_timeout,
            shared_recheck: (!store.single_node()).then_some(config.shared_recheck),
            breaker,
        };
        tasks.spawn(dispatch::run_dispatcher(dispatcher));
        if let Some(keep) = config.retention {
            let retention = Retention {
                store: store.clone(),
                clock: config.clock.clone(),
                keep,
                every: config.prune_every,
                shutdown: shutdown.clone(),
            };
            tasks.spawn(retention::run(retention));
        }
        if let Some(changes) = changes {
            let follower = Follower {
                store: store.clone(),
                routes: routes.clone(),
                wake: wake.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.spawn(follow::follow_changes(follower, changes));
        }
        let engine = Engine(Arc::new(Shared {
            store,
            routes,
            config,
            emits,
            wake,
            executors,
            records: std::sync::Mutex::new(Some(records)),
            shutdown: shutdown.clone(),
            tasks,
        }));
        // It pauses and resumes through the engine's use cases, so it holds
        // the engine; it stops at shutdown, which lets the engine go.
        engine
            .0
            .tasks
            .spawn(breaker::run(engine.clone(), breaker_rx, shutdown));
        Ok(engine)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.0.config
    }

    /// The current routing table (handlers and the event catalog).
    pub fn routes(&self) -> Arc<RouteTable> {
        self.0.routes.current()
    }

    /// Rebuilds the routing table from storage. Called after every handler or
    /// catalog change, before the API answers, so the change governs the next emit.
    pub async fn reload(&self) -> Result<(), EngineError> {
        follow::reload(self.0.store.as_ref(), &self.0.routes, &self.0.wake).await
    }

    /// Tells the dispatcher that deliveries may have become due (a redeliver).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Checks a script target against the scripts directory.
    pub fn check_script(&self, target: &str) -> Result<(), String> {
        self.0.executors.scripts.check(target)
    }

    /// Stops claiming new work, lets attempts in flight finish within the drain
    /// timeout, records their results, and returns when every task is done.
    pub async fn shutdown(&self) {
        self.0.shutdown.cancel();
        self.0.records.lock().expect("records lock poisoned").take();
        self.0.tasks.close();
        self.0.tasks.wait().await;
    }
}
