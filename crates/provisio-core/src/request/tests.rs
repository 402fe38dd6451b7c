use super::*;

const TARGET: &str = "https://switch.example.net:8443/api/v2/hooks";

fn spec(json: serde_json::Value) -> RequestSpec {
    serde_json::from_value(json).unwrap()
}

fn render(spec_json: serde_json::Value, events_id: &str, data: &str) -> Result<Rendered, String> {
    RequestTemplate::compile(spec(spec_json))
        .map_err(|(f, e)| format!("{f}: {e}"))?
        .render(TARGET, events_id, "42", "2026-11-27T10:00:00+00:00", data)
}

#[test]
fn a_customer_life_cycle_is_one_template_with_per_event_overrides() {
    let template = serde_json::json!({
        "method": "PUT",
        "url": "https://switch.example.net:8443/api/v2/customers/{{ event.object_id }}",
        "headers": { "X-Request-Kind": "{{ event.events_id }}" },
        "body": "{\"name\": {{ data.name|tojson }}, \"credit\": {{ data.balance }}}",
        "by_event": {
            "clients.create": { "method": "POST", "url": "https://switch.example.net:8443/api/v2/customers" },
            "clients.delete": { "method": "DELETE", "body": null }
        }
    });
    let data = r#"{"name":"ACME \"Telecom\"","balance":12.5}"#;
    let update = render(template.clone(), "clients.update", data).unwrap();
    assert_eq!(update.method, Method::Put);
    assert_eq!(
        update.url,
        "https://switch.example.net:8443/api/v2/customers/42"
    );
    assert_eq!(update.headers["X-Request-Kind"], "clients.update");
    let body: serde_json::Value =
        serde_json::from_str(update.body.clone().unwrap().as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "name": "ACME \"Telecom\"", "credit": 12.5 })
    );

    let create = render(template.clone(), "clients.create", data).unwrap();
    assert_eq!(
        (create.method, create.url.as_str()),
        (
            Method::Post,
            "https://switch.example.net:8443/api/v2/customers"
        )
    );
    assert_eq!(create.body, update.body, "the body is inherited");

    let delete = render(template, "clients.delete", "{}").unwrap();
    assert_eq!(delete.method, Method::Delete);
    assert_eq!(delete.body, Some(None), "no body");
}

#[test]
fn without_url_or_body_the_target_and_the_payload_are_kept() {
    let r = render(
        serde_json::json!({ "method": "PATCH" }),
        "clients.update",
        "{}",
    )
    .unwrap();
    assert_eq!(
        (r.method, r.url.as_str(), r.body),
        (Method::Patch, TARGET, None)
    );
}

#[test]
fn event_data_can_never_leave_the_targets_origin() {
    for url in [
        "{{ data.url }}",
        "https://switch.example.net/api/{{ data.id }}",
        "https://switch.example.net:8443@evil.example/",
        "http://switch.example.net:8443/",
        "https://user:pw@switch.example.net:8443/",
        "{{ data.id }}",
    ] {
        let err = render(
            serde_json::json!({ "url": url }),
            "clients.update",
            r#"{"url":"https://evil.example/","id":"1"}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("origin") || err.contains("not a URL"),
            "{url}: {err}"
        );
    }
    // A path or query built from data stays on the origin and is allowed.
    let r = render(
        serde_json::json!({ "url": "https://switch.example.net:8443/c/{{ data.id|urlencode }}?x=1" }),
        "clients.update",
        r#"{"id":"a/../b c"}"#,
    );
    // (`urlencode` keeps `/`, as Jinja's does; the origin holds either way.)
    assert_eq!(
        r.unwrap().url,
        "https://switch.example.net:8443/c/a/../b%20c?x=1"
    );
}

#[test]
fn errors_surface_when_saved_and_when_rendered() {
    let err =
        RequestTemplate::compile(spec(serde_json::json!({ "body": "{{ data.name " }))).unwrap_err();
    assert_eq!(err.0, "request.body");
    let err = RequestTemplate::compile(spec(serde_json::json!({
        "by_event": { "clients.delete": { "url": "{% if %}" } }
    })))
    .unwrap_err();
    assert_eq!(err.0, "request.by_event.clients.delete.url");

    // A missing key is an error, not an empty string.
    let err = render(
        serde_json::json!({ "body": "{\"n\": {{ data.missing }}}" }),
        "clients.update",
        "{}",
    )
    .unwrap_err();
    assert!(err.contains("undefined"), "{err}");
    // A JSON body must be JSON.
    let err = render(
        serde_json::json!({ "body": "{\"n\": {{ data.name }}}" }),
        "clients.update",
        r#"{"name":"x y"}"#,
    )
    .unwrap_err();
    assert!(err.contains("not valid JSON"), "{err}");
    // Unless the template says it is something else.
    let r = render(
        serde_json::json!({ "headers": { "Content-Type": "text/plain" }, "body": "name={{ data.name }}" }),
        "clients.update",
        r#"{"name":"x y"}"#,
    )
    .unwrap();
    assert_eq!(r.body, Some(Some("name=x y".into())));
}

#[test]
fn a_hostile_template_runs_out_of_fuel_or_room_instead_of_running_on() {
    for body in [
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% include 'etc/passwd' %}",
    ] {
        let started = std::time::Instant::now();
        let err = render(
            serde_json::json!({ "headers": { "Content-Type": "text/plain" }, "body": body }),
            "clients.update",
            "{}",
        );
        assert!(err.is_err(), "{body}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{body}"
        );
    }
}
