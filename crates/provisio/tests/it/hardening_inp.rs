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
