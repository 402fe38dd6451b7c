//! `provisio emit`: an event at the after stage, or the before-stage chain
//! and its verdict.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Api, ClientArgs, EmitArgs, object_id, print_json, text};

/// `emit --before` ended with the chain forbidding the action: the verdict
/// was printed, and the process exits with [`Forbidden::EXIT_CODE`], so a
/// script can tell "forbidden" from "allowed" (0) and from an error (1).
#[derive(Debug)]
pub struct Forbidden;

impl Forbidden {
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the before-stage chain forbade the action")
    }
}

impl std::error::Error for Forbidden {}

fn read_data(args: &EmitArgs) -> anyhow::Result<Value> {
    let text = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone(),
        (None, Some(f)) if f == "-" => {
            std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
        }
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?
        }
        (None, None) => "{}".into(),
    };
    let value: Value = serde_json::from_str(&text).context("--data is not valid JSON")?;
    if !value.is_object() {
        bail!("--data must be a JSON object");
    }
    Ok(value)
}

pub async fn emit(client: &ClientArgs, args: EmitArgs) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    let mut body = json!({ "events_id": args.events_id, "object_id": object_id(&args.object_id), "data": read_data(&args)? });
    if let Some(dt) = &args.dt {
        body["dt"] = Value::from(dt.clone());
    }
    let path = if args.before {
        "/events/before"
    } else {
        "/events"
    };
    let headers: Vec<(&str, String)> = args
        .idempotency_key
        .iter()
        .map(|k| ("idempotency-key", k.clone()))
        .collect();
    let answer = api
        .send(reqwest::Method::POST, path, &[], Some(body), &headers)
        .await?;
    if client.json {
        print_json(&answer);
    } else if args.before {
        let verdict = if answer["allowed"] == true {
            "allowed"
        } else {
            "forbidden"
        };
        crate::out!(
            "{verdict}{}",
            answer["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        crate::out!("data: {}", answer["data"]);
        for step in answer["executions"].as_array().into_iter().flatten() {
            crate::out!(
                "  {} {} ({} ms){}",
                text(&step["handler_name"]),
                text(&step["outcome"]),
                step["duration_ms"],
                step["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    } else {
        crate::out!(
            "event {} accepted, {} deliveries",
            text(&answer["id"]),
            answer["deliveries"]
        );
    }
    if args.before && answer["allowed"] != true {
        return Err(Forbidden.into());
    }
    Ok(())
}
