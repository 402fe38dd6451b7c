//! The handler form's fields as text, and their conversion to a draft. Only
//! the fields of the chosen stage and kind are read: the others are hidden
//! on the page, so what they hold must neither be refused nor saved.

use std::collections::BTreeMap;

use provisio_core::FieldErrors;
use provisio_core::handler::{
    AutoPauseDraft, HandlerDraft, HandlerKind, HandlerSpec, Stage, defaults,
};
use provisio_core::retry::format_duration;
use provisio_engine::Engine;
use serde::Deserialize;

/// The handler form's fields as the browser sends them: all text, so what the
/// operator typed can be shown again next to its error.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(super) struct HandlerForm {
    pub(super) name: String,
    pub(super) events_id: String,
    pub(super) stage: String,
    pub(super) status: String,
    pub(super) priority: String,
    pub(super) kind: String,
    pub(super) target: String,
    pub(super) timeout_ms: String,
    pub(super) max_attempts: String,
    pub(super) on_failure: String,
    pub(super) ordered: Option<String>,
    pub(super) on_exhausted: String,
    pub(super) conflate: Option<String>,
    pub(super) headers: String,
    pub(super) args: String,
    pub(super) filter: String,
    /// The request template as JSON; empty for none.
    pub(super) request: String,
    /// Set by the Preview button: show what the form's handler would send
    /// for an event of `preview_events_id`, and save nothing.
    pub(super) preview: String,
    pub(super) preview_events_id: String,
    /// Set by the Dry run button: the form's handler over recent history.
    pub(super) dry_run: String,
    /// Empty: the automatic pause is off.
    pub(super) auto_pause_failures: String,
    pub(super) auto_pause_after: String,
    pub(super) auto_pause_probe_every: String,
    /// Empty: no cap of its own.
    pub(super) max_in_flight: String,
    /// Calls per second; empty: no limit.
    pub(super) rate_limit: String,
}

/// The form's fields in the order the page shows them (error keys: the
/// first segment of a field error's name), so the first one in error can
/// take the focus.
pub(super) const FIELD_ORDER: &[&str] = &[
    "name",
    "events_id",
    "stage",
    "status",
    "priority",
    "kind",
    "target",
    "timeout_ms",
    "max_attempts",
    "on_failure",
    "ordered",
    "on_exhausted",
    "conflate",
    "filter",
    "request",
    "headers",
    "args",
    "max_in_flight",
    "rate_limit",
    "auto_pause",
];

impl HandlerForm {
    pub(super) fn blank() -> Self {
        Self {
            stage: defaults::STAGE.as_str().into(),
            status: defaults::STATUS.as_str().into(),
            priority: defaults::PRIORITY.to_string(),
            kind: defaults::KIND.as_str().into(),
            max_attempts: defaults::MAX_ATTEMPTS.to_string(),
            on_failure: defaults::ON_FAILURE.as_str().into(),
            ordered: Some("true".into()),
            on_exhausted: defaults::ON_EXHAUSTED.as_str().into(),
            conflate: defaults::CONFLATE.then(|| "true".into()),
            auto_pause_after: defaults::AUTO_PAUSE_AFTER.into(),
            auto_pause_probe_every: defaults::AUTO_PAUSE_PROBE_EVERY.into(),
            ..Self::default()
        }
    }

    pub(super) fn from_spec(s: &HandlerSpec) -> Self {
        Self {
            name: s.name.clone(),
            events_id: s.events_id.to_string(),
            stage: s.stage.as_str().into(),
            status: s.status.as_str().into(),
            priority: s.priority.to_string(),
            kind: s.kind.as_str().into(),
            target: s.target.clone(),
            timeout_ms: s.timeout_ms.to_string(),
            max_attempts: s.max_attempts.to_string(),
            on_failure: s.on_failure.as_str().into(),
            ordered: s.ordered.then(|| "true".into()),
            on_exhausted: s.on_exhausted.as_str().into(),
            conflate: s.conflate.then(|| "true".into()),
            headers: s
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            args: s.args.join("\n"),
            filter: s
                .filter
                .as_ref()
                .map_or_else(String::new, |f| f.as_str().to_owned()),
            request: s
                .request
                .as_ref()
                .and_then(|r| serde_json::to_string_pretty(r.spec()).ok())
                .unwrap_or_default(),
            max_in_flight: s.max_in_flight.map(|n| n.to_string()).unwrap_or_default(),
            rate_limit: s.rate_limit.map(|n| n.to_string()).unwrap_or_default(),
            auto_pause_failures: s
                .auto_pause
                .map(|a| a.failures.to_string())
                .unwrap_or_default(),
            auto_pause_after: s.auto_pause.map_or_else(
                || defaults::AUTO_PAUSE_AFTER.into(),
                |a| format_duration(a.after),
            ),
            auto_pause_probe_every: s.auto_pause.map_or_else(
                || defaults::AUTO_PAUSE_PROBE_EVERY.into(),
                |a| format_duration(a.probe_every),
            ),
            ..Self::default()
        }
    }

