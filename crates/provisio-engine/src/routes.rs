//! The routing table: which handlers an event goes to. Read on every emit from
//! memory, rebuilt from storage whenever a handler changes, so a change governs
//! every event emitted after the API answered. An event goes to the enabled
//! handlers of its stage whose pattern matches it and whose filter, if they
//! have one, it passes.

use std::sync::{Arc, RwLock};

use provisio_core::event::Event;
use provisio_core::filter::FilterInput;
use provisio_core::handler::{Handler, Stage, Status};
use provisio_core::timefmt;
use provisio_store::FilteredOut;

/// Where an event goes: the handlers it is for, in run order, and those
/// whose filter it did not pass.
#[derive(Debug, Default)]
pub struct Routed {
    pub handlers: Vec<Arc<Handler>>,
    pub filtered_out: Vec<FilteredOut>,
}

/// An immutable snapshot of the enabled handlers, in run order.
#[derive(Debug, Default)]
pub struct RouteTable {
    after: Vec<Arc<Handler>>,
    before: Vec<Arc<Handler>>,
    /// Every handler by id, whatever its status: workers look up the handler
    /// of a delivery here and skip ones that are gone or no longer enabled.
    by_id: std::collections::HashMap<i64, Arc<Handler>>,
    /// The event catalog by id: emits of unknown types are refused.
    event_types: std::collections::HashMap<String, provisio_core::catalog::EventType>,
    /// The longest timeout of any handler, computed once per table because the
    /// dispatcher sizes every lease by it.
    max_timeout: std::time::Duration,
}

impl RouteTable {
    pub fn new(handlers: Vec<Handler>) -> Self {
        let mut table = RouteTable::default();
        for handler in handlers {
            let handler = Arc::new(handler);
            if handler.spec.status == Status::Enabled {
                match handler.spec.stage {
                    Stage::After => table.after.push(handler.clone()),
                    Stage::Before => table.before.push(handler.clone()),
                }
            }
            table.max_timeout = table.max_timeout.max(std::time::Duration::from_millis(
                handler.spec.timeout_ms.into(),
            ));
            table.by_id.insert(handler.id, handler);
        }
        let order = |a: &Arc<Handler>, b: &Arc<Handler>| {
            (a.spec.priority, a.id).cmp(&(b.spec.priority, b.id))
        };
        table.after.sort_by(order);
        table.before.sort_by(order);
        table
    }

    /// The enabled handlers of `stage` that match `events_id`, lowest priority
    /// first, ties by id.
    pub fn matching<'a, 'e>(
        &'a self,
        stage: Stage,
        events_id: &'e str,
    ) -> impl Iterator<Item = &'a Arc<Handler>> + use<'a, 'e> {
        let list = match stage {
            Stage::After => &self.after,
            Stage::Before => &self.before,
        };
        list.iter()
            .filter(move |h| h.spec.events_id.matches(events_id))
    }

    /// The handlers `event` goes to at `stage`: [`RouteTable::matching`],
    /// less those whose filter it does not pass. A filter that cannot be
    /// evaluated (a key the data lacks, a type mismatch) does not pass: a
    /// handler is called only for events its filter accepts. The event is
    /// converted for filters once, and only if one of them has a filter.
    pub fn route(&self, stage: Stage, event: &Event) -> Routed {
        let mut routed = Routed::default();
        let mut input = None;
        for handler in self.matching(stage, &event.events_id) {
            let Some(filter) = &handler.spec.filter else {
                routed.handlers.push(handler.clone());
                continue;
            };
            let input = input.get_or_insert_with(|| {
                FilterInput::new(
                    &event.events_id,
                    &event.object_id,
                    &timefmt::format_seconds(event.dt),
                    &event.data,
                )
            });
            let verdict = match input {
                Ok(input) => filter.check(input),
                Err(err) => Err(err.clone()),
            };
            count_filter_check(&verdict);
            match verdict {
                Ok(true) => routed.handlers.push(handler.clone()),
                Ok(false) => routed.filtered_out.push(FilteredOut {
                    handler_id: handler.id,
                    error: None,
                }),
                Err(error) => routed.filtered_out.push(FilteredOut {
                    handler_id: handler.id,
                    error: Some(error),
                }),
            }
        }
        routed
    }

    /// Whether an event of `events_id` meets a filter at `stage`.
    pub fn filters(&self, stage: Stage, events_id: &str) -> bool {
        self.matching(stage, events_id)
            .any(|h| h.spec.filter.is_some())
    }

    pub fn get(&self, id: i64) -> Option<&Arc<Handler>> {
        self.by_id.get(&id)
    }

    /// The handlers paused automatically, each with how often it is probed.
    pub fn probed(&self) -> impl Iterator<Item = (Arc<Handler>, std::time::Duration)> + '_ {
        // A handler whose setting was removed while it was paused keeps
        // being probed, at the default interval.
        const DEFAULT_PROBE: std::time::Duration = std::time::Duration::from_secs(300);
        self.by_id.values().filter_map(|h| {
            let every = h.spec.auto_pause.map_or(DEFAULT_PROBE, |a| a.probe_every);
            h.pause
                .as_ref()
                .is_some_and(|p| p.is_automatic())
                .then(|| (h.clone(), every))
        })
    }

    /// Every handler's id, whatever its status: deliveries of disabled or
    /// moved handlers are claimed too, to be closed as not sent.
    pub fn handler_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_id.keys().copied()
    }
}

/// The shared, swappable current table.
#[derive(Debug, Default, Clone)]
pub struct Routes(Arc<RwLock<Arc<RouteTable>>>);

impl Routes {
    pub fn current(&self) -> Arc<RouteTable> {
        self.0.read().expect("routes lock poisoned").clone()
    }

    pub fn replace(&self, table: RouteTable) {
        *self.0.write().expect("routes lock poisoned") = Arc::new(table);
    }
}

impl RouteTable {
    /// Reads every handler and the catalog from storage.
    pub async fn load(
        store: &dyn provisio_store::Store,
    ) -> Result<Self, provisio_store::StoreError> {
        let handlers = store.all_handlers().await?;
        let types = store.list_event_types().await?;
        let mut table = Self::new(handlers);
        table.event_types = types.into_iter().map(|t| (t.id.clone(), t)).collect();
        Ok(table)
    }

    /// The catalog entry for `id`.
    pub fn event_type(&self, id: &str) -> Option<&provisio_core::catalog::EventType> {
        self.event_types.get(id)
    }

    /// Every event type id, for validating handler patterns.
    pub fn event_type_ids(&self) -> Vec<String> {
        self.event_types.keys().cloned().collect()
    }

    /// The longest timeout of any handler: leases must outlast every attempt.
    pub fn max_timeout(&self) -> std::time::Duration {
        self.max_timeout
    }
}

/// Counts one filter evaluation by its result: pass, fail or error.
pub(crate) fn count_filter_check(verdict: &Result<bool, String>) {
    let result = match verdict {
        Ok(true) => "pass",
        Ok(false) => "fail",
        Err(_) => "error",
    };
    metrics::counter!("provisio_filter_checks_total", "result" => result).increment(1);
}
