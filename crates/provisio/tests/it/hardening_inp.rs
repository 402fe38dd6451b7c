//! Hardening against an outside attacker's findings (issue 10): the admin
//! token changed back across restarts, token revocation by a number, exact
//! object ids, the deny list's address spellings, and passwords in handler
//! URLs.

use crate::helpers::*;

async fn get(client: &reqwest::Client, url: String, token: &str) -> u16 {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    read(resp).await.0.as_u16()
}

/// `provisio token create --name NAME` on a data directory: the new token.
fn create_token(data_dir: &str, name: &str) -> String {
    let (ok, token, stderr) = run_cli(
        &["token", "create", "--name", name, "--data-dir", data_dir],
        &[],
    );
    assert!(ok, "{stderr}");
    token.trim().to_owned()
}

#[tokio::test]
async fn hardening_inp_the_admin_token_can_be_changed_back_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let (a, b) = ("first-admin-token-aaaaaaaa", "second-admin-token-bbbbbbb");
    // A → B → A: under systemd a refused start would be a restart loop.
    for (now, before) in [(a, None), (b, Some(a)), (a, Some(b))] {
        let server = Binary::serve(dir.path(), &[("PROVISIO_ADMIN_TOKEN", now)]);
        assert_eq!(get(&client, server.url("/api/v1/handlers"), now).await, 200);
        if let Some(before) = before {
            assert_eq!(
                get(&client, server.url("/api/v1/handlers"), before).await,
                401,
                "the replaced admin token must no longer work"
            );
        }
        server.terminate();
    }
}

#[tokio::test]
async fn hardening_inp_an_admin_token_that_is_another_live_token_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let token = create_token(data_dir, "billing");
    let token = token.as_str();
    let (ok, _, stderr) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        &[("PROVISIO_ADMIN_TOKEN", token)],
    );
    assert!(!ok);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("provisio: ") && last.contains("\"billing\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains(token),
        "the token never reaches the log: {stderr}"
    );
}

/// `provisio token list` as (id, name, live) rows.
fn list_tokens(data_dir: &str) -> Vec<(String, String, bool)> {
    let (ok, out, stderr) = run_cli(&["token", "list", "--data-dir", data_dir], &[]);
    assert!(ok, "{stderr}");
    out.lines()
        .skip(1)
        .map(|line| {
            let mut cols = line.split_whitespace();
            let id = cols.next().unwrap_or_default().to_owned();
            let name = cols.next().unwrap_or_default().to_owned();
            (id, name, line.trim_end().ends_with("live"))
        })
        .collect()
}

fn revoke(data_dir: &str, how: &[&str]) -> (bool, String, String) {
    let mut args = vec!["token", "revoke"];
    args.extend_from_slice(how);
    args.extend_from_slice(&["--data-dir", data_dir]);
    run_cli(&args, &[])
}

#[tokio::test]
async fn hardening_inp_token_revoke_never_takes_two_tokens_for_one_number() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // The admin token has id 1; another token is named "1". Names that are
    // numbers are refused now, so this one is planted the way an older
    // version allowed: by the store.
    create_token(data_dir, "admin");
    let (ok, _, stderr) = run_cli(
        &["token", "create", "--name", "1", "--data-dir", data_dir],
        &[],
    );
    assert!(!ok, "a number as a name is refused");
    assert!(stderr.starts_with("provisio: "), "{stderr}");
    plant_token_named(dir.path(), "1").await;
    assert_eq!(
        list_tokens(data_dir),
        [
            ("1".into(), "admin".into(), true),
            ("2".into(), "1".into(), true)
        ]
    );

    let (ok, _, stderr) = revoke(data_dir, &["1"]);
    assert!(!ok, "an ambiguous number is refused");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--id 1") && stderr.contains("--name 1"),
        "{stderr}"
    );
    assert!(
        list_tokens(data_dir).iter().all(|t| t.2),
        "nothing was revoked"
    );

    let (ok, _, stderr) = revoke(data_dir, &["--name", "1"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        list_tokens(data_dir),
        [
            ("1".into(), "admin".into(), true),
            ("2".into(), "1".into(), false)
        ]
    );
    // Now "1" names no live token: the bare number means the id.
    let (ok, _, stderr) = revoke(data_dir, &["1"]);
    assert!(ok, "{stderr}");
    assert!(list_tokens(data_dir).iter().all(|t| !t.2));
    let (ok, _, stderr) = revoke(data_dir, &["--id", "1"]);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Stores a live token named `name` directly, as an older version could.
async fn plant_token_named(data_dir: &std::path::Path, name: &str) {
    use provisio_store::Store;
    let store = provisio_store::sqlite::SqliteStore::open(
        &data_dir.join("provisio.db"),
        provisio_store::sqlite::Durability::Normal,
    )
    .await
    .unwrap();
    store
        .create_token(name, &provisio_store::TokenHash([42; 32]))
        .await
        .unwrap();
}
