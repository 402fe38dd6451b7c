//! The engine's settings and its error.

use std::path::PathBuf;
use std::time::Duration;

use provisio_core::retry::RetrySchedule;
use provisio_store::StoreError;

use crate::{Clock, netguard, retention};

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
    /// script started (see [`scripts`](crate::scripts)); `None` only kills its process group.
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
