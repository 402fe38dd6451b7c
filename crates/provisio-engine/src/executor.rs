//! The executors behind one call: HTTP and script handlers, chosen by kind.
//! The dispatcher's attempts and the before-stage chain both call through it.

use std::time::Duration;

use provisio_core::handler::{Handler, HandlerKind};

use crate::http::HttpExecutor;
use crate::outcome::{CallContext, CallOutcome};
use crate::scripts::ScriptExecutor;

/// Both executors; cheap to clone (each is a handle on its pool or limits).
#[derive(Clone)]
pub(crate) struct Executors {
    pub(crate) http: HttpExecutor,
    pub(crate) scripts: ScriptExecutor,
}

impl Executors {
    /// Calls a handler once, whatever its kind.
    pub(crate) async fn call(
        &self,
        handler: &Handler,
        call: &CallContext<'_>,
        payload: String,
        timeout: Duration,
    ) -> CallOutcome {
        match handler.spec.kind {
            HandlerKind::Http => self.http.call(handler, call, payload, timeout).await,
            HandlerKind::Script => self.scripts.run(handler, call, payload, timeout).await,
        }
    }
}
