//! The command-line client: `provisio emit`, `handlers`, `executions`,
//! `deliveries`, `redeliver`, `replay`, talking to a running server over its API. Tables for people,
//! `--json` for scripts; any error is one line and a non-zero exit.
//!
//! - `args`: what each command takes.
//! - `emit`: `provisio emit`, and its exit status 3 for a forbidden action.
//! - `execution`: one execution for people (`executions show`).
//! - `replay`: starting and following replay jobs, and the job commands.
//! - `deliveries`: a delivery with its attempts, an event's deliveries, and
//!   retry now (redeliver) and skip.
//! - this file: the API connection, output (tables or JSON) and the commands.

mod args;
mod deliveries;
mod emit;
mod execution;
mod replay;

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub use args::{
    ClientArgs, DeliveriesCommand, EmitArgs, ExecutionFilters, ExecutionsCommand, HandlerFields,
    HandlersCommand,
};
pub use deliveries::{deliveries, redeliver};
pub use emit::{Forbidden, emit};
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

fn handler_rows(items: &[Value]) {
    let rows = items
        .iter()
        .map(|h| {
            [
                "id",
                "priority",
                "name",
                "events_id",
                "stage",
                "status",
                "state",
                "queue",
                "kind",
                "target",
            ]
            .iter()
            .map(|k| match *k {
                "status" if h["paused"] == Value::Bool(true) => format!(
                    "{}, paused ({} held)",
                    text(&h["status"]),
                    text(&h["queue"]["held"])
                ),
                "state" => text(&h["health"]["state"]),
                "queue" => queue_cell(&h["queue"]),
                _ => text(&h[*k]),
            })
            .collect()
        })
        .collect();
    table(
        &[
            "ID", "PRIORITY", "NAME", "EVENT", "STAGE", "STATUS", "STATE", "QUEUE", "KIND",
            "TARGET",
        ],
        rows,
    );
}

/// A handler's queue in one cell: the counts that are not zero, "-" for none.
fn queue_cell(queue: &Value) -> String {
    let parts: Vec<String> = ["pending", "waiting", "held", "blocked"]
        .iter()
        .filter(|state| queue[**state].as_u64().unwrap_or(0) > 0)
        .map(|state| format!("{} {state}", queue[*state]))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `handlers show`: the row, then its health and queue in full.
fn handler_details(h: &Value) {
    handler_rows(std::slice::from_ref(h));
    let health = &h["health"];
    let or_never = |v: &Value| match v {
        Value::Null => "never".to_owned(),
        other => text(other),
    };
    crate::out!(
        "health: {} ({} succeeded, {} failed in 24 h; last success {}, last failure {})",
        text(&health["state"]),
        text(&health["succeeded_24h"]),
        text(&health["failed_24h"]),
        or_never(&health["last_success_at"]),
        or_never(&health["last_failure_at"]),
    );
    let queue = &h["queue"];
    crate::out!(
        "queue: {} pending, {} waiting, {} held, {} blocked{}",
        text(&queue["pending"]),
        text(&queue["waiting"]),
        text(&queue["held"]),
        text(&queue["blocked"]),
        match &queue["oldest_at"] {
            Value::Null => String::new(),
            oldest => format!("; oldest since {}", text(oldest)),
        },
    );
}

/// An object id as typed: a number if it parses as one, else a string.
fn object_id(text: &str) -> Value {
    match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(text),
    }
}

pub async fn handlers(client: &ClientArgs, command: HandlersCommand) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    let (answer, list) = match command {
        HandlersCommand::Show { id } => {
            let answer = api
                .send(
                    reqwest::Method::GET,
                    &format!("/handlers/{id}"),
                    &[],
                    None,
                    &[],
                )
                .await?;
            if client.json {
                print_json(&answer);
            } else {
                handler_details(&answer);
            }
            return Ok(());
        }
        HandlersCommand::List {
            events_id,
            kind,
            status,
            stage,
            q,
            page,
            per_page,
        } => {
            let q = query(&[
                ("events_id", events_id),
                ("kind", kind),
                ("status", status),
                ("stage", stage),
                ("q", q),
                ("page", page.map(|p| p.to_string())),
                ("per_page", per_page.map(|p| p.to_string())),
            ]);
            (
                api.send(reqwest::Method::GET, "/handlers", &q, None, &[])
                    .await?,
                true,
            )
        }
        HandlersCommand::Create(fields) => (
            api.send(
                reqwest::Method::POST,
                "/handlers",
                &[],
                Some(fields.to_json()?),
                &[],
            )
            .await?,
            false,
        ),
        HandlersCommand::Update { id, fields } => (
            api.send(
                reqwest::Method::PATCH,
                &format!("/handlers/{id}"),
                &[],
                Some(fields.to_json()?),
                &[],
            )
            .await?,
            false,
        ),
        HandlersCommand::Enable { id } => (set_status(&api, id, "enabled").await?, false),
        HandlersCommand::Disable { id } => (set_status(&api, id, "disabled").await?, false),
        HandlersCommand::Archive { id } => (set_status(&api, id, "archived").await?, false),
        HandlersCommand::Test {
            id,
            events_id,
            object_id,
            data,
            event_id,
            send,
        } => {
            let json_arg = |flag: &str, text: Option<String>| -> anyhow::Result<Option<Value>> {
                text.map(|t| {
                    serde_json::from_str(&t).with_context(|| format!("--{flag} {t:?} is not JSON"))
                })
                .transpose()
            };
            let mut body = json!({ "send": send });
            for (key, value) in [
                ("events_id", events_id.map(Value::from)),
                ("event_id", event_id.map(Value::from)),
                ("object_id", json_arg("object-id", object_id)?),
                ("data", json_arg("data", data)?),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let report = api
                .send(
                    reqwest::Method::POST,
                    &format!("/handlers/{id}/test"),
                    &[],
                    Some(body),
                    &[],
                )
                .await?;
            print_json(&report);
            return Ok(());
        }
        HandlersCommand::DryRun { id, limit } => {
            let report = api
                .send(
                    reqwest::Method::POST,
                    &format!("/handlers/{id}/dry-run"),
                    &[],
                    Some(json!({ "limit": limit })),
                    &[],
                )
                .await?;
            print_json(&report);
            return Ok(());
        }
        HandlersCommand::Pause { id } => (switch(&api, id, "pause").await?, false),
        HandlersCommand::Resume { id } => (switch(&api, id, "resume").await?, false),
        HandlersCommand::Delete { id } => {
            api.send(
                reqwest::Method::DELETE,
                &format!("/handlers/{id}"),
                &[],
                None,
                &[],
            )
            .await?;
            if client.json {
                print_json(&json!({ "deleted": id }));
            } else {
                crate::out!("deleted handler {id}");
            }
            return Ok(());
        }
    };
    if client.json {
        print_json(&answer);
    } else if list {
        handler_rows(
            answer["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        );
        crate::out!("({} in all)", answer["total"]);
    } else {
        handler_rows(std::slice::from_ref(&answer));
    }
    Ok(())
}

/// `POST /handlers/{id}/pause` or `…/resume`.
async fn switch(api: &Api, id: i64, action: &str) -> anyhow::Result<Value> {
    let path = format!("/handlers/{id}/{action}");
    api.send(reqwest::Method::POST, &path, &[], None, &[]).await
}

async fn set_status(api: &Api, id: i64, status: &str) -> anyhow::Result<Value> {
    api.send(
        reqwest::Method::PATCH,
        &format!("/handlers/{id}"),
        &[],
        Some(json!({ "status": status })),
        &[],
    )
    .await
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
