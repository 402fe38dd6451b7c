//! The change follower: on a database other nodes share, acts on what they
//! (or this node's other connections) changed.

use std::sync::Arc;
use std::time::Duration;

use provisio_store::{Store, StoreChange};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{EngineError, RouteTable, Routes};

/// What the follower uses: the routing table it reloads from the store, the
/// dispatcher's wake-up, and the shutdown signal.
pub(crate) struct Follower {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) routes: Routes,
    pub(crate) wake: Arc<Notify>,
    pub(crate) shutdown: CancellationToken,
}

/// Rebuilds the routing table from storage and wakes the dispatcher, since
/// deliveries of a handler that was just re-enabled may be due.
pub(crate) async fn reload(
    store: &dyn Store,
    routes: &Routes,
    wake: &Notify,
) -> Result<(), EngineError> {
    routes.replace(RouteTable::load(store).await?);
    wake.notify_one();
    Ok(())
}

/// Acts on changes made through other connections (other nodes, or this one):
/// reloads the routing table when handlers or the catalog changed, wakes the
/// dispatcher when work arrived, and does both after the feed reconnected,
/// since changes may have been missed meanwhile. A burst of notifications is
/// handled as one.
pub(crate) async fn follow_changes(follower: Follower, mut changes: mpsc::Receiver<StoreChange>) {
    let Follower {
        store,
        routes,
        wake,
        shutdown,
    } = follower;
    loop {
        let first = tokio::select! {
            change = changes.recv() => change,
            () = shutdown.cancelled() => return,
        };
        let Some(first) = first else { return };
        let mut routes_changed = first != StoreChange::Work;
        while let Ok(more) = changes.try_recv() {
            routes_changed |= more != StoreChange::Work;
        }
        if !routes_changed {
            wake.notify_one();
            continue;
        }
        // Retried until it works: until then this node routes by a stale table.
        let mut delay = Duration::from_millis(100);
        while let Err(err) = reload(store.as_ref(), &routes, &wake).await {
            tracing::warn!(error = %err, "could not reload handlers after a change; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
