//! A handler: what it subscribes to, when it runs, how it is called, and the
//! validation every change to one goes through.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::FieldErrors;
use crate::catalog::EventPattern;
use crate::filter::Filter;
use crate::request::{RequestSpec, RequestTemplate};
use crate::signing::SigningSecret;
use crate::wire_enum;

mod pause;
use pause::validate_auto_pause;
pub use pause::{
    AUTO_PAUSE_AFTER_RANGE, AUTO_PAUSE_FAILURES_RANGE, AUTO_PAUSE_PROBE_RANGE, AutoPause,
    AutoPauseDraft, OPERATOR_PAUSE, Pause,
};

wire_enum! {
    /// When a handler runs relative to the business action.
    Stage { After = "after", Before = "before" }
}

wire_enum! {
    /// Whether a handler runs. Archived handlers are kept for their history and
    /// hidden from the default lists.
    Status { Enabled = "enabled", Disabled = "disabled", Archived = "archived" }
}

wire_enum! {
    /// How a handler is called.
    HandlerKind { Http = "http", Script = "script" }
}

wire_enum! {
    /// What a failed before-stage call means for the action.
    OnFailure { Forbid = "forbid", Allow = "allow" }
}

wire_enum! {
    /// What an ordered handler's delivery that used up its attempts does to
    /// the later deliveries of its object: `block` keeps them waiting behind
    /// it (the delivery is `blocked` until an operator retries or skips it),
    /// `skip` fails it and lets the next one go. Unordered handlers have no
    /// line to hold, so for them it changes nothing.
    OnExhausted { Block = "block", Skip = "skip" }
}

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_TARGET_LEN: usize = 2048;
pub const MAX_HEADERS: usize = 32;
pub const MAX_ARGS: usize = 32;
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<i64> = 100..=300_000;
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i64> = 1..=50;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1_000_000..=1_000_000;
/// A handler's own cap on calls in flight at once.
pub const MAX_IN_FLIGHT_RANGE: std::ops::RangeInclusive<i64> = 1..=1024;
/// A handler's own limit of calls per second, spread evenly.
pub const RATE_LIMIT_RANGE: std::ops::RangeInclusive<i64> = 1..=1000;

/// Headers provisio sets itself on every call; a handler may not override them,
/// or signatures and framing would lie.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Defaults applied where a create request leaves a field out.
pub mod defaults {
    use super::*;
    pub const STAGE: Stage = Stage::After;
    pub const STATUS: Status = Status::Enabled;
    pub const PRIORITY: i64 = 100;
    pub const KIND: HandlerKind = HandlerKind::Http;
    pub const MAX_ATTEMPTS: i64 = 10;
    pub const ORDERED: bool = true;
    pub const ON_FAILURE: OnFailure = OnFailure::Forbid;
    /// A provisioning line must not run ahead of a change it depends on.
    pub const ON_EXHAUSTED: OnExhausted = OnExhausted::Block;
    pub const CONFLATE: bool = false;
    /// The automatic pause's span and probe interval where a request gives
    /// only the number of failures.
    pub const AUTO_PAUSE_AFTER: &str = "10m";
    pub const AUTO_PAUSE_PROBE_EVERY: &str = "5m";

    /// After-stage calls may take their time; a before-stage call holds up the
    /// business action, so it gets less.
    pub fn timeout_ms(stage: Stage) -> i64 {
        match stage {
            Stage::After => 10_000,
            Stage::Before => 5_000,
        }
    }
}

/// Every setting of a handler, typed but not yet checked: what the API and the
/// web section build from their input before calling [`HandlerDraft::validate`].
#[derive(Debug, Clone)]
pub struct HandlerDraft {
    pub name: String,
    pub events_id: String,
    pub stage: Stage,
    pub status: Status,
    pub priority: i64,
    pub kind: HandlerKind,
    pub target: String,
    pub args: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: i64,
    pub max_attempts: i64,
    pub ordered: bool,
    pub on_failure: OnFailure,
    /// A CEL condition on the event (see [`crate::filter`]); empty for none.
    pub filter: String,
    /// How an HTTP handler's request is built (see [`crate::request`]);
    /// `None` POSTs the payload.
    pub request: Option<RequestSpec>,
    pub on_exhausted: OnExhausted,
    pub conflate: bool,
    /// The automatic pause (circuit breaker); `None` is off.
    pub auto_pause: Option<AutoPauseDraft>,
    /// The most calls in flight to this handler at once; `None`: no cap of
    /// its own.
    pub max_in_flight: Option<i64>,
    /// The most calls per second, spread evenly; `None`: no limit.
    pub rate_limit: Option<i64>,
}

