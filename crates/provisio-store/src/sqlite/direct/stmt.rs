//! The write thread's statements: what a call asks it to run
//! ([`Stmt`]), the rows it answers with ([`Row`]), and running them.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::types::Value;

use crate::StoreResult;
use crate::rows::{Columns, corrupt};

/// One statement for the write thread: its text, with a `?` for each of
/// its arguments, in order, and what the thread does after running it.
#[derive(Default)]
pub(crate) struct Stmt {
    /// A constant text is not copied for each statement made of it.
    sql: Cow<'static, str>,
    args: Vec<Value>,
    then: Then,
}

/// What the thread does once a statement has run, besides answering with
/// its rows. Both spare SQLite the ephemeral table in which it gathers a
/// `RETURNING` clause's rows, on every run (issue 15).
#[derive(Default)]
enum Then {
    #[default]
    Nothing,
    /// Answers with one more row when the statement changed any, of two
    /// columns: `moved`, this label, and `count`, how many rows it changed.
    Count(&'static str),
    /// Runs the statement built from each row the statement returned, in
    /// the same transaction, once all its rows are read.
    EachRow(Box<RowStmt>),
}

/// Builds a statement from a row (see [`Stmt::each_row`]).
type RowStmt = dyn Fn(&Row) -> StoreResult<Stmt> + Send;

impl crate::query::Sql for Stmt {
    fn sql(&mut self, text: &str) -> &mut Self {
        self.sql.to_mut().push_str(text);
        self
    }

    fn arg(&mut self, value: impl crate::query::Arg) -> &mut Self {
        self.sql.to_mut().push('?');
        self.args.push(value.value());
        self
    }
}

impl Stmt {
    pub(crate) fn new(text: &'static str) -> Self {
        Self {
            sql: Cow::Borrowed(text),
            ..Self::default()
        }
    }

    /// Binds `value` to the text's next numbered parameter (`?1`, `?2`,
    /// …), for a text written whole, in which a value may be used twice.
    pub(crate) fn bind(&mut self, value: impl crate::query::Arg) -> &mut Self {
        self.args.push(value.value());
        self
    }

    /// Answers, when the statement changed rows, with one row more:
    /// `moved` = `label`, `count` = how many.
    pub(crate) fn count_as(mut self, label: &'static str) -> Self {
        self.then = Then::Count(label);
        self
    }

    /// Runs the statement `next` builds from each row this one returns,
    /// in the same transaction (a claim leases each delivery it read).
    pub(crate) fn each_row(
        mut self,
        next: impl Fn(&Row) -> StoreResult<Stmt> + Send + 'static,
    ) -> Self {
        self.then = Then::EachRow(Box::new(next));
        self
    }
}

/// A row a statement returned, its values decoded by [`Columns`].
#[derive(Debug)]
pub(crate) struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    fn get(&self, column: &str) -> StoreResult<&Value> {
        self.columns
            .iter()
            .position(|c| c == column)
            .map(|i| &self.values[i])
            .ok_or_else(|| corrupt(column, "no such column"))
    }
}

impl Columns for Row {
    fn text(&self, column: &str) -> StoreResult<String> {
        self.opt_text(column)?
            .ok_or_else(|| corrupt(column, "NULL where text was expected"))
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        match self.get(column)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            other => Err(corrupt(
                column,
                format!("{:?} is not text", other.data_type()),
            )),
        }
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        self.opt_int(column)?
            .ok_or_else(|| corrupt(column, "NULL where a number was expected"))
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        match self.get(column)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            other => Err(corrupt(
                column,
                format!("{:?} is not an integer", other.data_type()),
            )),
        }
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(self.int(column)? != 0)
    }

    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>> {
        match self.get(column)? {
            Value::Blob(bytes) => Ok(bytes.clone()),
            other => Err(corrupt(
                column,
                format!("{:?} is not a blob", other.data_type()),
            )),
        }
    }
}

/// Runs `stmts` in order (each with what it says to do then), adding the
/// rows they return to `rows`. A run of statements of one text (a
/// statement per row: inserts, updates, a claim's leases) shares one
/// prepared statement: the cache hashes the whole text on each lookup and
/// again on each return.
pub(super) fn execute(
    conn: &rusqlite::Connection,
    stmts: Vec<Stmt>,
    rows: &mut Vec<Row>,
) -> StoreResult<()> {
    let mut stmts = stmts.into_iter().peekable();
    while let Some(first) = stmts.next() {
        let mut prepared = conn.prepare_cached(&first.sql)?;
        let columns: Arc<[String]> = prepared
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut stmt = Some(first);
        while let Some(current) = stmt {
            let sql = run(conn, &mut prepared, &columns, current, rows)?;
            stmt = stmts.next_if(|next| next.sql == sql);
        }
    }
    Ok(())
}

/// Runs one statement on `prepared` (its text's), then what it says to
/// do then; gives its text back, to find the next of the run.
fn run(
    conn: &rusqlite::Connection,
    prepared: &mut rusqlite::Statement<'_>,
    columns: &Arc<[String]>,
    Stmt { sql, args, then }: Stmt,
    rows: &mut Vec<Row>,
) -> StoreResult<Cow<'static, str>> {
    let read_from = rows.len();
    let mut result = prepared.query(rusqlite::params_from_iter(args))?;
    while let Some(row) = result.next()? {
        let values = (0..columns.len())
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<_, _>>()?;
        rows.push(Row {
            columns: columns.clone(),
            values,
        });
    }
    drop(result);
    match then {
        Then::Nothing => {}
        Then::Count(label) => {
            let count = conn.changes();
            if count > 0 {
                rows.push(Row {
                    columns: Arc::from(["moved".to_owned(), "count".to_owned()]),
                    values: vec![Value::Text(label.to_owned()), Value::Integer(count as i64)],
                });
            }
        }
        Then::EachRow(next) => {
            let next = rows[read_from..]
                .iter()
                .map(&next)
                .collect::<StoreResult<Vec<_>>>()?;
            execute(conn, next, rows)?;
        }
    }
    Ok(sql)
}
