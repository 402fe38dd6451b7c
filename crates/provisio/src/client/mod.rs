//! The command-line client: `provisio emit`, `handlers`, `executions`,
//! `deliveries`, `redeliver`, `replay`, talking to a running server over its API. Tables for people,
//! `--json` for scripts; any error is one line and a non-zero exit.
//!
//! - `args`: what each command takes.
//! - `emit`: `provisio emit`, and its exit status 3 for a forbidden action.
//! - `execution`: one execution for people (`executions show`).
//! - `handlers`: the `handlers` commands, and a handler's row and details.
//! - `replay`: starting and following replay jobs, and the job commands.
//! - `deliveries`: a delivery with its attempts, an event's deliveries, and
//!   retry now (redeliver) and skip.
//! - this file: the API connection, output (tables or JSON) and the commands.

mod args;
mod deliveries;
mod emit;
mod execution;
mod handlers;
mod replay;

use anyhow::{Context, bail};
use serde_json::Value;

pub use args::{
    ClientArgs, DeliveriesCommand, EmitArgs, ExecutionFilters, ExecutionsCommand, HandlerFields,
    HandlersCommand,
};
pub use deliveries::{deliveries, redeliver};
pub use emit::{Forbidden, emit};
pub use handlers::handlers;
pub use replay::{ReplayCommand, ReplayStart, replay};

/// A connection to the API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = args
            .token
            .clone()
            .context("no API token: pass --token or set PROVISIO_TOKEN")?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        Ok(Self {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A request without query, body or extra headers.
    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        self.send(method, path, &[], None, &[]).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .query(query);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!(
                "{} {}: {message}",
                status.as_u16(),
                value["error"]["code"].as_str().unwrap_or("error")
            );
        }
        Ok(value)
    }
}

fn query(pairs: &[(&'static str, Option<String>)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect()
}

fn print_json(value: &Value) {
    crate::out!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        crate::out!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An object id as typed: a number if it parses as one, else a string.
fn object_id(text: &str) -> Value {
    match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(text),
    }
}

pub async fn executions(client: &ClientArgs, command: ExecutionsCommand) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    match command {
        ExecutionsCommand::List(filters) => {
            let ExecutionFilters {
                handler_id,
                events_id,
                status,
                stage,
                object_id,
                data,
                error,
                response,
                verdict,
                delivery_id,
                event_id,
                from,
                to,
                replay_id,
                page,
                per_page,
            } = *filters;
            let q = query(&[
                ("handler_id", handler_id.map(|h| h.to_string())),
                ("events_id", events_id),
                ("status", status),
                ("stage", stage),
                ("object_id", object_id),
                ("data", data),
                ("error", error),
                ("response", response),
                ("verdict", verdict),
                ("delivery_id", delivery_id),
                ("event_id", event_id),
                ("from", from),
                ("to", to),
                ("replay_id", replay_id),
                ("page", page.map(|p| p.to_string())),
                ("per_page", per_page.map(|p| p.to_string())),
            ]);
            let answer = api
                .send(reqwest::Method::GET, "/executions", &q, None, &[])
                .await?;
            if client.json {
                print_json(&answer);
                return Ok(());
            }
            let rows = answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let response = match (
                        e["exit_code"].as_u64(),
                        e["response_status"].as_u64(),
                        e["error"].as_str(),
                    ) {
                        (Some(code), _, _) => format!("exit {code}"),
                        (None, Some(s), _) => s.to_string(),
                        (None, None, Some(err)) => err.chars().take(60).collect(),
                        _ => String::new(),
                    };
                    // A before-stage call shows its verdict: a forbidden
                    // call worked, but it is not a "success".
                    let outcome = match e["verdict"].as_str() {
                        Some(verdict) => verdict.to_owned(),
                        None => text(&e["status"]),
                    };
                    vec![
                        text(&e["id"]),
                        outcome,
                        text(&e["started_at"]),
                        text(&e["events_id"]),
                        text(&e["stage"]),
                        text(&e["handler_name"]),
                        text(&e["object_id"]),
                        text(&e["attempt"]),
                        text(&e["next_attempt_at"]),
                        response,
                        format!("{} ms", e["duration_ms"]),
                    ]
                })
                .collect();
            table(
                &[
                    "ID", "STATUS", "DATE", "EVENT", "STAGE", "HANDLER", "OBJECT", "ATTEMPT",
                    "NEXT", "RESPONSE", "DURATION",
                ],
                rows,
            );
            let more = if answer["total_exact"] == false {
                "more than "
            } else {
                ""
            };
            crate::out!("({more}{} in all)", answer["total"]);
            if let Some(note) = answer["note"].as_str() {
                crate::out!("{note}");
            }
        }
        ExecutionsCommand::Show { id } => {
            let answer = api
                .call(reqwest::Method::GET, &format!("/executions/{id}"))
                .await?;
            if client.json {
                print_json(&answer);
            } else {
                execution::print(&answer);
            }
        }
    }
    Ok(())
}
