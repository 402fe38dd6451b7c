//! A disk that fills while attempts are in flight: provisio refuses emits
//! while it is full and recovers by itself, losing nothing, when space comes
//! back. Needs root to mount a small tmpfs (CI runs as root).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop. `None`
/// where mounting is not allowed (not root): the caller skips, unless CI.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("CI").is_err(),
                "CI must be able to mount a tmpfs (run as root)"
            );
            println!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The disk fills while attempts are in flight: emits answer 503 and results
/// cannot be recorded. When space comes back, the server recovers by itself:
/// emits are accepted again, and the results it held are recorded, so no
/// delivery that reached its receiver is sent a second time.
#[tokio::test]
async fn a_full_disk_is_survived_without_a_restart() {
    let Some(disk) = SmallDisk::mount("24m") else {
        return;
    };
    let data_dir = disk.path().join("data");
    let app = TestApp::spawn_with(|s| {
        s.store.data_dir = data_dir.clone();
        s.store.database = provisio::config::Database::Sqlite(data_dir.join("provisio.db"));
    })
    .await;
    let receiver = Receiver::with(|_, _| Reply::delayed(200, Duration::from_millis(400))).await;
    app.create_handler(
        json!({ "target": receiver.url(), "events_id": "clients.*", "ordered": false }),
    )
    .await;
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(app.emit("clients.update", json!(i), json!({})).await);
    }
    receiver.wait_for(5).await;
    disk.fill();

    // Emits are refused while the disk is full (a big one cannot fit).
    let big = json!({ "events_id": "clients.update", "object_id": 99,
                      "data": { "pad": "x".repeat(512 * 1024) } });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = app.post("/api/v1/events", big.clone()).await;
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "emits were still accepted on a full disk: {status} {body}"
        );
    }
    // The attempts in flight finish meanwhile; their results wait.
    tokio::time::sleep(Duration::from_millis(800)).await;

    disk.free();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = app.post("/api/v1/events", big.clone()).await;
        if status == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "emits still refused after space came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for event in &events {
        app.wait_for_event(event["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "success"
        })
        .await;
    }
    app.wait_executions("status=success", 6).await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a delivery whose result was held was sent again"
    );
    app.stop().await;
}
