//! `provisio deliveries list|show|redeliver|skip` and `provisio redeliver`:
//! an event's deliveries, one delivery with every attempt of it, retry now
//! and skip.

use serde_json::{Value, json};

use super::{Api, ClientArgs, DeliveriesCommand, print_json, table, text};

pub async fn redeliver(client: &ClientArgs, delivery_id: &str) -> anyhow::Result<()> {
    deliveries(
        client,
        DeliveriesCommand::Redeliver {
            id: delivery_id.to_owned(),
        },
    )
    .await
}

pub async fn deliveries(client: &ClientArgs, command: DeliveriesCommand) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    let (path, done) = match &command {
        DeliveriesCommand::List { event_id } => {
            let answer = get(&api, &format!("/events/{event_id}")).await?;
            if client.json {
                print_json(&answer["deliveries"]);
            } else {
                delivery_rows(answer["deliveries"].as_array().map_or(&[], Vec::as_slice));
            }
            return Ok(());
        }
        DeliveriesCommand::Show { id } => {
            let answer = get(&api, &format!("/deliveries/{id}")).await?;
            if client.json {
                print_json(&answer);
            } else {
                show(&answer);
            }
            return Ok(());
        }
        DeliveriesCommand::Redeliver { id } => {
            (format!("/deliveries/{id}/redeliver"), "queued again")
        }
        DeliveriesCommand::Skip { id } => (format!("/deliveries/{id}/skip"), "skipped"),
    };
    let answer = api
        .send(reqwest::Method::POST, &path, &[], Some(json!({})), &[])
        .await?;
    if client.json {
        print_json(&answer);
    } else if let Some(note) = answer["note"].as_str() {
        // A redeliver says what it did: a new round, due now, the line's
        // head due now, or nothing (being attempted).
        let what = match answer["retry"].as_str() {
            Some("due_now") => "due now",
            Some("head_due_now") => "waits; its line's head is due now",
            Some("in_flight") => "being attempted",
            _ => done,
        };
        crate::out!(
            "delivery {} {what} ({}). {note}",
            text(&answer["id"]),
            text(&answer["state"])
        );
    } else {
        crate::out!(
            "delivery {} {done} ({})",
            text(&answer["id"]),
            text(&answer["state"])
        );
    }
    Ok(())
}

async fn get(api: &Api, path: &str) -> anyhow::Result<Value> {
    api.send(reqwest::Method::GET, path, &[], None, &[]).await
}

/// One delivery for people: where it stands, then its attempts.
fn show(d: &Value) {
    let handler = match d["handler_name"].as_str() {
        Some(name) => format!("{name} (#{})", text(&d["handler_id"])),
        None => format!("#{} (deleted)", text(&d["handler_id"])),
    };
    let mut lines = vec![
        ("delivery", text(&d["id"])),
        ("state", text(&d["state"])),
        ("handler", handler),
        (
            "event",
            format!("{} {}", text(&d["events_id"]), text(&d["event_id"])),
        ),
        ("object", text(&d["object_id"])),
        ("attempts", text(&d["attempts"])),
        ("next attempt", text(&d["next_attempt_at"])),
        ("created", text(&d["created_at"])),
        ("finished", text(&d["finished_at"])),
    ];
    for (label, key) in [
        ("waits behind", "blocked_by"),
        ("superseded by", "superseded_by"),
        ("last error", "last_error"),
    ] {
        if let Some(v) = d[key].as_str() {
            lines.push((label, v.to_owned()));
        }
    }
    for (label, value) in lines {
        crate::out!("{label:<13} {value}");
    }
    crate::out!("");
    let rows = d["executions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let result = match (e["exit_code"].as_u64(), e["response_status"].as_u64()) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(status)) => status.to_string(),
                _ => String::new(),
            };
            vec![
                text(&e["id"]),
                text(&e["attempt"]),
                text(&e["status"]),
                text(&e["started_at"]),
                result,
                text(&e["next_attempt_at"]),
                e["error"]
                    .as_str()
                    .map(|err| err.chars().take(60).collect())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "EXECUTION",
            "ATTEMPT",
            "STATUS",
            "DATE",
            "RESULT",
            "NEXT",
            "ERROR",
        ],
        rows,
    );
}

/// Deliveries as a table; the note says what a waiting one waits behind, what
/// replaced a superseded one, or the last error.
fn delivery_rows(items: &[Value]) {
    let rows = items
        .iter()
        .map(|d| {
            let note = if let Some(b) = d["blocked_by"].as_str() {
                format!("behind blocked {b}")
            } else if let Some(n) = d["superseded_by"].as_str() {
                format!("superseded by {n}")
            } else {
                text(&d["last_error"])
            };
            vec![
                text(&d["id"]),
                text(&d["handler_id"]),
                text(&d["state"]),
                text(&d["attempts"]),
                note,
            ]
        })
        .collect();
    table(&["ID", "HANDLER", "STATE", "ATTEMPTS", "NOTE"], rows);
}
