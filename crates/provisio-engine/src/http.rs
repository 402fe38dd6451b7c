//! The HTTP executor: one POST of the payload to a handler's URL (or the
//! request its template renders), with the Standard Webhooks headers, the
//! handler's own headers and its timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use provisio_core::handler::{Handler, masked_target};
use provisio_core::request::{Rendered, RequestTemplate};
use provisio_store::RequestRecord;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};

use crate::netguard::{CheckedTargets, DenyList, GuardedResolver};
use crate::outcome::{CallContext, CallOutcome, capped_text, mask_header};

#[derive(Clone)]
pub struct HttpExecutor {
    client: reqwest::Client,
    targets: CheckedTargets,
    user_agent: HeaderValue,
    body_cap: usize,
}

impl HttpExecutor {
    /// `idle_per_host` is how many idle connections to keep per receiver
    /// host: the engine's in-flight limit, so a host that takes every call at
    /// once (many handlers to one gateway, a fan-out) gets its connections
    /// back for the next calls instead of closing the surplus and connecting
    /// again; never more than the calls that can be open at once, and idle
    /// ones close after a minute.
    pub fn new(deny: DenyList, body_cap: usize, idle_per_host: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(GuardedResolver { deny: deny.clone() })
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let user_agent = HeaderValue::from_str(&format!("provisio/{}", env!("CARGO_PKG_VERSION")))?;
        Ok(Self {
            client,
            targets: CheckedTargets::new(deny),
            user_agent,
            body_cap,
        })
    }

    /// POSTs `payload` to the handler, or sends what its request template
    /// renders from it. `msg_id` is the delivery id (`webhook-id`), stable
    /// across retries so receivers can drop duplicates. The signature covers
    /// the body actually sent.
    pub async fn call(
        &self,
        handler: &Handler,
        call: &CallContext<'_>,
        payload: String,
        timeout: Duration,
    ) -> CallOutcome {
        let started = Instant::now();
        match self.prepare(handler, call.msg_id, payload) {
            Ok(prepared) => self.send(prepared, timeout, started).await,
            Err((e, payload)) => {
                let mut outcome = CallOutcome::new(RequestRecord {
                    target: masked_target(&handler.spec.target).into_owned(),
                    headers: BTreeMap::new(),
                    body: payload,
                });
                outcome.error = Some(format!("the request template failed: {e}"));
                outcome.permanent = true;
                outcome.duration = started.elapsed();
                outcome
            }
        }
    }

    /// The request a call sends, signed, without sending it: what a handler
    /// test previews. Fails only when the request template cannot render,
    /// and then hands the payload back. The payload is moved, not copied:
    /// this runs for every attempt.
    pub fn prepare(
        &self,
        handler: &Handler,
        msg_id: &str,
        payload: String,
    ) -> Result<Prepared, (String, String)> {
        let (method, url, extra, body) = match &handler.spec.request {
            None => (Method::POST, handler.spec.target.clone(), None, payload),
            Some(template) => {
                let r = match render(template, &handler.spec.target, &payload) {
                    Ok(r) => r,
                    Err(e) => return Err((e, payload)),
                };
                let body = match r.body {
                    None => payload,
                    Some(None) => String::new(),
                    Some(Some(body)) => body,
                };
                (method_of(r.method), r.url, Some(r.headers), body)
            }
        };
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = handler.secret.sign(msg_id, timestamp, body.as_bytes());

        let mut headers = HeaderMap::with_capacity(8 + handler.spec.headers.len());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in handler.spec.headers.iter().chain(extra.iter().flatten()) {
            // Validated when the handler was saved.
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(name, value);
            }
        }
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(
            "webhook-id",
            HeaderValue::from_str(msg_id).expect("ULIDs are valid header values"),
        );
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
        );

        Ok(Prepared {
            method,
            url,
            headers,
            body,
        })
    }

    async fn send(&self, prepared: Prepared, timeout: Duration, started: Instant) -> CallOutcome {
        let Prepared {
            method,
            url,
            headers,
            body,
        } = prepared;
        // The log shows the method only where it is not the usual POST.
        let target = masked_target(&url);
        let request = RequestRecord {
            target: if method == Method::POST {
                target.into_owned()
            } else {
                format!("{method} {target}")
            },
            headers: record_headers(&headers),
            body,
        };
        let mut outcome = CallOutcome::new(request);

        let url = match self.targets.check(&url) {
            Ok(url) => url,
            Err(e) => {
                outcome.error = Some(e);
                outcome.duration = started.elapsed();
                return outcome;
            }
        };

        let sent = self
            .client
            .request(method, url)
            .headers(headers)
            .body(outcome.request.body.clone())
            .timeout(timeout)
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status();
                outcome.status = Some(status.as_u16());
                outcome.retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(parse_retry_after);
                let mut body = Vec::new();
                let mut truncated = false;
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = self.body_cap.saturating_sub(body.len());
                            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if chunk.len() > room {
                                // Stop reading: the connection is dropped rather
                                // than drained, which is cheaper than a flood.
                                truncated = true;
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            outcome.error = Some(describe(&e, timeout));
                            break;
                        }
                    }
                }
                outcome.body = Some(capped_text(&body));
                outcome.truncated = truncated;
                if outcome.error.is_none() && !status.is_success() {
                    outcome.error = Some(format!("the receiver answered {status}"));
                }
            }
            Err(e) => outcome.error = Some(describe(&e, timeout)),
        }
        outcome.duration = started.elapsed();
        outcome
    }
}

