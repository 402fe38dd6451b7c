//! The client's command-line arguments, and a handler's settings as flags.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "PROVISIO_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// An API token.
    #[arg(long, env = "PROVISIO_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EmitArgs {
    /// The event type, such as clients.create.
    pub events_id: String,
    /// The object's id: a number if it looks like one, else a string.
    #[arg(long)]
    pub object_id: String,
    /// The event's data, a JSON object.
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the data from this file (`-` for standard input).
    #[arg(long)]
    pub data_file: Option<String>,
    /// When the action happened (ISO 8601 with offset).
    #[arg(long)]
    pub dt: Option<String>,
    /// Run the before-stage chain instead of emitting at the after stage and
    /// print its verdict; exits with status 3 when the chain forbids the
    /// action (0 when it allows it, 1 on any error).
    #[arg(long)]
    pub before: bool,
    /// Makes retrying this emit safe.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// A handler's settings as flags; all optional so `update` can use them too.
#[derive(Debug, Args, Default)]
pub struct HandlerFields {
    /// The handler's name, as the web section and the log show it.
    #[arg(long)]
    pub name: Option<String>,
    /// An event type, `prefix.*` or `*`.
    #[arg(long)]
    pub events_id: Option<String>,
    /// `after` or `before`.
    #[arg(long)]
    pub stage: Option<String>,
    /// `enabled`, `disabled` or `archived`.
    #[arg(long)]
    pub status: Option<String>,
    /// Lower runs first (ties by id); 100 when a new handler leaves it out.
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i64>,
    /// `http` or `script`.
    #[arg(long)]
    pub kind: Option<String>,
    /// A URL, or a script path inside the scripts directory.
    #[arg(long)]
    pub target: Option<String>,
    /// A script argument (repeat for more).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An extra header as `Name: value` (repeat for more).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// How long one call may take, in milliseconds (default 10000 after the
    /// action, 5000 before it).
    #[arg(long)]
    pub timeout_ms: Option<i64>,
    /// After stage: how many attempts a delivery gets before it fails (or
    /// blocks its object's line); default 10.
    #[arg(long)]
    pub max_attempts: Option<i64>,
    /// `true` or `false`.
    #[arg(long)]
    pub ordered: Option<bool>,
    /// `forbid` or `allow`.
    #[arg(long)]
    pub on_failure: Option<String>,
    /// Only events that pass this CEL condition reach the handler, e.g.
    /// `data.currency == "EUR"`; `""` removes it.
    #[arg(long)]
    pub filter: Option<String>,
    /// A request template as JSON (`{"method": "PUT", "url": …, "body": …}`);
    /// `null` removes it.
    #[arg(long)]
    pub request: Option<String>,
    /// Ordered handlers: `block` (a delivery that used up its attempts holds
    /// its object's later ones) or `skip`.
    #[arg(long)]
    pub on_exhausted: Option<String>,
    /// `true`: of an object's waiting deliveries, send only the newest.
    #[arg(long)]
    pub conflate: Option<bool>,
    /// Pause the handler by itself after this many consecutive failed
    /// attempts (the automatic pause).
    #[arg(long, conflicts_with = "no_auto_pause")]
    pub auto_pause_failures: Option<i64>,
    /// How long those failures must span at least (default 10m).
    #[arg(long, requires = "auto_pause_failures")]
    pub auto_pause_after: Option<String>,
    /// How often an automatically paused handler is probed (default 5m).
    #[arg(long, requires = "auto_pause_failures")]
    pub auto_pause_probe_every: Option<String>,
    /// Turn the automatic pause off.
    #[arg(long)]
    pub no_auto_pause: bool,
    /// The most calls in flight to this handler at once.
    #[arg(long)]
    pub max_in_flight: Option<i64>,
    /// Calls per second at most, spread evenly.
    #[arg(long)]
    pub rate_limit: Option<i64>,
}

impl HandlerFields {
    pub(super) fn to_json(&self) -> anyhow::Result<Value> {
        let mut body = serde_json::Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                body.insert(key.into(), v);
            }
        };
        put("name", self.name.clone().map(Value::from));
        put("events_id", self.events_id.clone().map(Value::from));
        put("stage", self.stage.clone().map(Value::from));
        put("status", self.status.clone().map(Value::from));
        put("priority", self.priority.map(Value::from));
        put("kind", self.kind.clone().map(Value::from));
        put("target", self.target.clone().map(Value::from));
        put("timeout_ms", self.timeout_ms.map(Value::from));
        put("max_attempts", self.max_attempts.map(Value::from));
        put("ordered", self.ordered.map(Value::from));
        put("on_failure", self.on_failure.clone().map(Value::from));
        put("filter", self.filter.clone().map(Value::from));
        if let Some(request) = &self.request {
            let parsed = serde_json::from_str(request)
                .with_context(|| format!("--request {request:?} is not JSON"))?;
            put("request", Some(parsed));
        }
        put("on_exhausted", self.on_exhausted.clone().map(Value::from));
        put("conflate", self.conflate.map(Value::from));
        put("max_in_flight", self.max_in_flight.map(Value::from));
        put(
            "rate_limit",
            self.rate_limit.map(|n| json!({ "per_second": n })),
        );
        if self.no_auto_pause {
            put("auto_pause", Some(Value::Null));
        } else if let Some(failures) = self.auto_pause_failures {
            let mut auto_pause = json!({ "failures": failures });
            if let Some(after) = &self.auto_pause_after {
                auto_pause["after"] = json!(after);
            }
            if let Some(every) = &self.auto_pause_probe_every {
                auto_pause["probe_every"] = json!(every);
            }
            put("auto_pause", Some(auto_pause));
        }
        if !self.args.is_empty() {
            put("args", Some(json!(self.args)));
        }
        if !self.headers.is_empty() {
            let mut headers = BTreeMap::new();
            for h in &self.headers {
                let (k, v) = h
                    .split_once(':')
                    .with_context(|| format!("--header {h:?} is not \"Name: value\""))?;
                headers.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            put("headers", Some(json!(headers)));
        }
        Ok(Value::Object(body))
    }
}

