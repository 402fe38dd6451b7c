//! Moving an object's line on. A (handler, object) line is open while one of
//! its deliveries is in an open state (`query::open_states!`); its later
//! ordered deliveries wait.
//! When the delivery at its head finishes (or an operator skips a blocked
//! one), the oldest waiting one becomes due; on a conflating handler the
//! newest does, and the older waiting ones are `superseded` by it, in the same
//! transaction. [`SqlCore::conflate_lines`] does the same to a whole handler's
//! backlog at once (on resume). [`SqlCore::redeliver`] ("retry now") hurries
//! a line's head or starts a finished delivery's new round.
//!
//! Every transaction here takes its lines' locks first ([`Dialect::lock_lines`]),
//! as emits, records and redelivers do.

use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::query::{ROWS_PER_STATEMENT, Sql, open_states, values};
use crate::rows::{Columns, DELIVERY_COLUMNS, delivery as delivery_from_row};
use crate::{DeliveryRecord, RecordOutcome, Redelivery, StoreError, StoreResult};

/// A (handler id, object key) line.
pub(crate) type Line = (i64, String);

/// Lets the next delivery of each line in `lines` go, where nothing of the
/// line is pending or blocked any more: on a conflating handler the newest
/// waiting one (the older waiting ones become `superseded` by it), otherwise
/// the oldest. `conflating` are the lines that may conflate (the handler's
/// setting is checked again): a record batch names those whose handler
/// conflated, so a batch without any costs no statement more. Runs inside
/// the caller's transaction, which holds the lines' locks.
pub(crate) async fn move_lines_on<DB: Dialect>(
    conn: &mut DB::Connection,
    lines: &[Line],
    conflating: &[Line],
    now: i64,
) -> StoreResult<RecordOutcome> {
    let mut moved = RecordOutcome::default();
    // Two binds a line, well under both databases' limits.
    for chunk in conflating.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<DB>::new("");
        push_conflation(&mut q, chunk, now);
        moved.superseded += DB::rows_affected(&q.build().execute(DB::on(&mut *conn)).await?);
    }
    moved.released = DB::release_lines(conn, lines, now).await?;
    if moved.released > 0 {
        DB::announce_work(conn).await?;
    }
    Ok(moved)
}

/// Appends the `UPDATE` that supersedes, on each of `lines` whose handler
/// conflates, every waiting delivery but the newest (which then goes next).
/// For [`move_lines_on`], or a backend's statement list doing the same.
pub(crate) fn push_conflation(q: &mut impl Sql, lines: &[Line], now: i64) {
    q.sql(
        "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, lease_until = NULL,
            finished_at = ",
    )
    .arg(now)
    .sql(
        ", superseded_by = (SELECT n.id FROM deliveries n WHERE n.handler_id = deliveries.handler_id
            AND n.object_key = deliveries.object_key AND n.state = 'waiting' ORDER BY n.seq DESC LIMIT 1)
         WHERE seq IN (SELECT d.seq FROM (",
    );
    push_lines(q, lines);
    q.sql(") AS v JOIN handlers h ON h.id = v.column1 AND h.conflate = ")
        .arg(true)
        .sql(
            " JOIN deliveries d ON d.handler_id = v.column1 AND d.object_key = v.column2
             AND d.state = 'waiting'
         WHERE d.seq < (SELECT MAX(n.seq) FROM deliveries n WHERE n.handler_id = d.handler_id
             AND n.object_key = d.object_key AND n.state = 'waiting'))",
        );
}

