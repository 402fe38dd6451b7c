//! provisio's engine: routes events to handlers, keeps the durable delivery
//! queue moving, and calls handlers.
//!
//! # Layout
//!
//! - [`Engine`] (this file): the handle the server holds; owns the background
//!   tasks and their shutdown.
//! - [`clock`]: the wall clock leases, due times and log timestamps are read
//!   from; tests move it by hand.
//! - [`routes`]: the in-memory routing table, rebuilt on every handler change.
//! - [`emit`]: the emit path: batches accepted events into one commit each.
//! - [`before`]: the before-stage chain, run synchronously for the caller.
//! - [`dispatch`]: claims due deliveries, runs attempts with per-handler
//!   concurrency limits, and records their results in batches.
//! - [`http`], [`scripts`], [`outcome`]: the executors and what a call produced.
//! - `retention`: prunes old history in the background.
//! - [`netguard`]: the target deny list, enforced after DNS resolution.
//! - [`service`]: the use cases the API and the web section share: each change
//!   with the reload or wake that makes it take effect, and [`OpError`].

pub mod before;
pub mod clock;
pub mod dispatch;
pub mod emit;
pub mod http;
pub mod netguard;
pub mod outcome;
mod record;
mod retention;
pub mod routes;
pub mod scripts;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use provisio_core::handler::{Handler, HandlerKind};
use provisio_core::retry::RetrySchedule;
use provisio_store::{Store, StoreChange, StoreError};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use before::{BeforeInput, BeforeStep, BeforeVerdict, StepOutcome};
pub use clock::Clock;
pub use emit::{EmitError, EmitInput, EmitReceipt};
use outcome::{CallContext, CallOutcome};
pub use routes::{RouteTable, Routes};
pub use service::{ExecutionSearch, OpError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// The engine's settings, validated by the caller.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub scripts_dir: PathBuf,
    pub retry_schedule: RetrySchedule,
    /// Attempts in flight at once, across all handlers.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one handler, so one slow receiver can
    /// take only its share.
    pub max_in_flight_per_handler: usize,
    pub deny_networks: Vec<ipnet::IpNet>,
    /// How long shutdown waits for attempts in flight.
    pub drain_timeout: Duration,
    /// Scripts running at once, across all handlers.
    pub max_scripts: usize,
    /// How long a whole before-stage chain may take.
    pub before_deadline: Duration,
    /// How long history is kept; `None` keeps it forever.
    pub retention: Option<Duration>,
    /// How often retention runs.
    pub prune_every: Duration,
    /// How long past the longest handler timeout a lease lasts: the time a
    /// node has to record an attempt's result before another node may run it
    /// again, and so how late a dead node's work is taken over.
    pub lease_margin: Duration,
    /// The longest an emit waits for its commit before it is answered with
    /// an error (a 503): the database's acquire timeout, so a caller learns
    /// that the database is unavailable within that bound even when emits
    /// queue behind a commit that is itself waiting for a connection.
    pub emit_timeout: Duration,
    /// On a database shared with other nodes, the longest the dispatcher sleeps
    /// without looking for due work. Other nodes announce new work, but not
    /// their leases; this bounds how long a lapsed lease of a dead node can go
    /// unnoticed by an idle node. Unused on a single node, where every lease
    /// and due time is this node's own.
    pub shared_recheck: Duration,
    /// The executable run around every script as
    /// `<it> script-supervisor -- <script> <args…>`, which kills everything the
    /// script started (see [`scripts`]); `None` only kills its process group.
    pub script_supervisor: Option<PathBuf>,
    /// Where the engine reads the time of day (leases, due times, log
    /// timestamps): the system's, or one a test moves by hand.
    pub clock: Clock,
}

impl EngineConfig {
    pub fn new(scripts_dir: PathBuf) -> Self {
        Self {
            scripts_dir,
            retry_schedule: RetrySchedule::default(),
            max_in_flight: 1024,
            max_in_flight_per_handler: 128,
            deny_networks: netguard::default_deny_list(),
            drain_timeout: Duration::from_secs(10),
            max_scripts: 8,
            before_deadline: Duration::from_secs(10),
            retention: Some(Duration::from_secs(30 * 86_400)),
            prune_every: retention::DEFAULT_PRUNE_EVERY,
            lease_margin: Duration::from_secs(30),
            shared_recheck: Duration::from_secs(5),
            emit_timeout: Duration::from_secs(5),
            script_supervisor: None,
            clock: Clock::system(),
        }
    }
}

