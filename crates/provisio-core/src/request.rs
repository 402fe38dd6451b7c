//! Request templates: how an HTTP handler calls a REST API that does not take
//! provisio's payload. The method, URL, extra headers and body are Jinja
//! templates (minijinja) over `event` (`events_id`, `object_id`, `dt`) and
//! `data`; `by_event` overrides them per event type, so one handler can serve
//! an object's whole life cycle (`clients.create` → POST, `clients.delete` →
//! DELETE).
//!
//! Rendering is sandboxed by construction: no loader (no file access), no
//! network, a fuel limit on the instructions a render may run, and a cap on
//! what it may write. The rendered URL must stay on the origin of the
//! handler's target, so event data can never steer a call elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};

/// The methods a request template may use, spelled as HTTP spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// The longest template source accepted, per field.
pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;
/// The most a rendered body may hold.
pub const MAX_RENDERED_BODY: usize = 1024 * 1024;
/// The most a rendered URL or header value may hold.
const MAX_RENDERED_LINE: usize = 8 * 1024;
/// Instructions one render may run: enough for any reshaping of one event,
/// far too few for a runaway loop.
const FUEL: u64 = 200_000;

/// A request template as the API and storage hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `POST` when left out.
    #[serde(default)]
    pub method: Option<Method>,
    /// A template for the URL; the handler's target when left out. It must
    /// render to a URL on the target's origin.
    #[serde(default)]
    pub url: Option<String>,
    /// Extra headers, their values templates (added to the handler's own).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A template for the body; provisio's payload when left out.
    #[serde(default)]
    pub body: Option<String>,
    /// Per event type: the fields it names replace the ones above. A `body`
    /// of `null` here sends no body (a DELETE, say).
    #[serde(default)]
    pub by_event: BTreeMap<String, RequestOverride>,
}

/// What one event type changes in a [`RequestSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestOverride {
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub url: Option<String>,
    /// Replaces the headers above when given.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Absent: the body above; `null`: no body; text: this template.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub body: Option<Option<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The request one event makes, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub method: Method,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// `None`: the payload provisio sends by default; `Some(None)`: no body.
    pub body: Option<Option<String>>,
}

/// A checked request template, compiled once per handler change.
#[derive(Clone)]
pub struct RequestTemplate {
    spec: RequestSpec,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for RequestTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

impl PartialEq for RequestTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for RequestTemplate {}

/// The templates one level of a spec holds, by field name.
fn fields<'a>(
    url: Option<&'a String>,
    body: Option<&'a String>,
    headers: Option<&'a BTreeMap<String, String>>,
) -> Vec<(String, &'a String)> {
    let mut all: Vec<(String, &String)> = Vec::new();
    all.extend(url.map(|u| ("url".to_owned(), u)));
    all.extend(body.map(|b| ("body".to_owned(), b)));
    for (h, v) in headers.into_iter().flatten() {
        all.push((format!("headers.{h}"), v));
    }
    all
}

/// Where a field's template is kept in the environment.
fn name(event: Option<&str>, field: &str) -> String {
    match event {
        None => field.to_owned(),
        Some(e) => format!("{e}/{field}"),
    }
}

impl RequestTemplate {
    /// Compiles every template, so errors surface when the handler is saved;
    /// an error names the field (`request.url`, `request.by_event.clients.delete.body`).
    pub fn compile(spec: RequestSpec) -> Result<Self, (String, String)> {
        // The built-in filters and tests, no loader: a template can reach
        // no file, and `include`/`import` find nothing.
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(32);
        let mut add = |event: Option<&str>, field: &str, source: &str| {
            let path = match event {
                None => format!("request.{field}"),
                Some(e) => format!("request.by_event.{e}.{field}"),
            };
            if source.len() > MAX_TEMPLATE_LEN {
                return Err((path, format!("must be at most {MAX_TEMPLATE_LEN} bytes")));
            }
            env.add_template_owned(name(event, field), source.to_owned())
                .map_err(|e| (path, e.to_string()))
        };
        for (field, source) in fields(spec.url.as_ref(), spec.body.as_ref(), Some(&spec.headers)) {
            add(None, &field, source)?;
        }
        for (event, o) in &spec.by_event {
            crate::catalog::validate_event_type_id(event)
                .map_err(|e| (format!("request.by_event.{event}"), e))?;
            let body = o.body.as_ref().and_then(Option::as_ref);
            for (field, source) in fields(o.url.as_ref(), body, o.headers.as_ref()) {
                add(Some(event), &field, source)?;
            }
        }
        Ok(Self {
            spec,
            env: Arc::new(env),
        })
    }

