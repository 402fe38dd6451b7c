//! Handlers. On PostgreSQL every write fires the `provisio_routes` trigger,
//! so all nodes reload their routing tables when it commits.

use provisio_core::handler::{Handler, HandlerSpec, OPERATOR_PAUSE};
use provisio_core::signing::SigningSecret;
use sqlx::QueryBuilder;

use super::{Bind, Binds, Dialect, SqlCore};
use crate::query::{open_states, push_handler_filter};
use crate::rows::Columns;
use crate::rows::{HANDLER_COLUMNS, handler as from_row, json};
use crate::{HandlerFilter, Page, PauseChange, StoreError, StoreResult, now_ms};

impl<DB: Dialect> SqlCore<DB> {
    pub(crate) async fn insert_handler(&self, spec: &HandlerSpec) -> StoreResult<Handler> {
        let now = now_ms();
        let mut q = QueryBuilder::<DB>::new("INSERT INTO handlers (");
        push_spec(&mut q, spec, Form::Columns);
        q.push(", secret, created_at, updated_at) VALUES (");
        push_spec(&mut q, spec, Form::Values);
        q.push(", ")
            .bind(SigningSecret::generate().expose().to_owned())
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(") RETURNING ")
            .push(HANDLER_COLUMNS);
        from_row(
            &q.build()
                .fetch_one(DB::on(&mut *self.writer().await?))
                .await?,
        )
    }

