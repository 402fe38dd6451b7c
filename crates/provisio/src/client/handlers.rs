//! `provisio handlers`: list, show, create, update, delete, the secret,
//! pause and resume, enable and disable; a handler as a table row and in
//! full.

use anyhow::Context;
use serde_json::{Value, json};

use super::{Api, ClientArgs, HandlersCommand, print_json, query, table, text};

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