    pub fn spec(&self) -> &RequestSpec {
        &self.spec
    }

    /// Renders the request for one event. `target` is the handler's URL: the
    /// default URL, and the origin the rendered one must keep.
    pub fn render(
        &self,
        target: &str,
        events_id: &str,
        object_id_json: &str,
        dt: &str,
        data_json: &str,
    ) -> Result<Rendered, String> {
        let ctx = Value::from(minijinja::value::Serde(crate::event::as_value(
            events_id,
            object_id_json,
            dt,
            data_json,
        )?));
        let over = self.spec.by_event.get(events_id);
        let render = |event: Option<&str>, field: &str, cap: usize| -> Result<String, String> {
            let template = self
                .env
                .get_template(&name(event, field))
                .map_err(|e| e.to_string())?;
            let mut out = Capped::new(cap);
            template
                .render_captured_to(ctx.clone(), &mut out)
                .map_err(|e| match out.overflowed {
                    true => format!("the rendered {field} is over {cap} bytes"),
                    false => format!("{field}: {e}"),
                })?;
            String::from_utf8(out.bytes).map_err(|_| format!("the rendered {field} is not UTF-8"))
        };
        let event_of = |set: bool| set.then_some(events_id);

        let method = over
            .and_then(|o| o.method)
            .or(self.spec.method)
            .unwrap_or(Method::Post);
        let own_url = over.is_some_and(|o| o.url.is_some());
        let url = if own_url || self.spec.url.is_some() {
            render(event_of(own_url), "url", MAX_RENDERED_LINE)?
        } else {
            target.to_owned()
        };
        check_origin(target, url.trim())?;

        let own_headers = over.and_then(|o| o.headers.as_ref());
        let mut headers = BTreeMap::new();
        for name in own_headers.unwrap_or(&self.spec.headers).keys() {
            let value = render(
                event_of(own_headers.is_some()),
                &format!("headers.{name}"),
                MAX_RENDERED_LINE,
            )?;
            headers.insert(name.clone(), value.trim().to_owned());
        }

        let body = match over.and_then(|o| o.body.as_ref()) {
            Some(None) => Some(None),
            Some(Some(_)) => Some(Some(render(Some(events_id), "body", MAX_RENDERED_BODY)?)),
            None if self.spec.body.is_some() => {
                Some(Some(render(None, "body", MAX_RENDERED_BODY)?))
            }
            None => None,
        };
        if let Some(Some(body)) = &body
            && is_json(&headers)
        {
            serde_json::from_str::<serde::de::IgnoredAny>(body)
                .map_err(|e| format!("the rendered body is not valid JSON ({e}); set a Content-Type header if it is not meant to be"))?;
        }
        Ok(Rendered {
            method,
            url: url.trim().to_owned(),
            headers,
            body,
        })
    }
}

/// Whether the body is JSON: unless a template header says otherwise.
fn is_json(headers: &BTreeMap<String, String>) -> bool {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .is_none_or(|(_, v)| v.to_ascii_lowercase().contains("json"))
}

/// A rendered URL must keep the target's scheme, host and port.
fn check_origin(target: &str, rendered: &str) -> Result<(), String> {
    let target = url::Url::parse(target).map_err(|e| format!("the target is not a URL: {e}"))?;
    let url = url::Url::parse(rendered)
        .map_err(|e| format!("the rendered URL {rendered:?} is not a URL: {e}"))?;
    if url.origin() != target.origin() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the rendered URL {rendered:?} leaves the target's origin {}",
            target.origin().ascii_serialization()
        ));
    }
    Ok(())
}

/// A writer that refuses to grow past `cap`, so a render stops there.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            overflowed: false,
        }
    }
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("output cap reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
