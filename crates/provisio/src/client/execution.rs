//! `provisio executions show` for people: one execution as labelled lines,
//! then the request sent and the response, JSON bodies indented.

use serde_json::Value;

use super::text;

/// Prints one execution (the API's JSON) as a person reads it.
pub(super) fn print(e: &Value) {
    let mut status = text(&e["status"]);
    if let Some(verdict) = e["verdict"].as_str() {
        status = format!("{status}, {verdict}");
    }
    if e["test"] == true {
        status.push_str(", test");
    }
    crate::out!("Execution {} ({status})", text(&e["id"]));
    let mut event = format!("{} ({} stage)", text(&e["events_id"]), text(&e["stage"]));
    if let Some(id) = e["event_id"].as_str() {
        event.push_str(&format!(", event {id}"));
    }
    let script = is_script(&e["request"]);
    let lines = [
        ("Date", Some(text(&e["started_at"]))),
        ("Event", Some(event)),
        ("Object", Some(text(&e["object_id"]))),
        (
            "Handler",
            Some(format!(
                "{} (#{})",
                text(&e["handler_name"]),
                text(&e["handler_id"])
            )),
        ),
        ("Delivery", e["delivery_id"].as_str().map(str::to_owned)),
        ("Attempt", Some(text(&e["attempt"]))),
        ("Duration", Some(format!("{} ms", text(&e["duration_ms"])))),
        (
            if script { "Exit code" } else { "Status" },
            Some(
                e["response_status"]
                    .as_u64()
                    .map_or_else(|| "none (no answer)".to_owned(), |s| s.to_string()),
            ),
        ),
        (
            "Next attempt",
            e["next_attempt_at"].as_str().map(str::to_owned),
        ),
        ("Error", e["error"].as_str().map(str::to_owned)),
    ];
    for (label, value) in lines {
        if let Some(value) = value {
            crate::out!("{:<13}{value}", format!("{label}:"));
        }
    }
    let request = &e["request"];
    crate::out!("");
    if script {
        crate::out!("Ran: {}", command_line(request));
    } else {
        crate::out!("Sent: POST {}", text(&request["target"]));
        for (name, value) in request["headers"].as_object().into_iter().flatten() {
            crate::out!("  {name}: {}", text(value));
        }
    }
    crate::out!("{}", pretty(&text(&request["body"])));
    if let Some(after) = e.get("data_after").filter(|v| !v.is_null()) {
        crate::out!("");
        crate::out!("Data as the handler returned it:");
        crate::out!(
            "{}",
            serde_json::to_string_pretty(after).unwrap_or_default()
        );
    }
    crate::out!("");
    let cut = if e["response_truncated"] == true {
        " (cut at 64 KiB)"
    } else {
        ""
    };
    match e["response_body"].as_str() {
        Some(body) if !body.is_empty() => {
            crate::out!("{}{cut}:", if script { "Output" } else { "Response" });
            crate::out!("{}", pretty(body));
        }
        _ => crate::out!("{}: none", if script { "Output" } else { "Response" }),
    }
}

/// A script's call is recorded with its path as the target and its
/// arguments (if any) as JSON under `args`; an HTTP call's target is a URL.
fn is_script(request: &Value) -> bool {
    let target = text(&request["target"]);
    !(target.starts_with("http://") || target.starts_with("https://"))
}

/// The script and its arguments as one line, each argument quoted when it
/// holds a space.
fn command_line(request: &Value) -> String {
    let args: Vec<String> = request["headers"]["args"]
        .as_str()
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    std::iter::once(text(&request["target"]))
        .chain(args.into_iter().map(|a| {
            if a.contains(char::is_whitespace) || a.is_empty() {
                format!("{a:?}")
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON body indented; anything else as it is.
fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_script_call_reads_as_its_command_line() {
        let request = json!({ "target": "sync.sh", "headers": { "args": "[\"--mode\", \"a b\"]" }, "body": "{}" });
        assert!(is_script(&request));
        assert_eq!(command_line(&request), r#"sync.sh --mode "a b""#);
        let http = json!({ "target": "https://x.example/h", "headers": {}, "body": "" });
        assert!(!is_script(&http));
    }

    #[test]
    fn json_bodies_are_indented_and_other_text_is_kept() {
        assert_eq!(pretty(r#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(pretty("account locked"), "account locked");
    }
}