/// A cheap-to-clone handle on the running engine.
#[derive(Clone)]
pub struct Engine(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) routes: Routes,
    pub(crate) config: EngineConfig,
    pub(crate) emits: mpsc::Sender<emit::Pending>,
    /// Wakes the dispatcher: new deliveries were committed, a retry or an
    /// ordered successor became due, or a concurrency slot freed up.
    pub(crate) wake: Notify,
    pub(crate) http: http::HttpExecutor,
    pub(crate) scripts: scripts::ScriptExecutor,
    /// Where before-stage executions go; taken at shutdown so the recorder can
    /// finish once the dispatcher has drained.
    pub(crate) records: std::sync::Mutex<Option<mpsc::Sender<record::Recorded>>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Engine {
    /// Loads the routing table, settles attempts a previous run left leased
    /// (single node only: on a shared database, other nodes' leases are live),
    /// and starts the emit writer, the dispatcher and, on a shared database,
    /// the task that follows other nodes' changes.
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
        let http = http::HttpExecutor::new(
            netguard::DenyList::new(config.deny_networks.clone()),
            outcome::RESPONSE_BODY_CAP,
        )?;
        let scripts = scripts::ScriptExecutor::new(
            config.scripts_dir.clone(),
            config.max_scripts,
            config.script_supervisor.clone(),
        );
        let (emits, emit_rx) = mpsc::channel(emit::QUEUE_DEPTH);
        let (records, records_rx) = mpsc::channel(record::QUEUE_DEPTH);
        let engine = Engine(Arc::new(Shared {
            store,
            routes,
            config,
            emits,
            wake: Notify::new(),
            http,
            scripts,
            records: std::sync::Mutex::new(Some(records.clone())),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }));
        engine
            .0
            .tasks
            .spawn(emit::run_writer(engine.clone(), emit_rx));
        engine
            .0
            .tasks
            .spawn(record::run(engine.clone(), records_rx));
        engine
            .0
            .tasks
            .spawn(dispatch::run_dispatcher(engine.clone(), records.clone()));
        engine.0.tasks.spawn(retention::run(engine.clone()));
        if let Some(changes) = changes {
            engine
                .0
                .tasks
                .spawn(follow_changes(engine.clone(), changes));
        }
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
        self.0
            .routes
            .replace(RouteTable::load(self.0.store.as_ref()).await?);
        // Deliveries of a handler that was just re-enabled may be due.
        self.0.wake.notify_one();
        Ok(())
    }

    /// Tells the dispatcher that deliveries may have become due (a redeliver).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// True when other nodes share the database (and its queue).
    pub(crate) fn shared(&self) -> bool {
        !self.0.store.single_node()
    }

    /// Calls a handler once, whatever its kind.
    pub(crate) async fn call(
        &self,
        handler: &Handler,
        call: &CallContext<'_>,
        payload: String,
        timeout: Duration,
    ) -> CallOutcome {
        match handler.spec.kind {
            HandlerKind::Http => self.0.http.call(handler, call, payload, timeout).await,
            HandlerKind::Script => self.0.scripts.run(handler, call, payload, timeout).await,
        }
    }

    /// Checks a script target against the scripts directory.
    pub fn check_script(&self, target: &str) -> Result<(), String> {
        self.0.scripts.check(target)
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

/// Acts on changes made through other connections (other nodes, or this one):
/// reloads the routing table when handlers or the catalog changed, wakes the
/// dispatcher when work arrived, and does both after the feed reconnected,
/// since changes may have been missed meanwhile. A burst of notifications is
/// handled as one.
async fn follow_changes(engine: Engine, mut changes: mpsc::Receiver<StoreChange>) {
    loop {
        let first = tokio::select! {
            change = changes.recv() => change,
            () = engine.0.shutdown.cancelled() => return,
        };
        let Some(first) = first else { return };
        let mut reload = first != StoreChange::Work;
        while let Ok(more) = changes.try_recv() {
            reload |= more != StoreChange::Work;
        }
        if !reload {
            engine.wake();
            continue;
        }
        // Retried until it works: until then this node routes by a stale table.
        let mut delay = Duration::from_millis(100);
        while let Err(err) = engine.reload().await {
            tracing::warn!(error = %err, "could not reload handlers after a change; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = engine.0.shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