/// Appends the `UPDATE` that makes the oldest waiting delivery of each of
/// `lines` due `now` (after [`push_conflation`], on a conflating handler the
/// only one), unless something of its line is still pending or blocked. For
/// SQLite's [`Dialect::release_lines`], or a backend's statement list doing
/// the same.
pub(crate) fn push_release(q: &mut impl Sql, lines: &[Line], now: i64) {
    // Per line, an index probe for its oldest waiting delivery, and only
    // for a line that has one, a probe per state that holds the line
    // (pending, blocked), each a seek of `deliveries_open` (handler,
    // object, state, seq), whatever the line's length. Joining every
    // waiting row of the line and asking, per row, whether anything open
    // but waiting existed read the whole line per row: 2.8 s on SQLite to
    // release one delivery of a 5,000-long line, so such a line drained at
    // under one delivery a second. The states are plain equalities, not
    // `open_states!` repeated: both databases see the partial indexes
    // apply, and PostgreSQL's generic plan turned that `OR` into a bitmap
    // scan of every open delivery of every line.
    q.sql("UPDATE deliveries SET state = 'pending', next_attempt_at = ")
        .arg(now)
        .sql(
            " WHERE seq IN (SELECT h.seq FROM (SELECT v.column1 AS handler_id, v.column2 AS object_key,
                 (SELECT d.seq FROM deliveries d WHERE d.handler_id = v.column1
                     AND d.object_key = v.column2 AND d.state = 'waiting' ORDER BY d.seq LIMIT 1) AS seq
             FROM (",
        );
    push_lines(q, lines);
    q.sql(
        ") AS v) AS h WHERE h.seq IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = h.handler_id
                 AND o.object_key = h.object_key AND o.state = 'pending')
             AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = h.handler_id
                 AND o.object_key = h.object_key AND o.state = 'blocked'))",
    );
}

/// [`push_release`] for one line, as a single-row `UPDATE`: for SQLite's
/// write thread, which runs a statement per line from its cache and spares
/// SQLite the ephemeral tables and the Bloom filter of the `IN (SELECT …)`
/// over a `VALUES` list (issue 15). Same rows released, by the same index
/// probes.
pub(crate) fn push_release_line(q: &mut impl Sql, (handler_id, object_key): &Line, now: i64) {
    q.sql("UPDATE deliveries SET state = 'pending', next_attempt_at = ")
        .arg(now)
        .sql(" WHERE seq = (SELECT d.seq FROM deliveries d WHERE d.handler_id = ")
        .arg(*handler_id)
        .sql(" AND d.object_key = ")
        .arg(object_key.clone())
        .sql(" AND d.state = 'waiting' ORDER BY d.seq LIMIT 1)");
    for state in ["pending", "blocked"] {
        q.sql(" AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = ")
            .arg(*handler_id)
            .sql(" AND o.object_key = ")
            .arg(object_key.clone())
            .sql(" AND o.state = '")
            .sql(state)
            .sql("')");
    }
}

/// `VALUES (handler, object), …`: columns `column1` and `column2` on both
/// databases.
fn push_lines(q: &mut impl Sql, lines: &[Line]) {
    values(q, lines, |row, (handler_id, object_key)| {
        row.arg(*handler_id).arg(object_key.clone());
    });
}

/// The delivery `id` as a record, inside a transaction.
async fn read_delivery<DB: Dialect>(
    conn: &mut DB::Connection,
    id: &str,
) -> StoreResult<DeliveryRecord> {
    let mut q = QueryBuilder::<DB>::new("SELECT ");
    q.push(DELIVERY_COLUMNS)
        .push(" FROM deliveries WHERE id = ")
        .bind(id.to_owned());
    delivery_from_row(&q.build().fetch_one(DB::on(conn)).await?)
}

/// The line a delivery belongs to; [`StoreError::NotFound`] when there is
/// no such delivery. A line's key never changes, so it can be read before
/// the line's lock is taken.
async fn line_of<DB: Dialect>(conn: &mut DB::Connection, id: &str) -> StoreResult<Line> {
    let mut q =
        QueryBuilder::<DB>::new("SELECT handler_id, object_key FROM deliveries WHERE id = ");
    q.bind(id.to_owned());
    let row = q
        .build()
        .fetch_optional(DB::on(conn))
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok((row.int("handler_id")?, row.text("object_key")?))
}

