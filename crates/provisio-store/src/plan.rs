//! The backend-independent half of storing an emit batch: which events are new
//! and which are answered from their idempotency key, and which ordered
//! deliveries queue behind an earlier one of the same batch. Each backend then
//! writes the result with its own SQL.

use std::collections::{HashMap, HashSet};

use crate::*;

/// A stored idempotency key, as the batch's lookup found it.
pub(crate) struct SeenKey {
    pub body_hash: Vec<u8>,
    pub event_id: String,
    pub deliveries: u32,
    pub created_at: i64,
}

/// What to do with a batch.
pub(crate) struct Triage<'a> {
    /// One per event of the batch, in order.
    pub outcomes: Vec<EmitOutcome>,
    /// The events to store.
    pub stored: Vec<&'a NewEvent>,
    /// Stored keys past the window, to delete before their reuse is stored.
    pub expired: Vec<String>,
}

/// The idempotency keys a batch uses, for the lookup [`triage`] needs.
pub(crate) fn keys(batch: &[NewEvent]) -> Vec<String> {
    let keys: HashSet<&str> = batch
        .iter()
        .filter_map(|n| n.idempotency.as_ref().map(|k| k.key.as_str()))
        .collect();
    keys.into_iter().map(str::to_owned).collect()
}

/// Sorts a batch into per-event outcomes and the events to store, given the
/// stored keys it uses. A key used twice in one batch is answered from the
/// earlier use.
pub(crate) fn triage<'a>(batch: &'a [NewEvent], seen: &HashMap<String, SeenKey>) -> Triage<'a> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut stored: Vec<&NewEvent> = Vec::with_capacity(batch.len());
    let mut expired = Vec::new();
    let mut keys_in_batch: HashMap<&str, usize> = HashMap::new();
    for new in batch {
        if let Some(key) = &new.idempotency {
            // The same key twice in one batch: the later one sees the earlier.
            if let Some(&first) = keys_in_batch.get(key.key.as_str()) {
                let earlier: &NewEvent = stored[first];
                let same = earlier
                    .idempotency
                    .as_ref()
                    .is_some_and(|k| k.body_hash == key.body_hash);
                outcomes.push(if same {
                    EmitOutcome::Replayed {
                        event_id: earlier.event.id.clone(),
                        deliveries: earlier.deliveries.len() as u32,
                    }
                } else {
                    EmitOutcome::KeyReused
                });
                continue;
            }
            match seen.get(&key.key) {
                Some(old) if old.created_at + IDEMPOTENCY_WINDOW_MS < new.created_at_ms => {
                    // Expired: the key can be used again.
                    expired.push(key.key.clone());
                }
                Some(old) if old.body_hash != key.body_hash => {
                    outcomes.push(EmitOutcome::KeyReused);
                    continue;
                }
                Some(old) => {
                    outcomes.push(EmitOutcome::Replayed {
                        event_id: old.event_id.clone(),
                        deliveries: old.deliveries,
                    });
                    continue;
                }
                None => {}
            }
            keys_in_batch.insert(&key.key, stored.len());
        }
        stored.push(new);
        outcomes.push(EmitOutcome::Stored);
    }
    Triage {
        outcomes,
        stored,
        expired,
    }
}

/// Reads a [`SeenKey`] from `key, body_hash, event_id, deliveries, created_at`.
pub(crate) fn seen_key(row: &impl crate::rows::Columns) -> StoreResult<(String, SeenKey)> {
    Ok((
        row.text("key")?,
        SeenKey {
            body_hash: row.bytes("body_hash")?,
            event_id: row.text("event_id")?,
            deliveries: row.count("deliveries")?,
            created_at: row.int("created_at")?,
        },
    ))
}

/// One delivery to insert.
pub(crate) struct DeliveryRow<'a> {
    pub new: &'a NewEvent,
    pub delivery: &'a NewDelivery,
    pub object_key: String,
    /// An earlier delivery of this batch is open for the same (handler,
    /// object): this one waits whatever storage holds. (PostgreSQL's
    /// multi-row insert does not see its own rows, so the batch's own order
    /// is decided here; SQLite's inserts, a row per statement, see them.)
    pub behind: bool,
}

/// The deliveries of the stored events, in emit order.
pub(crate) fn delivery_rows<'a>(stored: &[&'a NewEvent]) -> Vec<DeliveryRow<'a>> {
    let mut open_in_batch: HashSet<(i64, String)> = HashSet::new();
    let mut rows = Vec::new();
    for new in stored {
        let key = new.event.object_id.key();
        for d in &new.deliveries {
            let behind = d.ordered && !open_in_batch.insert((d.handler_id, key.clone()));
            rows.push(DeliveryRow {
                new,
                delivery: d,
                object_key: key.clone(),
                behind,
            });
        }
    }
    rows
}

/// What a recorded attempt makes of its delivery: its new state, when it is
/// due again (a retry) and when it finished (success or failure; a blocked
/// delivery is not finished).
pub(crate) fn delivery_after(r: &AttemptResult) -> (&'static str, Option<i64>, Option<i64>) {
    match r.next {
        DeliveryNext::Succeeded => ("success", None, Some(r.finished_at_ms)),
        DeliveryNext::Failed => ("failed", None, Some(r.finished_at_ms)),
        DeliveryNext::RetryAt { at_ms } => ("pending", Some(at_ms), None),
        // Not finished: it holds its line until retried or skipped.
        DeliveryNext::Blocked => ("blocked", None, None),
    }
}