/// A handler's settings once validated: the only form storage accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub name: String,
    pub events_id: EventPattern,
    pub stage: Stage,
    pub status: Status,
    pub priority: i32,
    pub kind: HandlerKind,
    /// An `http(s)` URL, or a script path relative to the scripts directory.
    pub target: String,
    /// Arguments passed to a script handler; empty for HTTP.
    pub args: Vec<String>,
    /// Extra request headers for an HTTP handler.
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u32,
    pub max_attempts: u32,
    pub ordered: bool,
    pub on_failure: OnFailure,
    /// Only the events that pass it are delivered to (or run through) this
    /// handler.
    pub filter: Option<Filter>,
    /// The request template of an HTTP handler; `None` POSTs the payload.
    pub request: Option<RequestTemplate>,
    /// Ordered handlers only: block the object's line behind a delivery that
    /// used up its attempts, or skip it.
    pub on_exhausted: OnExhausted,
    /// When several deliveries of one object wait, send only the newest; the
    /// older ones become `superseded`.
    pub conflate: bool,
    pub auto_pause: Option<AutoPause>,
    pub max_in_flight: Option<u32>,
    /// Calls per second at most, spread evenly (one every 1/N s).
    pub rate_limit: Option<u32>,
}

impl HandlerSpec {
    /// Whether a delivery that used up its attempts blocks its object's line.
    pub fn blocks_when_exhausted(&self) -> bool {
        self.ordered && self.on_exhausted == OnExhausted::Block
    }
}

/// A stored handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub id: i64,
    pub spec: HandlerSpec,
    /// `None` while it runs.
    pub pause: Option<Pause>,
    pub secret: SigningSecret,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What validation needs to know about the world outside the draft.
pub struct ValidationContext<'a> {
    /// Every event type id in the catalog.
    pub event_types: &'a [String],
    /// Checks a script target against the scripts directory (exists, inside it,
    /// executable); the file system is the engine's business, not the domain's.
    pub check_script: &'a dyn Fn(&str) -> Result<(), String>,
}

impl HandlerDraft {
    /// Checks every field and reports every problem at once, keyed by field.
    pub fn validate(self, ctx: &ValidationContext<'_>) -> Result<HandlerSpec, FieldErrors> {
        let mut errors = FieldErrors::new();

        let name = self.name.trim().to_owned();
        if name.is_empty() {
            errors.add("name", "must not be empty");
        } else if crate::has_nul(&name) {
            errors.add("name", crate::NUL_REFUSED);
        } else if name.chars().count() > MAX_NAME_LEN {
            errors.add("name", format!("must be at most {MAX_NAME_LEN} characters"));
        }

        let events_id = match EventPattern::parse(self.events_id.trim()) {
            Ok(pattern) => {
                if let Err(e) = pattern.check_against(ctx.event_types.iter().map(String::as_str)) {
                    errors.add("events_id", e);
                }
                Some(pattern)
            }
            Err(e) => {
                errors.add("events_id", e);
                None
            }
        };

        if !PRIORITY_RANGE.contains(&self.priority) {
            errors.add("priority", range_message(&PRIORITY_RANGE));
        }
        if !TIMEOUT_MS_RANGE.contains(&self.timeout_ms) {
            errors.add("timeout_ms", range_message(&TIMEOUT_MS_RANGE));
        }
        if !MAX_ATTEMPTS_RANGE.contains(&self.max_attempts) {
            errors.add("max_attempts", range_message(&MAX_ATTEMPTS_RANGE));
        }

        let target = self.target.trim().to_owned();
        match self.kind {
            HandlerKind::Http => {
                if let Err(e) = validate_http_target(&target) {
                    errors.add("target", e);
                }
                if !self.args.is_empty() {
                    errors.add("args", "only script handlers take arguments");
                }
            }
            HandlerKind::Script => {
                if let Err(e) =
                    validate_script_target(&target).and_then(|()| (ctx.check_script)(&target))
                {
                    errors.add("target", e);
                }
                if self.args.len() > MAX_ARGS {
                    errors.add("args", format!("at most {MAX_ARGS} arguments"));
                } else if self.args.iter().any(|a| crate::has_nul(a)) {
                    errors.add("args", crate::NUL_REFUSED);
                }
                if !self.headers.is_empty() {
                    errors.add("headers", "only HTTP handlers take headers");
                }
            }
        }

        if let Err(e) = validate_headers(&self.headers) {
            errors.add("headers", e);
        }

        let request = match (self.request, self.kind) {
            (None, _) => None,
            (Some(_), HandlerKind::Script) => {
                errors.add("request", "only HTTP handlers take a request template");
                None
            }
            (Some(spec), HandlerKind::Http) => {
                for headers in std::iter::once(&spec.headers)
                    .chain(spec.by_event.values().filter_map(|o| o.headers.as_ref()))
                {
                    if let Err(e) = validate_template_headers(headers) {
                        errors.add("request.headers", e);
                    }
                }
                RequestTemplate::compile(spec)
                    .map_err(|(field, e)| errors.add(field, e))
                    .ok()
            }
        };

        let filter = match self.filter.trim() {
            "" => None,
            source if crate::has_nul(source) => {
                errors.add("filter", crate::NUL_REFUSED);
                None
            }
            source => Filter::parse(source)
                .map_err(|e| errors.add("filter", e))
                .ok(),
        };
        if let Some(n) = self.max_in_flight
            && !MAX_IN_FLIGHT_RANGE.contains(&n)
        {
            errors.add("max_in_flight", range_message(&MAX_IN_FLIGHT_RANGE));
        }

        if let Some(n) = self.rate_limit
            && !RATE_LIMIT_RANGE.contains(&n)
        {
            errors.add("rate_limit.per_second", range_message(&RATE_LIMIT_RANGE));
        }

        let auto_pause = self
            .auto_pause
            .as_ref()
            .and_then(|a| validate_auto_pause(a, &mut errors));

        errors.into_result()?;
        Ok(HandlerSpec {
            name,
            events_id: events_id.expect("checked above"),
            stage: self.stage,
            status: self.status,
            priority: self.priority as i32,
            kind: self.kind,
            target,
            args: self.args,
            headers: self.headers,
            timeout_ms: self.timeout_ms as u32,
            max_attempts: self.max_attempts as u32,
            ordered: self.ordered,
            on_failure: self.on_failure,
            filter,
            request,
            on_exhausted: self.on_exhausted,
            conflate: self.conflate,
            auto_pause,
            max_in_flight: self.max_in_flight.map(|n| n as u32),
            rate_limit: self.rate_limit.map(|n| n as u32),
        })
    }
}

