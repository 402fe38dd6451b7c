//! What one call to a handler produced, whatever the executor.

use std::time::Duration;

use provisio_core::event::{ExecutionStatus, ObjectId, Verdict};
use provisio_core::handler::{Handler, Stage};
use provisio_store::{ExecutionRecord, RequestRecord};
use time::OffsetDateTime;

/// How much of a response body the execution log keeps.
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;

/// Who is being called about what: the identifiers every executor passes on
/// (HTTP as `webhook-id`, scripts as `PROVISIO_*` variables).
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// Unique per message and stable across its retries: the `webhook-id`.
    pub msg_id: &'a str,
    pub event_id: &'a str,
    pub events_id: &'a str,
    pub object_id: &'a str,
    pub stage: provisio_core::handler::Stage,
}

#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub request: RequestRecord,
    /// The HTTP status (or a script's exit code), when the call got that far.
    pub status: Option<u16>,
    pub body: Option<String>,
    pub truncated: bool,
    /// Why the call failed; `None` on success.
    pub error: Option<String>,
    /// A receiver's `Retry-After`.
    pub retry_after: Option<Duration>,
    /// A failure no retry can mend (the request template cannot render this
    /// event): the delivery fails at once.
    pub permanent: bool,
    pub duration: Duration,
}

impl CallOutcome {
    pub fn new(request: RequestRecord) -> Self {
        Self {
            request,
            status: None,
            body: None,
            truncated: false,
            error: None,
            retry_after: None,
            permanent: false,
            duration: Duration::ZERO,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// Who was called about what, as the execution log keeps it: everything an
/// execution row holds besides what the call produced.
pub(crate) struct LoggedCall<'a> {
    pub(crate) handler: &'a Handler,
    /// The delivery an after-stage attempt belongs to; `None` before.
    pub(crate) delivery_id: Option<String>,
    /// The event, or the before-stage run.
    pub(crate) event_id: String,
    pub(crate) events_id: String,
    pub(crate) object_id: ObjectId,
    pub(crate) stage: Stage,
    pub(crate) attempt: u32,
    pub(crate) started_at: OffsetDateTime,
    /// When a failed attempt runs again.
    pub(crate) next_attempt_at: Option<OffsetDateTime>,
    /// The data a before-stage handler replaced.
    pub(crate) data_after: Option<String>,
    /// A handler test's call.
    pub(crate) test: bool,
    /// A before-stage call's verdict.
    pub(crate) verdict: Option<Verdict>,
}

impl LoggedCall<'_> {
    /// The execution row for this call and what it produced. `error` is the
    /// failure the log records (`None`: a success): an attempt's is the
    /// outcome's own, a before-stage step's is read from the reply.
    pub(crate) fn record(self, outcome: CallOutcome, error: Option<String>) -> ExecutionRecord {
        ExecutionRecord {
            id: 0,
            delivery_id: self.delivery_id,
            handler_id: self.handler.id,
            handler_name: self.handler.spec.name.clone(),
            event_id: Some(self.event_id),
            events_id: self.events_id,
            object_id: self.object_id,
            stage: self.stage,
            attempt: self.attempt,
            status: if error.is_none() {
                ExecutionStatus::Success
            } else {
                ExecutionStatus::Fail
            },
            started_at: self.started_at,
            duration_ms: millis(outcome.duration),
            response_status: outcome.status,
            response_body: outcome.body,
            response_truncated: outcome.truncated,
            error,
            next_attempt_at: self.next_attempt_at,
            request: outcome.request,
            data_after: self.data_after,
            test: self.test,
            verdict: self.verdict,
        }
    }
}

/// A duration as the log's whole milliseconds.
pub(crate) fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX.into()) as u32
}

/// Bytes as text for the log: UTF-8 where it is, replacement characters where
/// not, and for NUL (`provisio_core::without_nul`): it also becomes a
/// delivery's last error.
pub fn capped_text(bytes: &[u8]) -> String {
    provisio_core::without_nul(&String::from_utf8_lossy(bytes)).into_owned()
}

/// Hides the value of a header that carries a credential: one whose name
/// holds any of these words, in any case, but the webhook's own signature.
pub fn mask_header(name: &str, value: &str) -> String {
    const SECRET: [&str; 7] = [
        "authorization",
        "cookie",
        "token",
        "secret",
        "key",
        "password",
        "signature",
    ];
    // A plain scan of the name per word: `str::contains` sets up a
    // substring searcher per call, most of the cost of recording an
    // attempt's headers (issue 15), and the name would need lowercasing.
    let holds = |word: &str| {
        name.as_bytes()
            .windows(word.len())
            .any(|part| part.eq_ignore_ascii_case(word.as_bytes()))
    };
    if SECRET.iter().any(|word| holds(word)) && !name.eq_ignore_ascii_case("webhook-signature") {
        "***".into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::mask_header;

    #[test]
    fn credentials_are_masked_whatever_the_spelling_and_the_signature_is_not() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "set-cookie",
            "X-Auth-Token",
            "x-api-key",
            "X-KEY",
            "client_secret",
            "db-PASSWORD",
            "x-hub-signature-256",
        ] {
            assert_eq!(mask_header(name, "hunter2"), "***", "{name}");
        }
        for name in [
            "webhook-signature",
            "Webhook-Signature",
            "content-type",
            "webhook-id",
            "user-agent",
            "k",
            "",
        ] {
            assert_eq!(mask_header(name, "v"), "v", "{name}");
        }
    }
}
