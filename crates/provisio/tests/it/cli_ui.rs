//! The command line as an operator's tool: exit codes a script can act on,
//! human output for `executions show`, and help text that reaches the shell
//! completions.

use serde_json::{Value, json};

use crate::cli::cli;
use crate::helpers::*;

/// Runs `provisio ARGS…` against `app`: (exit code, stdout, stderr).
async fn cli_status(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let url = app.url("");
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .env_remove("PROVISIO_ADMIN_TOKEN")
            .env("PROVISIO_URL", url)
            .env("PROVISIO_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn emit_before_exits_3_when_the_action_is_forbidden() {
    let app = TestApp::spawn().await;
    // Refuses client 13, allows everyone else.
    app.write_script(
        "guard.sh",
        "#!/bin/sh\ncat >/dev/null\nif [ \"$PROVISIO_OBJECT_ID\" = 13 ]; then echo '{\"allow\": false, \"reason\": \"client 13 is locked\"}'; fi\n",
    );
    app.create_handler(json!({
        "name": "Guard", "events_id": "clients.*", "stage": "before", "kind": "script", "target": "guard.sh",
    }))
    .await;

    let (code, out, err) = cli_status(
        &app,
        &["emit", "clients.update", "--object-id", "12", "--before"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("allowed"), "{out}");

    let (code, out, err) = cli_status(
        &app,
        &["emit", "clients.update", "--object-id", "13", "--before"],
    )
    .await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.starts_with("forbidden: client 13 is locked"),
        "the verdict is printed: {out}"
    );
    assert!(err.is_empty(), "the status says it all: {err}");
    let (code, out, _) = cli_status(
        &app,
        &[
            "emit",
            "clients.update",
            "--object-id",
            "13",
            "--before",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(3));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["allowed"],
        false
    );

    // An error is still 1 with one line, not 3.
    let (code, _, err) = cli_status(
        &app,
        &["emit", "nope.nope", "--object-id", "13", "--before"],
    )
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // An after-stage emit is not a verdict.
    let (code, _, _) = cli_status(&app, &["emit", "clients.update", "--object-id", "13"]).await;
    assert_eq!(code, Some(0));
    let (_, help, _) = cli_status(&app, &["emit", "--help"]).await;
    assert!(help.contains("exits with status 3"), "{help}");
}

#[tokio::test]
async fn executions_show_is_for_people_and_json_for_scripts() {
    let app = TestApp::spawn().await;
    let receiver =
        Receiver::with(|_, _| Reply::with_body(503, r#"{"error":"account locked"}"#)).await;
    app.create_handler(
        json!({ "name": "Switch", "target": receiver.url(), "max_attempts": 1, "on_exhausted": "skip" }),
    )
    .await;
    app.write_script("sync.sh", "#!/bin/sh\necho synced\n");
    app.create_handler(json!({
        "name": "Script sync", "kind": "script", "target": "sync.sh", "args": ["--mode", "a b"],
    }))
    .await;
    app.emit("clients.create", json!(12), json!({ "name": "ACME" }))
        .await;
    let rows = app.wait_executions("", 2).await;
    let by_name =
        |name: &str| rows.iter().find(|e| e["handler_name"] == name).unwrap()["id"].to_string();

    let (ok, out, err) = cli(&app, &["executions", "show", &by_name("Switch")]).await;
    assert!(ok, "{err}");
    assert!(
        serde_json::from_str::<Value>(&out).is_err(),
        "not JSON: {out}"
    );
    for expected in [
        "(fail)",
        "Handler:     Switch",
        "Status:      503",
        "Sent: POST http://127.0.0.1",
        "webhook-signature: ",
        "\"name\": \"ACME\"",
        "Response:",
        "\"error\": \"account locked\"",
    ] {
        assert!(out.contains(expected), "{expected:?} in {out}");
    }
    let (ok, out, err) = cli(&app, &["executions", "show", &by_name("Script sync")]).await;
    assert!(ok, "{err}");
    for expected in [
        "(success)",
        "Exit code:   0",
        r#"Ran: sync.sh --mode "a b""#,
        "Output",
        "synced",
    ] {
        assert!(out.contains(expected), "{expected:?} in {out}");
    }
    let (ok, out, _) = cli(&app, &["executions", "show", &by_name("Switch"), "--json"]).await;
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["response_status"], 503);
    let (ok, _, err) = cli(&app, &["executions", "show", "999999"]).await;
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("404"),
        "{err}"
    );
}

#[test]
fn completions_carry_the_flags_help_text() {
    let (ok, zsh, err) = run_cli(&["completions", "zsh"], &[]);
    assert!(ok, "{err}");
    for help in [
        "Lower runs first",
        "How long one call may take",
        "how many attempts a delivery gets",
        "exits with status 3",
    ] {
        assert!(zsh.contains(help), "{help:?} is not in the zsh completions");
    }
    let (ok, fish, _) = run_cli(&["completions", "fish"], &[]);
    assert!(ok && fish.contains("Lower runs first"));
}