impl From<&HandlerSpec> for HandlerDraft {
    /// The starting point of a partial update: the stored settings, to be
    /// overwritten field by field and validated again as a whole.
    fn from(spec: &HandlerSpec) -> Self {
        Self {
            name: spec.name.clone(),
            events_id: spec.events_id.to_string(),
            stage: spec.stage,
            status: spec.status,
            priority: spec.priority.into(),
            kind: spec.kind,
            target: spec.target.clone(),
            args: spec.args.clone(),
            headers: spec.headers.clone(),
            timeout_ms: spec.timeout_ms.into(),
            max_attempts: spec.max_attempts.into(),
            ordered: spec.ordered,
            on_failure: spec.on_failure,
            filter: spec
                .filter
                .as_ref()
                .map_or_else(String::new, |f| f.as_str().to_owned()),
            request: spec.request.as_ref().map(|r| r.spec().clone()),
            on_exhausted: spec.on_exhausted,
            conflate: spec.conflate,
            auto_pause: spec.auto_pause.as_ref().map(Into::into),
            max_in_flight: spec.max_in_flight.map(i64::from),
            rate_limit: spec.rate_limit.map(i64::from),
        }
    }
}

fn range_message(range: &std::ops::RangeInclusive<i64>) -> String {
    format!(
        "must be an integer from {} to {}",
        range.start(),
        range.end()
    )
}

fn validate_http_target(target: &str) -> Result<(), String> {
    if crate::has_nul(target) {
        return Err(crate::NUL_REFUSED.into());
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(format!("must be at most {MAX_TARGET_LEN} characters"));
    }
    let url = url::Url::parse(target).map_err(|e| format!("must be an http or https URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, not {}",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    Ok(())
}

/// A target as the execution log shows it: the password of a URL replaced by
/// `***` (`http://user:***@host/…`), or the user name when it stands alone,
/// since that is how many APIs take a key (`https://KEY@api.example.net/`).
/// Anything else, scripts' paths included, is returned as it is. Masking a
/// masked target changes nothing.
///
/// Handler reads keep the real target: an operator has to see and edit it.
pub fn masked_target(target: &str) -> std::borrow::Cow<'_, str> {
    // Credentials end at an `@`: without one there are none, and the log's
    // reads skip parsing every row.
    if !target.contains('@') {
        return target.into();
    }
    let Ok(mut url) = url::Url::parse(target) else {
        return target.into();
    };
    let masked = if url.password().is_some() {
        url.set_password(Some("***"))
    } else if !url.username().is_empty() {
        url.set_username("***")
    } else {
        return target.into();
    };
    match masked {
        Ok(()) => url.to_string().into(),
        // Only URLs without a host refuse credentials, and those have none.
        Err(()) => target.into(),
    }
}

/// The syntactic half of the script check: a relative path that stays inside the
/// directory on its face. The engine then resolves symlinks and checks the file.
pub fn validate_script_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("must name a script inside the scripts directory".into());
    }
    if crate::has_nul(target) {
        return Err(crate::NUL_REFUSED.into());
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(format!("must be at most {MAX_TARGET_LEN} characters"));
    }
    let path = std::path::Path::new(target);
    if path.is_absolute() {
        return Err("must be a path relative to the scripts directory".into());
    }
    if path.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err("must stay inside the scripts directory (no ..)".into());
    }
    Ok(())
}

/// A request template's header names: as a handler's own, except that it may
/// set `Content-Type` (its body may be other than JSON). Values are templates,
/// checked once rendered.
fn validate_template_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    for name in headers.keys() {
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        if parsed != http::header::CONTENT_TYPE && RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(format!(
                "{name} is set by provisio and cannot be overridden"
            ));
        }
    }
    Ok(())
}

fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    for (name, value) in headers {
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(format!(
                "{name} is set by provisio and cannot be overridden"
            ));
        }
        http::HeaderValue::from_str(value)
            .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
