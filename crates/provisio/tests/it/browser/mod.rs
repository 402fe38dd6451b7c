//! The web section in a real headless Chromium, driven over WebDriver, with
//! screenshots of the pages written to `target/screenshots/`. This module is
//! the harness; each journey lives in its own submodule.

mod health;
mod journeys;
mod logs;
mod ui;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session and the chromedriver behind it.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Kills chromedriver and the Chromium it started, which share its
    /// process group: killing chromedriver alone left every test's Chromium
    /// running (70 of them after one CI run, each using CPU).
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// Starts Chromium, or explains why not: in CI a missing browser fails the
/// run; elsewhere the test is skipped with a line saying so.
pub(crate) async fn browser() -> Option<Browser> {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
            );
        }
        eprintln!(
            "skipping the browser test: {CHROMIUM} or {CHROMEDRIVER} is not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        // A group of its own, so dropping the session kills Chromium too.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    // chromedriver takes a moment to listen; a connection refused means "not yet".
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("could not start a Chromium session: {e}"),
        }
    };
    Some(Browser {
        client,
        driver,
        _profile: profile,
    })
}

pub(crate) fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

pub(crate) async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the page's text contains `needle`.
pub(crate) async fn wait_for_text(c: &Client, needle: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // Between two pages there may be no body yet: not yet, not a failure.
        let body = match c.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed {needle:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn fill(c: &Client, css: &str, value: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

pub(crate) async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Opens `path`, is sent to the login page, and logs in with the admin token.
pub(crate) async fn log_in(c: &Client, app: &TestApp, path: &str) {
    c.goto(&app.url(path)).await.unwrap();
    wait_for_text(c, "API token").await;
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    screenshot(c, "login").await;
    resize(c, PHONE).await;
    assert_eq!(overflow_px(c).await, 0, "the login page fits a phone");
    resize(c, DESKTOP).await;
    fill(c, "#token", ADMIN_TOKEN).await;
    click(c, "form button[type=submit]").await;
}

/// The phone width every page must fit without scrolling sideways.
pub(crate) const PHONE: (u32, u32) = (390, 844);
/// The desktop width of the screenshots.
pub(crate) const DESKTOP: (u32, u32) = (1280, 900);

/// Resizes the window (the page keeps its state).
pub(crate) async fn resize(c: &Client, (width, height): (u32, u32)) {
    c.set_window_size(width, height).await.unwrap();
}

/// Screenshots the current page at the desktop and the phone width, as
/// `{name}-1280.png` and `{name}-390.png`, and leaves the window at desktop width.
pub(crate) async fn screenshots_at_both_widths(c: &Client, name: &str) {
    resize(c, DESKTOP).await;
    screenshot(c, &format!("{name}-1280")).await;
    resize(c, PHONE).await;
    screenshot(c, &format!("{name}-390")).await;
    resize(c, DESKTOP).await;
}

/// How far the current page is wider than the window, in CSS pixels (0 when
/// it fits).
pub(crate) async fn overflow_px(c: &Client) -> i64 {
    let value = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    value.as_i64().unwrap_or_default()
}