    /// Turns the text into a draft the engine may take, or every message
    /// about it: what does not even parse, and what the engine's validation
    /// (the API's too) refuses.
    pub(super) fn to_draft(&self, engine: &Engine) -> Result<HandlerDraft, FieldErrors> {
        let (draft, mut errors) = self.parse();
        if errors.is_empty() {
            return Ok(draft);
        }
        if let Err(refused) = engine.validate_handler(draft) {
            for (field, message) in refused.iter() {
                errors.add(field, message);
            }
        }
        Err(errors)
    }

    /// Whether the form was posted to be saved, not by Preview or Dry run.
    fn saves(&self) -> bool {
        self.preview.is_empty() && self.dry_run.is_empty()
    }

    /// Turns the text into a draft, noting what does not even parse. The
    /// settings of the other kind (headers and the request template for a
    /// script, arguments for HTTP) and of the other stage (the failure
    /// policy after the action; ordering, retries, pace and the automatic
    /// pause before it) are left at their defaults, whatever their fields hold.
    fn parse(&self) -> (HandlerDraft, FieldErrors) {
        let mut errors = FieldErrors::new();
        let mut choice = |field: &str, text: &str| -> String {
            if text.is_empty() {
                errors.add(field, "choose one");
            }
            text.to_owned()
        };
        let stage_text = choice("stage", &self.stage);
        let stage = stage_text.parse().unwrap_or(defaults::STAGE);
        let kind = self.kind.parse().unwrap_or(defaults::KIND);
        let after = stage == Stage::After;
        let mut number = |field: &str, text: &str, default: i64| -> i64 {
            let text = text.trim();
            if text.is_empty() {
                return default;
            }
            text.parse().unwrap_or_else(|_| {
                errors.add(field, "must be a whole number");
                default
            })
        };
        let priority = number("priority", &self.priority, defaults::PRIORITY);
        let timeout_ms = number("timeout_ms", &self.timeout_ms, defaults::timeout_ms(stage));
        let optional = |text: &str| after && !text.trim().is_empty();
        let max_attempts = if after {
            number("max_attempts", &self.max_attempts, defaults::MAX_ATTEMPTS)
        } else {
            defaults::MAX_ATTEMPTS
        };
        let max_in_flight =
            optional(&self.max_in_flight).then(|| number("max_in_flight", &self.max_in_flight, 0));
        let rate_limit =
            optional(&self.rate_limit).then(|| number("rate_limit", &self.rate_limit, 0));
        let auto_pause = optional(&self.auto_pause_failures).then(|| AutoPauseDraft {
            failures: number("auto_pause.failures", &self.auto_pause_failures, 0),
            after: self.auto_pause_after.clone(),
            probe_every: self.auto_pause_probe_every.clone(),
        });
        if self.priority.trim().is_empty() && self.saves() {
            // Never a silent default: the page shows the priority it saves.
            // (Preview and Dry run save nothing, and order nothing.)
            errors.add("priority", "is required: a whole number, lower runs first");
        }
        let http = kind == HandlerKind::Http;
        let mut headers = BTreeMap::new();
        for line in self
            .headers
            .lines()
            .map(str::trim)
            .filter(|l| http && !l.is_empty())
        {
            match line.split_once(':') {
                Some((name, value)) => {
                    headers.insert(name.trim().to_owned(), value.trim().to_owned());
                }
                None => errors.add("headers", format!("{line:?} is not \"Name: value\"")),
            }
        }
        let request = match self.request.trim() {
            "" => None,
            _ if !http => None,
            json => serde_json::from_str(json)
                .map_err(|e| errors.add("request", format!("is not a request template: {e}")))
                .ok(),
        };
        let args = self
            .args
            .lines()
            .map(str::trim_end)
            .filter(|l| !http && !l.is_empty())
            .map(str::to_owned)
            .collect();
        let draft = HandlerDraft {
            name: self.name.clone(),
            events_id: self.events_id.clone(),
            stage,
            status: self.status.parse().unwrap_or(defaults::STATUS),
            priority,
            kind,
            target: self.target.clone(),
            args,
            headers,
            timeout_ms,
            max_attempts,
            ordered: if after {
                self.ordered.is_some()
            } else {
                defaults::ORDERED
            },
            on_failure: if after {
                defaults::ON_FAILURE
            } else {
                self.on_failure.parse().unwrap_or(defaults::ON_FAILURE)
            },
            filter: self.filter.clone(),
            request,
            on_exhausted: if after {
                self.on_exhausted.parse().unwrap_or(defaults::ON_EXHAUSTED)
            } else {
                defaults::ON_EXHAUSTED
            },
            conflate: after && self.conflate.is_some(),
            auto_pause,
            max_in_flight,
            rate_limit,
        };
        (draft, errors)
    }
}
