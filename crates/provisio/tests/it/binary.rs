//! The real binary: token bootstrap, restarts, the token CLI, configuration
//! errors.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::helpers::*;

async fn get(client: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    let (status, body) = read(resp).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn the_first_start_generates_an_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let server = Binary::serve(dir.path(), &[]);
    let token_file = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("pvo_"), "{token}");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.wait_stdout(&token).await;
    let (status, _) = get(&client, server.url("/api/v1/handlers"), &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "SIGTERM is a clean exit"
    );

    let again = Binary::serve(dir.path(), &[]);
    let (status, _) = get(&client, again.url("/api/v1/handlers"), &token).await;
    assert_eq!(status, 200, "the token survives a restart");
    assert!(
        !again.stdout().contains("pvo_"),
        "a second start must not print a token"
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    again.terminate();
}

#[tokio::test]
async fn the_admin_token_from_the_environment_is_used_and_nothing_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let server = Binary::serve(
        dir.path(),
        &[("PROVISIO_ADMIN_TOKEN", "env-admin-token-abcdefgh")],
    );
    let (status, _) = get(
        &client,
        server.url("/api/v1/handlers"),
        "env-admin-token-abcdefgh",
    )
    .await;
    assert_eq!(status, 200);
    assert!(!dir.path().join("admin-token").exists());
    server.terminate();

    // Changing the variable replaces the old admin token.
    let server = Binary::serve(
        dir.path(),
        &[("PROVISIO_ADMIN_TOKEN", "another-admin-token-xyz")],
    );
    let (status, _) = get(
        &client,
        server.url("/api/v1/handlers"),
        "env-admin-token-abcdefgh",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = get(
        &client,
        server.url("/api/v1/handlers"),
        "another-admin-token-xyz",
    )
    .await;
    assert_eq!(status, 200);
    server.terminate();
}

#[tokio::test]
async fn data_and_the_catalog_persist_across_restarts_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let env = [("PROVISIO_ADMIN_TOKEN", "persist-admin-token-123")];
    let token = env[0].1;
    let server = Binary::serve(dir.path(), &env);
    let created = client
        .post(server.url("/api/v1/handlers"))
        .bearer_auth(token)
        .json(
            &json!({ "name": "Kept", "events_id": "clients.*", "target": "http://127.0.0.1:1/x" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let custom = client
        .post(server.url("/api/v1/event-types"))
        .bearer_auth(token)
        .json(&json!({ "id": "billing.invoice_paid" }))
        .send()
        .await
        .unwrap();
    assert_eq!(custom.status(), 201);
    server.terminate();

    for _ in 0..2 {
        let server = Binary::serve(dir.path(), &env);
        let (_, handlers) = get(&client, server.url("/api/v1/handlers"), token).await;
        assert_eq!(handlers["total"], 1);
        assert_eq!(handlers["items"][0]["name"], "Kept");
        let (_, types) = get(&client, server.url("/api/v1/event-types"), token).await;
        assert_eq!(types["total"], 20, "seeding must not duplicate: {types}");
        server.terminate();
    }
}

/// The names of the server's threads that run tokio's workers.
fn runtime_workers(server: &Binary) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
        .unwrap()
        .filter(|task| {
            let comm = task.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|name| name.trim() == "tokio-rt-worker")
        })
        .count()
}

#[test]
fn the_server_runs_on_the_worker_threads_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve_with(dir.path(), &["--worker-threads", "3"], &[]);
    assert_eq!(runtime_workers(&server), 3);
    server.terminate();
    let server = Binary::serve(dir.path(), &[]);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(runtime_workers(&server), (cores - 1).max(1), "the default");
    server.terminate();
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(
        dir.path(),
        &[("PROVISIO_ADMIN_TOKEN", "lock-admin-token-12345")],
    );
    let data_dir = dir.path().to_str().unwrap();
    let (ok, _, stderr) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("another provisio server"), "{stderr}");
    server.terminate();
}

#[tokio::test]
async fn tokens_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (ok, token, stderr) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "billing",
            "--data-dir",
            data_dir,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("pvo_"));

    let (ok, _, stderr) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "billing",
            "--data-dir",
            data_dir,
        ],
        &[],
    );
    assert!(!ok, "a duplicate live name is refused");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let server = Binary::serve(dir.path(), &[]);
    assert!(
        !dir.path().join("admin-token").exists(),
        "a stored token means nothing is generated"
    );
    let client = http_client();
    let (status, _) = get(&client, server.url("/api/v1/handlers"), &token).await;
    assert_eq!(status, 200);

    let (ok, list, _) = run_cli(&["token", "list", "--data-dir", data_dir], &[]);
    assert!(ok);
    assert!(list.contains("billing") && list.contains("live"), "{list}");
    assert!(!list.contains(&token), "token values are never listed");

    // Revoked while the server runs: refused within the token cache's second.
    let (ok, _, stderr) = run_cli(&["token", "revoke", "billing", "--data-dir", data_dir], &[]);
    assert!(ok, "{stderr}");
    let revoked_at = std::time::Instant::now();
    while get(&client, server.url("/api/v1/handlers"), &token).await.0 != 401 {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(3),
            "the revoked token still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, _, stderr) = run_cli(&["token", "revoke", "billing", "--data-dir", data_dir], &[]);
    assert!(!ok);
    assert!(stderr.starts_with("provisio: "), "{stderr}");
    server.terminate();
}

