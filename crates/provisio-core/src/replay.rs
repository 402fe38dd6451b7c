//! Replay jobs: what a job resends and where it stands. A job's filter is
//! validated by the engine (it needs the catalog and the clock); these are the
//! words both sides of the wire use.

crate::wire_enum! {
    /// Which matching events a replay resends: only those whose latest
    /// delivery to the handler ended `failed`, or every one (also events the
    /// handler never got, which back-fills a new handler).
    ReplayStatus { Failed = "failed", All = "all" }
}

crate::wire_enum! {
    /// Where a replay job stands: `running` while any of its deliveries is
    /// unfinished, `done` once none is, `cancelled` after a cancel (what was
    /// not yet sent never will be; attempts already in flight finish).
    ReplayState { Running = "running", Done = "done", Cancelled = "cancelled" }
}

/// The `last_error` of a replay's delivery that a cancel stopped before it
/// was sent.
pub const REPLAY_CANCELLED: &str = "replay cancelled";
