//! `provisio replay`: start a replay (or resync) job and follow it to the
//! end, or show, list and cancel jobs.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Api, ClientArgs, object_id, print_json, query, table, text};

/// How often a followed job's progress is read.
const POLL: Duration = Duration::from_millis(500);

/// The job to start when no subcommand is given.
#[derive(Debug, Args)]
pub struct ReplayStart {
    /// The handler to resend to (an enabled after-stage handler).
    #[arg(long = "handler", value_name = "ID", required = true)]
    pub handler: Option<i64>,
    /// An event type, or a pattern such as clients.*.
    #[arg(long)]
    pub events_id: Option<String>,
    /// One object's id.
    #[arg(long)]
    pub object_id: Option<String>,
    /// Events stored from this instant (ISO 8601) or date.
    #[arg(long, value_name = "T")]
    pub from: Option<String>,
    /// Events stored up to this instant or date (to its end).
    #[arg(long, value_name = "T")]
    pub to: Option<String>,
    /// `failed`: only events whose latest delivery to the handler failed;
    /// `all` (the default): every matching event, also those it never got.
    #[arg(long, value_parser = ["failed", "all"])]
    pub status: Option<String>,
    /// A resync: each object's most recent matching event only.
    #[arg(long)]
    pub latest_per_object: bool,
    /// Print the job's id and return at once instead of following it (the
    /// job runs on the server either way; Ctrl-C stops only the following).
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Show one job and its progress.
    Status {
        /// The job's id.
        id: String,
    },
    /// List jobs, newest first.
    List {
        /// Which page of the list (from 1, the newest).
        #[arg(long)]
        page: Option<u32>,
        /// How many jobs a page holds.
        #[arg(long)]
        per_page: Option<u32>,
    },
    /// Cancel what a job has not sent yet.
    Cancel {
        /// The job's id.
        id: String,
    },
}

/// One line of a job's progress: `replay ID running: 120/3000 sent, …`.
fn progress(job: &Value) -> String {
    let n = |k: &str| job[k].as_u64().unwrap_or(0);
    let mut line = format!(
        "replay {} {}: {}/{} sent, {} failed",
        text(&job["id"]),
        text(&job["state"]),
        n("sent"),
        n("queued"),
        n("failed"),
    );
    if n("cancelled") > 0 {
        line.push_str(&format!(", {} cancelled", n("cancelled")));
    }
    if n("matched") != n("queued") {
        line.push_str(&format!(
            " ({} matched; {} already being replayed)",
            n("matched"),
            n("matched") - n("queued")
        ));
    }
    if job["state"] == "running" && n("queued") > 0 {
        let done = n("queued") - n("remaining");
        let width = 20;
        let filled = (done * width / n("queued")) as usize;
        line.push_str(&format!(
            " [{}{}] {}%",
            "#".repeat(filled),
            "-".repeat(width as usize - filled),
            done * 100 / n("queued")
        ));
    }
    line
}

/// Follows a job until it is no longer running: one line rewritten in place
/// on a terminal, otherwise a line whenever the progress changed; nothing
/// when `quiet` (the caller prints the final JSON).
async fn follow(api: &Api, mut job: Value, quiet: bool) -> anyhow::Result<Value> {
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let line = progress(&job);
        if quiet {
            // The caller prints the final JSON.
        } else if terminal {
            crate::output::write(&format!("\r{line}\x1b[K"));
        } else if line != last {
            crate::out!("{line}");
        }
        last = line;
        if job["state"] != "running" {
            if terminal && !quiet {
                crate::output::write("\n");
            }
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
        job = api
            .call(
                reqwest::Method::GET,
                &format!("/replays/{}", text(&job["id"])),
            )
            .await?;
    }
}

pub async fn replay(
    client: &ClientArgs,
    command: Option<ReplayCommand>,
    start: ReplayStart,
) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    let detached = command.is_none() && start.detach;
    let followed = command.is_none() && !start.detach;
    let job = match command {
        None => {
            let mut body = json!({
                "handler_id": start.handler,
                "latest_per_object": start.latest_per_object,
            });
            let fields = [
                ("events_id", start.events_id.map(Value::from)),
                ("object_id", start.object_id.as_deref().map(object_id)),
                ("from", start.from.map(Value::from)),
                ("to", start.to.map(Value::from)),
                ("status", start.status.map(Value::from)),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let job = api
                .send(reqwest::Method::POST, "/replays", &[], Some(body), &[])
                .await?;
            if detached {
                job
            } else {
                follow(&api, job, client.json).await?
            }
        }
        Some(ReplayCommand::Status { id }) => {
            api.call(reqwest::Method::GET, &format!("/replays/{id}"))
                .await?
        }
        Some(ReplayCommand::Cancel { id }) => {
            api.call(reqwest::Method::DELETE, &format!("/replays/{id}"))
                .await?
        }
        Some(ReplayCommand::List { page, per_page }) => {
            let q = query(&[
                ("page", page.map(|p| p.to_string())),
                ("per_page", per_page.map(|p| p.to_string())),
            ]);
            let answer = api
                .send(reqwest::Method::GET, "/replays", &q, None, &[])
                .await?;
            if client.json {
                print_json(&answer);
                return Ok(());
            }
            let rows = answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    let mut row: Vec<String> = ["id", "handler_id", "state", "matched", "queued"]
                        .iter()
                        .map(|k| text(&j[*k]))
                        .collect();
                    row.push(format!("{}/{}", j["sent"], j["failed"]));
                    row.push(text(&j["created_at"]));
                    row.push(text(&j["created_by"]));
                    row
                })
                .collect();
            table(
                &[
                    "ID",
                    "HANDLER",
                    "STATE",
                    "MATCHED",
                    "QUEUED",
                    "SENT/FAILED",
                    "STARTED",
                    "BY",
                ],
                rows,
            );
            crate::out!("({} in all)", answer["total"]);
            return Ok(());
        }
    };
    if client.json {
        print_json(&job);
    } else if detached {
        crate::out!("{}", text(&job["id"]));
    } else if !followed {
        crate::out!("{}", progress(&job));
    }
    Ok(())
}