#[derive(Debug, Subcommand)]
pub enum HandlersCommand {
    /// List handlers.
    List {
        /// Handlers of this event type or pattern (as stored: `clients.*`).
        #[arg(long)]
        events_id: Option<String>,
        /// `http` or `script`.
        #[arg(long)]
        kind: Option<String>,
        /// `enabled`, `disabled` or `archived` (default: the first two).
        #[arg(long)]
        status: Option<String>,
        /// `after` or `before`.
        #[arg(long)]
        stage: Option<String>,
        /// Name contains.
        #[arg(long)]
        q: Option<String>,
        /// Which page of the list (from 1).
        #[arg(long)]
        page: Option<u32>,
        /// How many handlers a page holds.
        #[arg(long)]
        per_page: Option<u32>,
    },
    /// Show one handler.
    Show {
        /// The handler's id.
        id: i64,
    },
    /// Create a handler.
    Create(Box<HandlerFields>),
    /// Change some of a handler's settings.
    Update {
        /// The handler's id.
        id: i64,
        #[command(flatten)]
        fields: Box<HandlerFields>,
    },
    /// Enable a handler.
    Enable {
        /// The handler's id.
        id: i64,
    },
    /// Disable a handler.
    Disable {
        /// The handler's id.
        id: i64,
    },
    /// Archive a handler.
    Archive {
        /// The handler's id.
        id: i64,
    },
    /// Pause a handler: its deliveries are kept (held), none is sent until
    /// it resumes.
    Pause {
        /// The handler's id.
        id: i64,
    },
    /// Resume a paused handler: what it held is sent in per-object order.
    Resume {
        /// The handler's id.
        id: i64,
    },
    /// Delete a handler.
    Delete {
        /// The handler's id.
        id: i64,
    },
    /// Show the request a handler sends for an event (its filter and request
    /// template applied); `--send` makes the call once and shows the answer.
    Test {
        /// The handler's id.
        id: i64,
        /// The event type (default: the handler's, when it names one).
        #[arg(long)]
        events_id: Option<String>,
        /// The object's id as JSON (`12` or `"c-12"`; default: the sample's).
        #[arg(long)]
        object_id: Option<String>,
        /// The event's data as a JSON object (default: the type's sample).
        #[arg(long)]
        data: Option<String>,
        /// Use a logged event instead.
        #[arg(long, conflicts_with_all = ["events_id", "object_id", "data"])]
        event_id: Option<String>,
        /// Send it once (the call is logged, marked test).
        #[arg(long)]
        send: bool,
    },
    /// Run a handler's filter and request template over the newest logged
    /// events of its pattern: how many pass, and the first requests.
    DryRun {
        /// The handler's id.
        id: i64,
        /// How many logged events to look at (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// The execution log's filters.
#[derive(Debug, Args)]
pub struct ExecutionFilters {
    /// Calls to this handler.
    #[arg(long)]
    pub handler_id: Option<i64>,
    /// Calls for this event type, or a pattern such as `clients.*`.
    #[arg(long)]
    pub events_id: Option<String>,
    /// `success` or `fail`.
    #[arg(long)]
    pub status: Option<String>,
    /// `after` or `before`.
    #[arg(long)]
    pub stage: Option<String>,
    /// Calls for this object's events.
    #[arg(long)]
    pub object_id: Option<String>,
    /// The request body contains this text.
    #[arg(long)]
    pub data: Option<String>,
    /// The error contains this text.
    #[arg(long)]
    pub error: Option<String>,
    /// The response body (a script's output) contains this text,
    /// case-insensitively. Text searches read the newest 100,000 executions
    /// (back from --to when given).
    #[arg(long)]
    pub response: Option<String>,
    /// Before-stage calls with this verdict: `unchanged`, `changed`,
    /// `forbidden` or `failed`.
    #[arg(long)]
    pub verdict: Option<String>,
    /// The attempts of this delivery.
    #[arg(long)]
    pub delivery_id: Option<String>,
    /// The calls made for this event (or before-stage run).
    #[arg(long)]
    pub event_id: Option<String>,
    /// Calls made from this instant (ISO 8601) or date on.
    #[arg(long)]
    pub from: Option<String>,
    /// Calls made up to this instant or date (to its end).
    #[arg(long)]
    pub to: Option<String>,
    /// Calls made for this replay job.
    #[arg(long)]
    pub replay_id: Option<String>,
    /// Which page of the log (from 1, the newest).
    #[arg(long)]
    pub page: Option<u32>,
    /// How many executions a page holds.
    #[arg(long)]
    pub per_page: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first.
    List(Box<ExecutionFilters>),
    /// Show one execution in full: what was sent, what came back (`--json`
    /// for the API's JSON).
    Show {
        /// The execution's id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List an event's deliveries and where each stands.
    List {
        /// The event's id.
        event_id: String,
    },
    /// Show one delivery: its state, next attempt, handler, event and every
    /// attempt.
    Show {
        /// The delivery's id.
        id: String,
    },
    /// Retry now: a finished or blocked delivery gets a new round of
    /// attempts; a pending one is due now; a waiting one's line head is due
    /// now (it never overtakes the earlier deliveries of its object).
    Redeliver {
        /// The delivery's id.
        id: String,
    },
    /// Give up a blocked delivery so its object's later deliveries go on.
    Skip {
        /// The delivery's id.
        id: String,
    },
}