/// A new round of attempts for a finished or blocked delivery, due `now`:
/// behind any other open delivery of its line, so order still holds (a
/// blocked one heads its line and is due at once).
async fn new_round<DB: Dialect>(conn: &mut DB::Connection, id: &str, now: i64) -> StoreResult<()> {
    let mut q = QueryBuilder::<DB>::new(concat!(
        "UPDATE deliveries SET
            state = CASE WHEN state <> 'blocked' AND EXISTS (SELECT 1 FROM deliveries o
                WHERE o.handler_id = deliveries.handler_id AND o.object_key = deliveries.object_key
                AND o.id <> deliveries.id AND ",
        open_states!("o.state"),
        ") THEN 'waiting' ELSE 'pending' END,
            superseded_by = NULL, round_start = attempts, lease_until = NULL, finished_at = NULL,
            next_attempt_at = "
    ));
    q.bind(now).push(" WHERE id = ").bind(id.to_owned());
    q.build().execute(DB::on(conn)).await?;
    Ok(())
}

/// Makes an unleased pending delivery due `now` (a leased one is being
/// attempted: its `next_attempt_at` is its lease's end and stays).
async fn due_now<DB: Dialect>(conn: &mut DB::Connection, id: &str, now: i64) -> StoreResult<()> {
    let mut q =
        QueryBuilder::<DB>::new("UPDATE deliveries SET state = 'pending', next_attempt_at = ");
    q.bind(now)
        .push(" WHERE lease_until IS NULL AND id = ")
        .bind(id.to_owned());
    q.build().execute(DB::on(conn)).await?;
    Ok(())
}

impl<DB: Dialect> SqlCore<DB> {
    /// "Retry now" (see [`crate::Store::redeliver`]), under the line's lock.
    pub(crate) async fn redeliver(
        &self,
        id: &str,
        now: i64,
    ) -> StoreResult<(DeliveryRecord, Redelivery)> {
        DB::write_tx(&self.write, async |tx| {
            let line = line_of::<DB>(tx, id).await?;
            DB::lock_lines(tx, std::slice::from_ref(&line)).await?;
            let mut q =
                QueryBuilder::<DB>::new("SELECT state, lease_until FROM deliveries WHERE id = ");
            q.bind(id.to_owned()).push(DB::FOR_UPDATE);
            let row = q.build().fetch_one(DB::on(&mut *tx)).await?;
            let leased = row.opt_int("lease_until")?.is_some();
            let done = match row.text("state")?.as_str() {
                "pending" if leased => Redelivery::InFlight(id.to_owned()),
                "pending" => {
                    due_now::<DB>(tx, id, now).await?;
                    Redelivery::DueNow
                }
                "waiting" => {
                    // The line's head: what the waiting one must not overtake.
                    let mut q = QueryBuilder::<DB>::new(
                        "SELECT id, state, lease_until FROM deliveries WHERE handler_id = ",
                    );
                    q.bind(line.0)
                        .push(" AND object_key = ")
                        .bind(line.1.clone())
                        .push(" AND ")
                        .push(open_states!("state"))
                        .push(" AND state <> 'waiting' ORDER BY seq LIMIT 1")
                        .push(DB::FOR_UPDATE);
                    match q.build().fetch_optional(DB::on(&mut *tx)).await? {
                        // Nothing ahead of it (its head finished in this very
                        // moment): it goes itself.
                        None => {
                            due_now::<DB>(tx, id, now).await?;
                            Redelivery::DueNow
                        }
                        Some(head) => {
                            let head_id = head.text("id")?;
                            if head.opt_int("lease_until")?.is_some() {
                                Redelivery::InFlight(head_id)
                            } else {
                                if head.text("state")? == "blocked" {
                                    new_round::<DB>(tx, &head_id, now).await?;
                                } else {
                                    due_now::<DB>(tx, &head_id, now).await?;
                                }
                                Redelivery::HeadDueNow(head_id)
                            }
                        }
                    }
                }
                _ => {
                    new_round::<DB>(tx, id, now).await?;
                    Redelivery::NewRound
                }
            };
            if !matches!(done, Redelivery::InFlight(_)) {
                DB::announce_work(tx).await?;
            }
            Ok((read_delivery::<DB>(tx, id).await?, done))
        })
        .await
    }

    /// Fails a blocked delivery as "skipped by `who`" and moves its line on.
    /// [`StoreError::NotFound`] when there is no such delivery,
    /// [`StoreError::Conflict`] when it is not blocked.
    pub(crate) async fn skip_blocked(
        &self,
        id: &str,
        who: &str,
        now: i64,
    ) -> StoreResult<(DeliveryRecord, RecordOutcome)> {
        DB::write_tx(&self.write, async |tx| {
            let line = line_of::<DB>(tx, id).await?;
            DB::lock_lines(tx, std::slice::from_ref(&line)).await?;
            let mut q = QueryBuilder::<DB>::new("SELECT state FROM deliveries WHERE id = ");
            q.bind(id.to_owned()).push(DB::FOR_UPDATE);
            let state = q.build().fetch_one(DB::on(&mut *tx)).await?.text("state")?;
            if state != "blocked" {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} is {state}, not blocked: only a blocked delivery can be skipped"
                )));
            }
            let mut q = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, lease_until = NULL,
                    last_error = ",
            );
            q.bind(format!("skipped by {who}"))
                .push(", finished_at = ")
                .bind(now)
                .push(" WHERE id = ")
                .bind(id.to_owned());
            q.build().execute(DB::on(&mut *tx)).await?;
            let lines = [line];
            let moved = move_lines_on::<DB>(tx, &lines, &lines, now).await?;
            Ok((read_delivery::<DB>(tx, id).await?, moved))
        })
        .await
    }

    /// For one conflating handler: supersedes every unleased, never-attempted
    /// pending or waiting delivery that has a newer pending or waiting one of
    /// the same object, and makes each waiting one pending when nothing open
    /// precedes it in its line. Returns how many were superseded. Does
    /// nothing to a handler that does not conflate.
    pub(crate) async fn conflate_lines(&self, handler_id: i64, now: i64) -> StoreResult<u64> {
        DB::write_tx(&self.write, async |tx| {
            let mut q = QueryBuilder::<DB>::new("SELECT conflate FROM handlers WHERE id = ");
            q.bind(handler_id);
            let conflates = match q.build().fetch_optional(DB::on(&mut *tx)).await? {
                Some(row) => row.flag("conflate")?,
                None => false,
            };
            if !conflates {
                return Ok(0);
            }
            let mut q = QueryBuilder::<DB>::new(
                "SELECT DISTINCT object_key FROM deliveries WHERE handler_id = ",
            );
            q.bind(handler_id)
                .push(" AND ")
                .push(open_states!("state"));
            let lines = q
                .build()
                .fetch_all(DB::on(&mut *tx))
                .await?
                .iter()
                .map(|row| Ok((handler_id, row.text("object_key")?)))
                .collect::<StoreResult<Vec<Line>>>()?;
            if lines.is_empty() {
                return Ok(0);
            }
            DB::lock_lines(tx, &lines).await?;

            // The line's newest pending or waiting delivery. Each state
            // condition here repeats `deliveries_open`'s (`open_states!`), then
            // narrows it, so SQLite seeks that index instead of scanning.
            let newest = concat!(
                "(SELECT MAX(m.seq) FROM deliveries m WHERE m.handler_id = deliveries.handler_id
                AND m.object_key = deliveries.object_key AND ",
                open_states!("m.state"),
                " AND m.state <> 'blocked')"
            );
            let mut q = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, finished_at = ",
            );
            q.bind(now)
                .push(
                    ", superseded_by = (SELECT n.id FROM deliveries n WHERE n.seq = ",
                )
                .push(newest)
                .push(") WHERE handler_id = ")
                .bind(handler_id)
                .push(" AND ")
                .push(open_states!("state"))
                .push(
                    " AND state <> 'blocked' AND attempts = 0 AND lease_until IS NULL
                      AND seq < ",
                )
                .push(newest);
            let superseded = DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);

            let mut q = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ",
            );
            q.bind(now)
                .push(" WHERE handler_id = ")
                .bind(handler_id)
                .push(
                    " AND state = 'waiting' AND NOT EXISTS (SELECT 1 FROM deliveries o
                      WHERE o.handler_id = deliveries.handler_id AND o.object_key = deliveries.object_key
                        AND ",
                )
                .push(open_states!("o.state"))
                .push(" AND o.seq < deliveries.seq)");
            let released = DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            if released > 0 {
                DB::announce_work(tx).await?;
            }
            Ok(superseded)
        })
        .await
    }
}
