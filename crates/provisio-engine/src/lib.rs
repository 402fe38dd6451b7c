//! provisio's engine: routes events to handlers, keeps the durable delivery
//! queue moving, and calls handlers.
//!
//! # Layout
//!
//! - `engine`: [`Engine`], the handle the server holds. It starts the
//!   background tasks, each with only what it uses, and owns their shutdown.
//! - `config`: [`EngineConfig`], the settings, and [`EngineError`].
//! - [`clock`]: the wall clock leases, due times and log timestamps are read
//!   from; tests move it by hand.
//! - [`routes`]: the in-memory routing table, rebuilt on every handler change.
//! - [`emit`]: the emit path ([`Engine::emit`]) and the group commit of
//!   accepted events, which the dispatcher runs with its next claim.
//! - [`before`]: the before-stage chain ([`Engine::run_before`]), run
//!   synchronously for the caller.
//! - [`dispatch`]: the **dispatcher** task: claims due deliveries (and
//!   commits queued emits in the claim's transaction), runs attempts,
//!   decides retries. `shares`: each handler's fair share of the
//!   in-flight slots, with a reserve for handlers that answer.
//! - `breaker`: the automatic pause: each handler's run of failed attempts,
//!   and the **breaker** task that pauses (and, after a probe's success,
//!   resumes) handlers through the use cases.
//! - `pace`: each rate-limited handler's next free call time.
//! - `record`: the **recorder** task: commits attempt results and
//!   before-stage executions in batches.
//! - `retention`: the **retention** task: prunes old history.
//! - `follow`: the **change follower** task (shared databases only): reloads
//!   routes and wakes the dispatcher on other nodes' changes.
//! - `executor`, [`http`], [`scripts`], [`outcome`]: the executors behind one
//!   call and what a call produced.
//! - [`netguard`]: the target deny list, enforced after DNS resolution.
//! - [`service`]: the use cases the API and the web section share: each change
//!   with the reload or wake that makes it take effect, and [`OpError`].

mod attempt;
pub mod before;
mod breaker;
pub mod clock;
mod config;
pub mod dispatch;
pub mod emit;
mod engine;
mod executor;
mod follow;
pub mod http;
pub mod netguard;
pub mod outcome;
mod pace;
mod record;
mod retention;
pub mod routes;
pub mod scripts;
pub mod service;
mod shares;
mod trial;

pub use before::{BeforeStep, BeforeVerdict, StepOutcome};
pub use clock::Clock;
pub use config::{EngineConfig, EngineError};
pub use emit::{EmitError, EmitReceipt, EventInput};
pub use engine::Engine;
pub use routes::{RouteTable, Routes};
pub use service::{DeliveryDetail, ExecutionSearch, OpError, ReplayRequest};
pub use trial::{
    DryRun, DrySample, MAX_DRY_RUN, TestCall, TestEvent, TestReport, TestRequest, TestResponse,
    TestVerdict,
};
