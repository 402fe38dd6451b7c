//! What one call to a handler produced, whatever the executor.

use std::time::Duration;

use provisio_store::RequestRecord;

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
            duration: Duration::ZERO,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// Bytes as text for the log: UTF-8 where it is, replacement characters where not.
pub fn capped_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Hides the value of a header that carries a credential.
pub fn mask_header(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let secret = [
        "authorization",
        "cookie",
        "token",
        "secret",
        "key",
        "password",
        "signature",
    ]
    .iter()
    .any(|word| lower.contains(word));
    if secret && lower != "webhook-signature" {
        "***".into()
    } else {
        value.into()
    }
}