#[test]
fn an_unreachable_postgres_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "migrate"] {
        let (ok, _, stderr) = run_cli(
            &[
                command,
                "--database-url",
                "postgres://provisio:hunter22@127.0.0.1:1/provisio",
                "--data-dir",
                dir.path().to_str().unwrap(),
            ],
            &[("PROVISIO_DATABASE_ACQUIRE_TIMEOUT", "1s")],
        );
        assert!(!ok, "{command} should fail");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:1/provisio"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("hunter22"),
            "the password leaked: {stderr}"
        );
    }
}

#[test]
fn migrate_brings_a_sqlite_database_up_to_date_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_cli(
        &["migrate", "--data-dir", dir.path().to_str().unwrap()],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");
    assert!(dir.path().join("provisio.db").exists());
}

#[test]
fn bad_settings_exit_non_zero_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&[&str], Env, &str); 5] = [
        (&["serve", "--listen", "nowhere"], &[], "--listen"),
        (
            &["serve"],
            &[("PROVISIO_RETRY_SCHEDULE", "5x")],
            "PROVISIO_RETRY_SCHEDULE",
        ),
        (
            // PostgreSQL is supported now; a malformed URL is still refused.
            &[
                "serve",
                "--database-url",
                "postgres://localhost:port/provisio",
            ],
            &[],
            "--database-url",
        ),
        (
            &["serve", "--database-url", "mysql://x"],
            &[],
            "--database-url",
        ),
        (
            &["serve", "--max-body-bytes", "lots"],
            &[],
            "--max-body-bytes",
        ),
    ];
    for (args, env, setting) in cases {
        let mut args = args.to_vec();
        args.extend(["--data-dir", data_dir]);
        let (ok, _, stderr) = run_cli(&args, env);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(setting), "{stderr} should name {setting}");
    }

    let config = dir.path().join("provisio.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nretry_schedule = \"soon\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run_cli(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data_dir,
        ],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("retry_schedule"), "{stderr}");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let (ok, _, stderr) = run_cli(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data_dir,
        ],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("lisen"), "{stderr}");
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("provisio.toml");
    std::fs::write(
        &config,
        "admin_token = \"file-admin-token-123456\"\nretry_schedule = \"1s\"\n",
    )
    .unwrap();
    let config_path = config.to_str().unwrap();
    let client = http_client();
    let server = Binary::serve(dir.path(), &[("PROVISIO_CONFIG", config_path)]);
    let (status, _) = get(
        &client,
        server.url("/api/v1/handlers"),
        "file-admin-token-123456",
    )
    .await;
    assert_eq!(status, 200, "the file's token is used");
    server.terminate();
    let server = Binary::serve(
        dir.path(),
        &[
            ("PROVISIO_CONFIG", config_path),
            ("PROVISIO_ADMIN_TOKEN", "env-wins-admin-token-1"),
        ],
    );
    let (status, _) = get(
        &client,
        server.url("/api/v1/handlers"),
        "env-wins-admin-token-1",
    )
    .await;
    assert_eq!(status, 200, "the environment beats the file");
    server.terminate();
}

#[test]
fn config_check_prints_the_effective_settings_or_names_the_bad_one() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../provisio.example.toml");
    let (ok, out, err) = run_cli(
        &["config", "check", "--config", example],
        &[("PROVISIO_ADMIN_TOKEN", "a-secret-admin-token-xyz")],
    );
    assert!(ok, "{err}");
    for line in [
        "listen = 127.0.0.1:8080",
        "retry_schedule = 5s,30s,2m,10m,30m,1h,3h,6h,12h",
        "retention = 30d",
        "admin_token = *** (set)",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing from:\n{out}"
        );
    }
    assert!(
        !out.contains("a-secret-admin-token-xyz"),
        "secrets are masked"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:8080\"\nmax_scripts = 0\n").unwrap();
    let (ok, _, err) = run_cli(&["config", "check", "--config", bad.to_str().unwrap()], &[]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("max_scripts"), "{err}");
}
