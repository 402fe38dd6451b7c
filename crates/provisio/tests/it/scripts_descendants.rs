//! Scripts leave nothing behind: children in a new session, double-forked
//! daemons and runs whose caller went away are killed with the script, by
//! the supervisor every script runs under.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::scripts::{alive, run_before, script};

/// How a script starts its `sleep 300` in a new session, so outside its
/// process group.
#[derive(Clone, Copy)]
enum Detach {
    /// With its output to /dev/null.
    Quiet,
    /// Holding the script's stdout open.
    HoldingStdout,
    /// From a subshell that exits at once, as a daemon double-forks.
    DoubleForked,
}

/// A script that starts `sleep 300` in a new session with its pid in
/// `pidfile`, waits until that is written, then runs `rest`.
fn detaching_script(pidfile: &std::path::Path, how: Detach, rest: &str) -> String {
    let p = pidfile.display();
    let sleeper = format!(
        "setsid sh -c 'echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec sleep 300' {p} </dev/null 2>/dev/null"
    );
    let start = match how {
        Detach::Quiet => format!("{sleeper} >/dev/null &"),
        Detach::HoldingStdout => format!("{sleeper} &"),
        Detach::DoubleForked => format!("( {sleeper} >/dev/null & )"),
    };
    format!("#!/bin/sh\ncat > /dev/null\n{start}\nwhile [ ! -e {p} ]; do sleep 0.01; done\n{rest}")
}

/// A before-stage script that replies with new data while a child in a new
/// session holds its stdout open.
fn reply_with_stdout_held(pidfile: &std::path::Path) -> String {
    detaching_script(
        pidfile,
        Detach::HoldingStdout,
        "echo '{\"data\": {\"changed\": true}}'\n",
    )
}

/// Fails unless the process whose pid is in `pidfile` is gone (soon); kills
/// it first so a failing run leaves nothing behind.
async fn assert_gone(pidfile: &std::path::Path) {
    let pid: u32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("process {pid}, started with setsid, outlived its script");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_child_in_a_new_session_does_not_outlive_its_script() {
    let app = TestApp::spawn().await;
    let pidfile = app.dir.path().join("child.pid");
    app.write_script("detach.sh", &detaching_script(&pidfile, Detach::Quiet, ""));
    app.create_handler(json!({ "kind": "script", "target": "detach.sh" }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    app.wait_executions("status=success", 1).await;
    assert_gone(&pidfile).await;
}

#[tokio::test]
async fn a_child_in_a_new_session_does_not_outlive_a_timeout() {
    let app = TestApp::spawn().await;
    let pidfile = app.dir.path().join("child.pid");
    app.write_script(
        "detach.sh",
        &detaching_script(&pidfile, Detach::Quiet, "sleep 60\n"),
    );
    app.create_handler(script(
        "detach.sh",
        json!({ "timeout_ms": 1000, "on_failure": "allow" }),
    ))
    .await;
    let verdict = run_before(&app, json!({})).await;
    assert_gone(&pidfile).await;
    let error = verdict["executions"][0]["error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{verdict}");
}

#[tokio::test]
async fn a_double_forked_daemon_does_not_outlive_its_script() {
    let app = TestApp::spawn().await;
    let pidfile = app.dir.path().join("daemon.pid");
    app.write_script(
        "daemon.sh",
        &detaching_script(&pidfile, Detach::DoubleForked, ""),
    );
    app.create_handler(script("daemon.sh", json!({}))).await;
    let verdict = run_before(&app, json!({})).await;
    assert_gone(&pidfile).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
}

/// A caller that stops waiting (a before-stage client that went away) takes
/// the run down with everything it started.
#[tokio::test]
async fn an_abandoned_run_leaves_nothing_behind() {
    let app = TestApp::spawn().await;
    let child = app.dir.path().join("child.pid");
    let script_pid = app.dir.path().join("script.pid");
    app.write_script(
        "slow.sh",
        &detaching_script(
            &child,
            Detach::Quiet,
            &format!(
                "echo $$ > {p}.tmp && mv {p}.tmp {p}\nsleep 60\n",
                p = script_pid.display()
            ),
        ),
    );
    app.create_handler(script("slow.sh", json!({ "timeout_ms": 20000 })))
        .await;
    let request = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/api/v1/events/before");
        async move {
            client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "events_id": "clients.create", "object_id": 1, "data": {} }))
                .send()
                .await
        }
    });
    let deadline = std::time::Instant::now() + PATIENCE;
    while !script_pid.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the script never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request.abort();
    assert_gone(&child).await;
    assert_gone(&script_pid).await;
}

#[tokio::test]
async fn a_reply_is_read_once_the_child_holding_stdout_is_killed() {
    let app = TestApp::spawn().await;
    let pidfile = app.dir.path().join("child.pid");
    app.write_script("held.sh", &reply_with_stdout_held(&pidfile));
    app.create_handler(script("held.sh", json!({}))).await;
    let verdict = run_before(&app, json!({ "changed": false })).await;
    assert_gone(&pidfile).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    assert_eq!(verdict["data"], json!({ "changed": true }), "{verdict}");
}

/// Without a supervisor only the process group is killed; the reply that the
/// child in a new session keeps open is then a failure, never "unchanged".
#[tokio::test]
async fn a_reply_that_cannot_be_read_is_a_failure_not_unchanged() {
    let app = TestApp::spawn_with(|s| s.script_supervisor = None).await;
    let pidfile = app.dir.path().join("child.pid");
    app.write_script("held.sh", &reply_with_stdout_held(&pidfile));
    let h = app.create_handler(script("held.sh", json!({}))).await;
    let verdict = run_before(&app, json!({ "changed": false })).await;
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status();
    assert_eq!(
        verdict["allowed"], false,
        "on_failure forbid applies: {verdict}"
    );
    assert_eq!(verdict["handler_id"], h["id"]);
    let row = app.wait_executions("stage=before", 1).await.remove(0);
    assert_eq!(row["status"], "fail");
    let error = row["error"].as_str().unwrap();
    assert!(error.contains("the reply could not be read"), "{error}");
}

/// `provisio serve` runs its own executable as the supervisor.
#[tokio::test]
async fn the_real_server_supervises_its_scripts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = "binary-admin-token-0123456789";
    let server = Binary::serve(dir.path(), &[("PROVISIO_ADMIN_TOKEN", token)]);
    let pidfile = dir.path().join("child.pid");
    let path = dir.path().join("held.sh");
    std::fs::write(&path, reply_with_stdout_held(&pidfile)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let client = http_client();
    let resp = client
        .post(server.url("/api/v1/handlers"))
        .bearer_auth(token)
        .json(&json!({ "name": "held", "events_id": "clients.create", "stage": "before", "kind": "script", "target": "held.sh" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let resp = client
        .post(server.url("/api/v1/events/before"))
        .bearer_auth(token)
        .json(&json!({ "events_id": "clients.create", "object_id": 1, "data": {} }))
        .send()
        .await
        .unwrap();
    let (_, verdict) = read(resp).await;
    assert_gone(&pidfile).await;
    assert_eq!(verdict["data"], json!({ "changed": true }), "{verdict}");
    server.terminate();
}