    pub(crate) async fn get_handler(&self, id: i64) -> StoreResult<Option<Handler>> {
        let mut q = select();
        q.push(" WHERE id = ").bind(id);
        let row = q.build().fetch_optional(self.reader()).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// [`StoreError::NotFound`] when there is no such handler.
    pub(crate) async fn update_handler(&self, id: i64, spec: &HandlerSpec) -> StoreResult<Handler> {
        let mut q = QueryBuilder::<DB>::new("UPDATE handlers SET ");
        push_spec(&mut q, spec, Form::Assignments);
        q.push(", updated_at = ").bind(now_ms());
        self.update_returning(q, id).await
    }

    pub(crate) async fn rotate_handler_secret(&self, id: i64) -> StoreResult<Handler> {
        let mut q = QueryBuilder::<DB>::new("UPDATE handlers SET secret = ");
        q.bind(SigningSecret::generate().expose().to_owned())
            .push(", updated_at = ")
            .bind(now_ms());
        self.update_returning(q, id).await
    }

    /// Ends an `UPDATE handlers SET …` at handler `id` and returns the handler
    /// as it now is.
    async fn update_returning(&self, mut q: QueryBuilder<DB>, id: i64) -> StoreResult<Handler> {
        q.push(" WHERE id = ")
            .bind(id)
            .push(" RETURNING ")
            .push(HANDLER_COLUMNS);
        let row = q
            .build()
            .fetch_optional(DB::on(&mut *self.writer().await?))
            .await?;
        row.as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// Deletes the handler and fails its unfinished deliveries: nothing would
    /// ever send them. No ordering lock is needed: this closes every queue of
    /// the handler at once and opens none.
    pub(crate) async fn delete_handler(&self, id: i64) -> StoreResult<bool> {
        DB::write_tx(&self.write, async |tx| {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM handlers WHERE id = ");
            q.bind(id);
            let done = q.build().execute(DB::on(&mut *tx)).await?;
            let mut q = QueryBuilder::<DB>::new(
                "UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, lease_until = NULL,
                    last_error = 'the handler was deleted', finished_at = ",
            );
            q.bind(now_ms())
                .push(" WHERE handler_id = ")
                .bind(id)
                .push(" AND ")
                .push(open_states!("state"));
            q.build().execute(DB::on(&mut *tx)).await?;
            Ok(DB::rows_affected(&done) > 0)
        })
        .await
    }

    pub(crate) async fn list_handlers(
        &self,
        filter: &HandlerFilter,
        page: Page,
    ) -> StoreResult<(Vec<Handler>, u64)> {
        let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) AS total FROM handlers");
        push_handler_filter(&mut count, filter, DB::LIKE);
        let total = count.build().fetch_one(self.reader()).await?.int("total")?;

        let mut q = select();
        push_handler_filter(&mut q, filter, DB::LIKE);
        let found = self.fetch_page(q, "priority, id", page, from_row).await?;
        Ok((found, total as u64))
    }

    /// Every handler, from the writer's pool, so a change committed a moment
    /// ago is always seen (SQLite's readers may lag behind its writer).
    pub(crate) async fn all_handlers(&self) -> StoreResult<Vec<Handler>> {
        let mut q = select();
        q.push(" ORDER BY priority, id");
        q.build()
            .fetch_all(DB::on(&mut *self.writer().await?))
            .await?
            .iter()
            .map(from_row)
            .collect()
    }
}

impl<DB: Dialect> SqlCore<DB> {
    /// One conditional UPDATE, so an automatic change never undoes an
    /// operator's made meanwhile (on any node).
    pub(crate) async fn change_pause(
        &self,
        id: i64,
        change: PauseChange<'_>,
    ) -> StoreResult<Option<Handler>> {
        let mut q = QueryBuilder::<DB>::new("UPDATE handlers SET ");
        match change {
            PauseChange::Operator { at_ms } => {
                q.push("paused_reason = ")
                    .bind(OPERATOR_PAUSE)
                    // An automatic pause taken over keeps its start.
                    .push(", paused_at = COALESCE(paused_at, ")
                    .bind(at_ms)
                    .push("), probe_at = NULL");
            }
            PauseChange::Automatic {
                reason,
                at_ms,
                probe_at_ms,
            } => {
                q.push("paused_reason = ")
                    .bind(reason.to_owned())
                    .push(", paused_at = ")
                    .bind(at_ms)
                    .push(", probe_at = ")
                    .bind(probe_at_ms);
            }
            PauseChange::Resume | PauseChange::SelfResume => {
                q.push("paused_reason = NULL, paused_at = NULL, probe_at = NULL");
            }
        }
        q.push(" WHERE id = ").bind(id);
        match change {
            PauseChange::Automatic { .. } => {
                q.push(" AND paused_reason IS NULL");
            }
            PauseChange::SelfResume => {
                q.push(" AND paused_reason <> ").bind(OPERATOR_PAUSE);
            }
            PauseChange::Operator { .. } | PauseChange::Resume => {}
        }
        q.push(" RETURNING ").push(HANDLER_COLUMNS);
        let row = q
            .build()
            .fetch_optional(DB::on(&mut *self.writer().await?))
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub(crate) async fn take_probe(&self, id: i64, now_ms: i64, next_ms: i64) -> StoreResult<bool> {
        let mut q = QueryBuilder::<DB>::new("UPDATE handlers SET probe_at = ");
        q.bind(next_ms)
            .push(" WHERE id = ")
            .bind(id)
            .push(" AND paused_reason IS NOT NULL AND paused_reason <> ")
            .bind(OPERATOR_PAUSE)
            .push(" AND probe_at <= ")
            .bind(now_ms);
        let done = q
            .build()
            .execute(DB::on(&mut *self.writer().await?))
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }
}

fn select<DB: Dialect>() -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new("SELECT ");
    q.push(HANDLER_COLUMNS).push(" FROM handlers");
    q
}

/// How [`push_spec`] writes a handler's settings.
#[derive(Clone, Copy)]
enum Form {
    /// `name, events_id, …`
    Columns,
    /// The values bound, in the same order.
    Values,
    /// `name = …, events_id = …`
    Assignments,
}

/// A handler's settings, column by column: the one place a new setting is
/// written (besides the migrations and `rows::handler`).
fn push_spec<DB: Dialect>(q: &mut QueryBuilder<DB>, spec: &HandlerSpec, form: Form) {
    let mut w = SpecWriter {
        q,
        form,
        first: true,
    };
    w.field("name", spec.name.clone())
        .field("events_id", spec.events_id.to_string())
        .field("stage", spec.stage.as_str())
        .field("status", spec.status.as_str())
        .field("priority", i64::from(spec.priority))
        .field("kind", spec.kind.as_str())
        .field("target", spec.target.clone())
        .field("args", json(&spec.args))
        .field("headers", json(&spec.headers))
        .field("timeout_ms", i64::from(spec.timeout_ms))
        .field("max_attempts", i64::from(spec.max_attempts))
        .field("ordered", spec.ordered)
        .field("on_failure", spec.on_failure.as_str())
        .field(
            "event_filter",
            spec.filter.as_ref().map(|f| f.as_str().to_owned()),
        )
        .field(
            "request_template",
            spec.request.as_ref().map(|r| json(r.spec())),
        )
        .field("on_exhausted", spec.on_exhausted.as_str())
        .field("conflate", spec.conflate)
        .field(
            "auto_pause_failures",
            spec.auto_pause.map(|a| i64::from(a.failures)),
        )
        .field(
            "auto_pause_after_ms",
            spec.auto_pause.map(|a| a.after.as_millis() as i64),
        )
        .field(
            "auto_pause_probe_ms",
            spec.auto_pause.map(|a| a.probe_every.as_millis() as i64),
        )
        .field("max_in_flight", spec.max_in_flight.map(i64::from))
        .field("rate_limit_per_second", spec.rate_limit.map(i64::from));
}

struct SpecWriter<'q, DB: Dialect> {
    q: &'q mut QueryBuilder<DB>,
    form: Form,
    first: bool,
}

impl<DB: Dialect> SpecWriter<'_, DB> {
    fn field<T>(&mut self, column: &str, value: T) -> &mut Self
    where
        DB: Binds<T>,
    {
        if !std::mem::take(&mut self.first) {
            self.q.push(", ");
        }
        match self.form {
            Form::Columns => self.q.push(column),
            Form::Values => self.q.bind(value),
            Form::Assignments => self.q.push(column).push(" = ").bind(value),
        };
        self
    }
}