/// A request ready to send.
pub struct Prepared {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Prepared {
    /// The headers as the log and a preview show them: credentials masked.
    pub fn shown_headers(&self) -> BTreeMap<String, String> {
        record_headers(&self.headers)
    }
}

/// The request `template` renders for the event in `payload` (provisio's own
/// JSON, so its parts are read back exactly as they were written).
fn render(template: &RequestTemplate, target: &str, payload: &str) -> Result<Rendered, String> {
    #[derive(serde::Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        event: PayloadEvent<'a>,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    #[derive(serde::Deserialize)]
    struct PayloadEvent<'a> {
        dt: &'a str,
        events_id: &'a str,
        #[serde(borrow)]
        object_id: &'a serde_json::value::RawValue,
    }
    let p: Payload = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    template.render(
        target,
        p.event.events_id,
        p.event.object_id.get(),
        p.event.dt,
        p.data.get(),
    )
}

fn method_of(method: provisio_core::request::Method) -> Method {
    use provisio_core::request::Method as M;
    match method {
        M::Post => Method::POST,
        M::Put => Method::PUT,
        M::Patch => Method::PATCH,
        M::Delete => Method::DELETE,
    }
}

/// The headers as recorded in the execution log, with credentials masked.
fn record_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("(binary)");
            (name.as_str().to_owned(), mask_header(name.as_str(), value))
        })
        .collect()
}

/// A readable cause for a failed call, walking reqwest's error chain (its top
/// message alone says only "error sending request").
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    provisio_core::error_line(err)
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(wait.try_into().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("120")),
            Some(Duration::from_secs(120))
        );
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    proptest::proptest! {
        /// Whatever bytes a receiver sends as `Retry-After`, reading them
        /// never panics.
        #[test]
        fn any_retry_after_is_read_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            text in proptest::prop_oneof![
                ".*",
                "[ 0-9]{0,25}",
                "(Mon|Tue|Wed), [0-9]{1,2} (Jan|Oct|Dec) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|[+-][0-9]{4})",
            ],
        ) {
            for value in [HeaderValue::from_bytes(&bytes), HeaderValue::from_str(&text)]
                .into_iter()
                .flatten()
            {
                let _ = parse_retry_after(&value);
            }
        }

        /// Seconds read back as the same number of seconds, spaces around
        /// them allowed.
        #[test]
        fn retry_after_seconds_round_trip(seconds in proptest::prelude::any::<u64>()) {
            let value = HeaderValue::from_str(&format!(" {seconds} ")).unwrap();
            proptest::prop_assert_eq!(parse_retry_after(&value), Some(Duration::from_secs(seconds)));
        }

        /// A date is a wait until then: never negative, and no longer than
        /// the time to it.
        #[test]
        fn retry_after_dates_wait_until_then(offset in -10_000_000i64..10_000_000) {
            let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset);
            let text = at
                .format(&time::format_description::well_known::Rfc2822)
                .unwrap();
            let wait = parse_retry_after(&HeaderValue::from_str(&text).unwrap()).unwrap();
            let most = Duration::from_secs(offset.max(0).unsigned_abs() + 1);
            proptest::prop_assert!(wait <= most, "{text}: {wait:?} > {most:?}");
        }
    }
}
