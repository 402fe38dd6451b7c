//! The command-line client against a real server: each command, tables and
//! `--json`, and one-line errors with a non-zero exit.

use serde_json::{Value, json};

use crate::helpers::*;

/// Runs `provisio ARGS…` against `app` without blocking the server's runtime.
pub(crate) async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let url = format!("http://{}", app.addr);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(
            &args,
            &[("PROVISIO_URL", &url), ("PROVISIO_TOKEN", ADMIN_TOKEN)],
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn handlers_are_managed_from_the_command_line() {
    let app = TestApp::spawn().await;
    let (ok, out, err) = cli(
        &app,
        &[
            "handlers",
            "create",
            "--name",
            "Switch",
            "--events-id",
            "clients.*",
            "--target",
            "http://127.0.0.1:1/h",
            "--priority",
            "-5",
            "--header",
            "X-Api-Key: k1",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["priority"], -5);
    assert_eq!(created["headers"], json!({ "X-Api-Key": "k1" }));
    let id = created["id"].to_string();

    let (ok, out, _) = cli(&app, &["handlers", "list"]).await;
    assert!(ok);
    assert!(
        out.lines().next().unwrap().starts_with("ID"),
        "a table with a header: {out}"
    );
    assert!(
        out.contains("Switch") && out.contains("clients.*") && out.contains("(1 in all)"),
        "{out}"
    );

    for (command, status) in [
        ("disable", "disabled"),
        ("enable", "enabled"),
        ("archive", "archived"),
    ] {
        let (ok, out, err) = cli(&app, &["handlers", command, &id]).await;
        assert!(ok, "{err}");
        assert!(out.contains(status), "{out}");
        assert_eq!(
            app.get(&format!("/api/v1/handlers/{id}")).await.1["status"],
            status
        );
    }
    let (ok, _, err) = cli(
        &app,
        &[
            "handlers",
            "update",
            &id,
            "--name",
            "Switch 2",
            "--status",
            "enabled",
            "--timeout-ms",
            "3000",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&app, &["handlers", "show", &id, "--json"]).await;
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (shown["name"].as_str(), shown["timeout_ms"].as_u64()),
        (Some("Switch 2"), Some(3000))
    );

    let (ok, out, _) = cli(&app, &["handlers", "delete", &id]).await;
    assert!(ok);
    assert!(out.contains("deleted"));
    assert_eq!(app.get("/api/v1/handlers").await.1["total"], 0);
}

#[tokio::test]
async fn events_are_emitted_and_the_log_read_from_the_command_line() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![Reply::status(500)]).await;
    app.create_handler(
        json!({ "target": receiver.url(), "max_attempts": 1, "on_exhausted": "skip" }),
    )
    .await;
    app.create_handler(
        json!({ "stage": "before", "target": "http://127.0.0.1:1/closed", "on_failure": "allow" }),
    )
    .await;

    let (ok, out, err) = cli(
        &app,
        &[
            "emit",
            "clients.create",
            "--object-id",
            "42",
            "--data",
            r#"{"name": "ACME"}"#,
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let emitted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(emitted["deliveries"], 1);
    receiver.wait_for(1).await;
    let sent = receiver.received()[0].json();
    assert_eq!(
        sent["event"]["object_id"], 42,
        "a numeric id is sent as a number"
    );
    assert_eq!(sent["data"]["name"], "ACME");

    let data_file = app.dir.path().join("data.json");
    std::fs::write(&data_file, r#"{"from": "file"}"#).unwrap();
    let (ok, out, err) = cli(
        &app,
        &[
            "emit",
            "clients.create",
            "--object-id",
            "c-7",
            "--data-file",
            data_file.to_str().unwrap(),
            "--before",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("allowed"), "{out}");
    assert!(out.contains(r#""from":"file""#), "{out}");

    let rows = app.wait_executions("stage=after", 1).await;
    let (ok, out, _) = cli(
        &app,
        &["executions", "list", "--stage", "after", "--status", "fail"],
    )
    .await;
    assert!(ok);
    assert!(
        out.contains("clients.create") && out.contains("500") && out.contains("(1 in all)"),
        "{out}"
    );
    let (ok, out, _) = cli(
        &app,
        &["executions", "show", &rows[0]["id"].to_string(), "--json"],
    )
    .await;
    assert!(ok);
    let delivery_id = serde_json::from_str::<Value>(&out).unwrap()["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_event(emitted["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "failed"
    })
    .await;
    let (ok, out, err) = cli(&app, &["redeliver", &delivery_id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("queued again"), "{out}");
    receiver.wait_for(2).await;
}

#[tokio::test]
async fn command_line_errors_are_one_line_and_a_failure() {
    let app = TestApp::spawn().await;
    for args in [
        vec!["handlers", "show", "999"],
        vec![
            "handlers",
            "create",
            "--name",
            "x",
            "--events-id",
            "nope.nope",
            "--target",
            "http://127.0.0.1:1/",
        ],
        vec![
            "emit",
            "clients.create",
            "--object-id",
            "1",
            "--data",
            "[1]",
        ],
        vec![
            "emit",
            "clients.create",
            "--object-id",
            "1",
            "--data",
            "{oops",
        ],
        vec!["redeliver", "no-such-delivery"],
        vec!["executions", "list", "--status", "maybe"],
    ] {
        let (ok, _, err) = cli(&app, &args).await;
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("provisio: "), "{err}");
    }
    let (ok, _, err) = cli(
        &app,
        &[
            "handlers",
            "create",
            "--name",
            "x",
            "--events-id",
            "nope.nope",
            "--target",
            "http://127.0.0.1:1/",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("422") && err.contains("events_id"),
        "{err}"
    );

    // Nobody listening, or no token: still one line.
    let (ok, _, err) = run_cli(
        &["handlers", "list", "--url", "http://127.0.0.1:1"],
        &[("PROVISIO_TOKEN", "x")],
    );
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("cannot reach"),
        "{err}"
    );
    let (ok, _, err) = run_cli(&["handlers", "list"], &[]);
    assert!(!ok && err.contains("token"), "{err}");
}

#[test]
fn shell_completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = run_cli(&["completions", shell], &[]);
        assert!(ok, "{err}");
        assert!(out.contains("handlers") && out.contains("emit"), "{shell}");
        assert!(!out.contains("supervisor"), "internal: {shell}");
    }
    let (_, help, _) = run_cli(&["--help"], &[]);
    assert!(!help.contains("supervisor"), "{help}");
}

/// Runs `provisio ARGS…` with its standard output already closed by the
/// reader, as `provisio … | head` ends: (exit code, stderr).
fn run_into_closed_pipe(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("PROVISIO_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_command_quietly() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    let url = app.url("");
    let env = [
        ("PROVISIO_URL", url.as_str()),
        ("PROVISIO_TOKEN", ADMIN_TOKEN),
    ];
    for args in [
        &["handlers", "list"][..],
        &["handlers", "list", "--json"],
        &["executions", "list"],
        &["completions", "bash"],
        &["config", "check"],
    ] {
        let (code, stderr) = tokio::task::spawn_blocking({
            let env = env.map(|(k, v)| (k.to_owned(), v.to_owned()));
            move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                run_into_closed_pipe(args, &env)
            }
        })
        .await
        .unwrap();
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote: {stderr}");
    }
}

/// Logs that go to a file or a pipe (journald, `> log`) carry no colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("PROVISIO_ADMIN_TOKEN", "colour-test-admin-token-123")
        .env_remove("PROVISIO_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("listening"), "{seen}");
    assert!(
        !seen.contains('\u{1b}'),
        "colour codes in a piped log: {seen:?}"
    );
}

#[tokio::test]
async fn a_handler_is_tested_from_the_command_line() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "events_id": "clients.*", "target": receiver.url(),
                                "request": { "method": "PATCH" } }))
        .await;
    let id = h["id"].to_string();
    let (ok, out, err) = cli(
        &app,
        &[
            "handlers",
            "test",
            &id,
            "--events-id",
            "clients.update",
            "--data",
            r#"{"id": 4}"#,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["request"]["method"], "PATCH");
    assert_eq!(report["event"]["object_id"], 4);
    assert!(receiver.received().is_empty());

    let (ok, out, err) = cli(
        &app,
        &[
            "handlers",
            "test",
            &id,
            "--events-id",
            "clients.update",
            "--send",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["response"]["status"],
        200
    );
    assert_eq!(receiver.wait_for(1).await[0].method, "PATCH");

    // Bad JSON is one line and a non-zero exit; nothing is sent.
    let (ok, _, err) = cli(&app, &["handlers", "test", &id, "--data", "{nope"]).await;
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("--data"),
        "{err}"
    );
}
