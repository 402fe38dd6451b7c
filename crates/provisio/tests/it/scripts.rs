//! Script handlers at both stages: environment, replies, failures, timeouts
//! that take the whole process group, output floods, retries and ordering.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) async fn run_before(app: &TestApp, data: Value) -> Value {
    let (status, body) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.create", "object_id": "c-9", "data": data }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub(crate) fn script(target: &str, extra: Value) -> Value {
    let mut body = json!({ "stage": "before", "kind": "script", "target": target });
    merge(&mut body, extra);
    body
}

#[tokio::test]
async fn a_script_gets_the_payload_and_a_cleared_environment_and_can_change_the_data() {
    let app = TestApp::spawn().await;
    app.write_script(
        "enrich.sh",
        r#"#!/bin/sh
payload=$(cat)
printf '{"data": {"stage": "%s", "events_id": "%s", "object_id": "%s", "event_id_set": %s, "home": "%s", "args": "%s %s", "got": %s}}' \
  "$PROVISIO_STAGE" "$PROVISIO_EVENTS_ID" "$PROVISIO_OBJECT_ID" \
  "$([ -n "$PROVISIO_EVENT_ID" ] && echo true || echo false)" "$HOME" "$1" "$2" "$payload"
"#,
    );
    app.create_handler(script("enrich.sh", json!({ "args": ["--mode", "full"] })))
        .await;
    let verdict = run_before(&app, json!({ "name": "ACME" })).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    let data = &verdict["data"];
    assert_eq!(data["stage"], "before");
    assert_eq!(data["events_id"], "clients.create");
    assert_eq!(data["object_id"], "c-9");
    assert_eq!(data["event_id_set"], true);
    assert_eq!(data["home"], "", "the environment is cleared");
    assert_eq!(data["args"], "--mode full");
    assert_eq!(
        data["got"]["data"],
        json!({ "name": "ACME" }),
        "the payload is on stdin"
    );
    assert_eq!(data["got"]["event"]["object_id"], "c-9");
}

/// Whatever runs the script (the supervisor blocks signals to read them)
/// leaves it no signal blocked.
#[tokio::test]
async fn a_script_starts_with_no_signal_blocked() {
    let app = TestApp::spawn().await;
    // Not a shell, which would reset the mask itself: cat prints its status.
    app.write_script("status", "#!/bin/cat /proc/self/status\n");
    app.create_handler(script("status", json!({}))).await;
    run_before(&app, json!({})).await;
    let row = app.wait_executions("stage=before", 1).await.remove(0);
    let status = row["response_body"].as_str().unwrap();
    assert!(status.contains("\nSigBlk:\t0000000000000000\n"), "{status}");
}

/// A script may signal its own process group (`kill 0`), which holds its
/// supervisor too: that must not end the run.
#[tokio::test]
async fn a_script_that_signals_its_process_group_still_replies() {
    let app = TestApp::spawn().await;
    app.write_script(
        "group.sh",
        "#!/bin/sh\ncat > /dev/null\ntrap '' TERM HUP INT\nkill -TERM 0\nkill -HUP 0\nkill -INT 0\necho '{\"data\": {\"ok\": true}}'\n",
    );
    app.create_handler(script("group.sh", json!({}))).await;
    let verdict = run_before(&app, json!({})).await;
    assert_eq!(verdict["data"], json!({ "ok": true }), "{verdict}");
}

#[tokio::test]
async fn a_script_that_exits_non_zero_fails_with_its_stderr() {
    let app = TestApp::spawn().await;
    app.write_script(
        "fail.sh",
        "#!/bin/sh\ncat > /dev/null\necho 'switch unreachable' >&2\nexit 3\n",
    );
    let h = app.create_handler(script("fail.sh", json!({}))).await;
    let verdict = run_before(&app, json!({})).await;
    assert_eq!(
        verdict["allowed"], false,
        "on_failure forbid is the default"
    );
    assert_eq!(verdict["handler_id"], h["id"]);
    let error = verdict["executions"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("status 3") && error.contains("switch unreachable"),
        "{error}"
    );
    let row = app.wait_executions("stage=before", 1).await.remove(0);
    assert_eq!(row["status"], "fail");
    assert_eq!(
        row["response_status"], 3,
        "the exit code stands in the status"
    );
}

