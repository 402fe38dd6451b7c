//! Handler filters: a condition in the Common Expression Language over an
//! event, such as `data.currency == "EUR" && data.balance < 0`. A handler with
//! a filter is called only for the events that pass it.
//!
//! A filter is checked when the handler is saved and evaluated for every
//! matching event, on the emit path, so its work is bounded by construction
//! rather than by a clock (CEL has no loops of its own; its macros iterate
//! over the event's lists):
//!
//! - at most [`MAX_FILTER_LEN`] characters;
//! - only the variables `event` and `data`;
//! - no macro (`all`, `exists`, `exists_one`, `map`, `filter`) inside another,
//!   and a macro's body sees only its own variables, never `data` or `event`
//!   again: each macro costs one pass over its list;
//! - at most [`MAX_CONCATENATIONS`] `+` operators, the one operator that
//!   builds values larger than its operands;
//! - `matches` (a regular expression, compiled at each call) only outside
//!   macros, so an expression compiles a handful at most; the `regex` crate
//!   matches in linear time.
//!
//! So evaluation is linear in the size of the event's data (at most the
//! emit body limit) times a constant set by the expression. The benchmark
//! measures the worst accepted filters over a 1 MiB event.

use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, operators};
use cel::{Context, Env, Program, Value};

use crate::event::ObjectId;

/// The longest filter accepted.
pub const MAX_FILTER_LEN: usize = 1000;

/// The most `+` operators in one filter.
pub const MAX_CONCATENATIONS: usize = 4;

/// The variables a filter may use.
const VARIABLES: [&str; 2] = ["event", "data"];

/// A checked filter, ready to evaluate. Two filters are equal when their
/// sources are.
#[derive(Clone)]
pub struct Filter {
    source: String,
    program: Arc<Program>,
    env: Arc<Env>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Filter {}

impl Filter {
    /// Parses and checks `source`; the error names the line and column.
    pub fn parse(source: &str) -> Result<Self, String> {
        let source = source.trim();
        if source.is_empty() {
            return Err("must not be empty (leave the filter out to take every event)".into());
        }
        if source.chars().count() > MAX_FILTER_LEN {
            return Err(format!("must be at most {MAX_FILTER_LEN} characters"));
        }
        let env = Arc::new(Env::stdlib());
        let program = env
            .compile(source)
            .map_err(|errors| match errors.errors.first() {
                Some(e) => format!(
                    "line {}, column {}: {}",
                    e.pos.0.max(1),
                    e.pos.1.max(0) + 1,
                    e.msg
                ),
                None => "is not a valid expression".into(),
            })?;
        let mut check = Check {
            program: &program,
            concatenations: 0,
        };
        check.walk(program.expression(), &Scope::Top)?;
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
            env,
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the event passes. An expression that does not evaluate to a
    /// boolean, or fails (a missing key, a type mismatch), is an error: the
    /// caller decides what that means (the engine: the event does not pass).
    pub fn check(&self, event: &FilterInput) -> Result<bool, String> {
        let mut context = Context::with_env(self.env.clone());
        context.add_variable_from_value("event", event.event.clone());
        context.add_variable_from_value("data", event.data.clone());
        match self.program.execute(&context) {
            Ok(Value::Bool(pass)) => Ok(pass),
            Ok(other) => Err(format!(
                "the filter gave {:?}, not true or false",
                other.type_of()
            )),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// An event as filters see it, converted once and shared by every filter
/// that looks at it.
pub struct FilterInput {
    event: Value,
    data: Value,
}

impl FilterInput {
    /// `event` is what the payload's `event` holds; `data` is the event's
    /// data as JSON text (an object).
    pub fn new(
        events_id: &str,
        object_id: &ObjectId,
        dt: &str,
        data: &str,
    ) -> Result<Self, String> {
        let mut value = crate::event::as_value(events_id, &object_id.to_json(), dt, data)?;
        let mut convert = |key: &str| cel::to_value(value[key].take()).map_err(|e| e.to_string());
        Ok(Self {
            event: convert("event")?,
            data: convert("data")?,
        })
    }
}

/// Where in the expression a node stands.
enum Scope<'a> {
    /// Outside any macro: `event` and `data` are visible.
    Top,
    /// Inside a macro's body: only its own variables are.
    Macro(Vec<&'a str>),
}

struct Check<'p> {
    program: &'p Program,
    concatenations: usize,
}

impl Check<'_> {
    /// "line L, column C: message" for the node `id`.
    fn at(&self, id: u64, message: impl std::fmt::Display) -> String {
        let info = self.program.source_info();
        match info.offset_for(id) {
            Some((start, _)) => {
                let before = &info.source[..(start as usize).min(info.source.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message.to_string(),
        }
    }

    fn walk<'a>(&mut self, node: &'a IdedExpr, scope: &Scope<'a>) -> Result<(), String> {
        match &node.expr {
            Expr::Ident(name) => match scope {
                Scope::Top if VARIABLES.contains(&name.as_str()) => Ok(()),
                Scope::Top => Err(self.at(
                    node.id,
                    format!("unknown variable {name}; a filter sees `event` and `data`"),
                )),
                Scope::Macro(own) if own.contains(&name.as_str()) => Ok(()),
                Scope::Macro(_) => Err(self.at(
                    node.id,
                    format!(
                        "{name} cannot be used inside all/exists/map/filter: \
                         only the macro's own variable can"
                    ),
                )),
            },
            Expr::Call(call) => {
                if call.func_name == "matches" && matches!(scope, Scope::Macro(_)) {
                    return Err(self.at(
                        node.id,
                        "matches cannot be used inside all/exists/map/filter",
                    ));
                }
                if call.func_name == operators::ADD {
                    self.concatenations += 1;
                    if self.concatenations > MAX_CONCATENATIONS {
                        return Err(self.at(
                            node.id,
                            format!("at most {MAX_CONCATENATIONS} `+` operators"),
                        ));
                    }
                }
                if let Some(target) = &call.target {
                    self.walk(target, scope)?;
                }
                call.args.iter().try_for_each(|arg| self.walk(arg, scope))
            }
            Expr::Comprehension(c) => {
                if matches!(scope, Scope::Macro(_)) {
                    return Err(
                        self.at(node.id, "all/exists/map/filter cannot be nested in another")
                    );
                }
                self.walk(&c.iter_range, scope)?;
                let mut own = vec![c.iter_var.as_str(), c.accu_var.as_str()];
                own.extend(c.iter_var2.as_deref());
                let inner = Scope::Macro(own);
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(part, &inner)?;
                }
                Ok(())
            }
            Expr::List(list) => list.elements.iter().try_for_each(|e| self.walk(e, scope)),
            Expr::Map(map) => map.entries.iter().try_for_each(|e| match &e.expr {
                EntryExpr::MapEntry(entry) => {
                    self.walk(&entry.key, scope)?;
                    self.walk(&entry.value, scope)
                }
                EntryExpr::StructField(field) => self.walk(&field.value, scope),
            }),
            Expr::Struct(_) => Err(self.at(node.id, "message types are not available")),
            Expr::Select(select) => self.walk(&select.operand, scope),
            Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