#[tokio::test]
async fn a_script_forbids_by_its_reply() {
    let app = TestApp::spawn().await;
    app.write_script(
        "guard.sh",
        "#!/bin/sh\ncat > /dev/null\necho '{\"allow\": false, \"reason\": \"negative balance\"}'\n",
    );
    app.create_handler(script("guard.sh", json!({}))).await;
    let verdict = run_before(&app, json!({})).await;
    assert_eq!(verdict["allowed"], false);
    assert_eq!(verdict["reason"], "negative balance");
}

pub(crate) fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn a_script_past_its_timeout_is_killed_with_everything_it_started() {
    let app = TestApp::spawn().await;
    let pids = app.dir.path().join("pids");
    app.write_script(
        "hang.sh",
        &format!(
            "#!/bin/sh\nsleep 60 &\necho $! > {}\necho $$ >> {}\nsleep 60\n",
            pids.display(),
            pids.display()
        ),
    );
    app.create_handler(script(
        "hang.sh",
        json!({ "timeout_ms": 300, "on_failure": "allow" }),
    ))
    .await;
    let started = std::time::Instant::now();
    let verdict = run_before(&app, json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(verdict["allowed"], true);
    assert!(
        verdict["executions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{verdict}"
    );
    let pids: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "processes {pids:?} outlived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_flood_of_output_is_capped_without_blocking_the_script() {
    let app = TestApp::spawn().await;
    app.write_script(
        "flood.sh",
        "#!/bin/sh\ncat > /dev/null\nhead -c 5000000 /dev/zero | tr '\\0' 'x'\nhead -c 5000000 /dev/zero | tr '\\0' 'y' >&2\n",
    );
    app.create_handler(script("flood.sh", json!({ "timeout_ms": 20000 })))
        .await;
    let started = std::time::Instant::now();
    let verdict = run_before(&app, json!({ "k": 1 })).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // A reply cut at the cap cannot be read: the handler failed, and its
    // on_failure (forbid) decides.
    assert_eq!(verdict["allowed"], false, "{}", verdict["executions"]);
    assert_eq!(verdict["executions"][0]["outcome"], "failed");
    assert!(
        verdict["reason"].as_str().unwrap().contains("was cut"),
        "{verdict}"
    );
    let row = app.wait_executions("stage=before", 1).await.remove(0);
    assert_eq!(row["response_truncated"], true);
    assert_eq!(row["response_body"].as_str().unwrap().len(), 64 * 1024);
}

#[tokio::test]
async fn a_script_changed_since_it_was_saved_fails_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    app.write_script("gone.sh", "#!/bin/sh\nexit 0\n");
    app.create_handler(script("gone.sh", json!({ "on_failure": "allow" })))
        .await;
    let path = app.scripts_dir().join("gone.sh");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let verdict = run_before(&app, json!({})).await;
    assert!(
        verdict["executions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not executable"),
        "{verdict}"
    );
    std::fs::remove_file(&path).unwrap();
    let verdict = run_before(&app, json!({})).await;
    assert!(
        verdict["executions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{verdict}"
    );
}

#[tokio::test]
async fn after_stage_scripts_are_retried_and_ordered_like_http() {
    let app = TestApp::spawn().await;
    let log = app.dir.path().join("calls.log");
    let count = app.dir.path().join("count");
    // Fails its first two calls, then logs each payload's seq and succeeds.
    app.write_script(
        "sync.sh",
        r#"#!/bin/sh
payload=$(cat)
n=$(cat "$2" 2>/dev/null || echo 0)
echo $((n + 1)) > "$2"
if [ "$n" -lt 2 ]; then echo "not yet" >&2; exit 1; fi
echo "$PROVISIO_STAGE $PROVISIO_OBJECT_ID $payload" >> "$1"
"#,
    );
    app.create_handler(json!({
        "kind": "script", "target": "sync.sh",
        "args": [log.to_str().unwrap(), count.to_str().unwrap()],
        "events_id": "clients.*",
    }))
    .await;
    for seq in 0..3 {
        app.emit("clients.update", json!(7), json!({ "seq": seq }))
            .await;
    }
    let rows = app.wait_executions("status=success", 3).await;
    assert_eq!(rows.len(), 3);
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let seqs: Vec<i64> = lines
        .iter()
        .map(|l| {
            assert!(l.starts_with("after 7 "), "{l}");
            let payload: Value = serde_json::from_str(l.trim_start_matches("after 7 ")).unwrap();
            payload["data"]["seq"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2], "delivered in emit order");
    let failures = app.executions("status=fail").await;
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .all(|f| f["error"].as_str().unwrap().contains("not yet"))
    );
    assert!(
        failures
            .iter()
            .all(|f| f["object_id"] == 7 && f["stage"] == "after")
    );
}
