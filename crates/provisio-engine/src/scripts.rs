//! Script handlers: a file inside the scripts directory, run directly (never
//! through a shell) with the payload on stdin, a cleared environment, a
//! timeout, capped output, and a limit on how many run at once.
//!
//! Each run is wrapped in a supervisor: the provisio binary's hidden
//! `script-supervisor` subcommand, given as [`EngineConfig::script_supervisor`].
//! It is a child subreaper, so every orphan the script leaves is reparented to
//! it, and when the script exits, or when the engine sends it SIGTERM at the
//! timeout, it kills everything still below it, including descendants that
//! started a new session or process group, before it exits with the script's
//! exit code. Without a supervisor only the script's process group is killed,
//! and a child that left it lives on.
//!
//! [`EngineConfig::script_supervisor`]: crate::EngineConfig::script_supervisor

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use provisio_core::handler::{Handler, validate_script_target};
use provisio_store::RequestRecord;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

use crate::outcome::{CallContext, CallOutcome, RESPONSE_BODY_CAP, capped_text};

/// The PATH scripts see: the system's standard directories, nothing inherited.
const SCRIPT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The provisio subcommand that supervises one script:
/// `provisio script-supervisor -- <script> <args…>`.
pub const SUPERVISOR_COMMAND: &str = "script-supervisor";

/// How long a supervisor told to stop has to kill what the script started and
/// exit, before its process group is killed outright.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long the pipes may stay open once the run has ended.
const READ_GRACE: Duration = Duration::from_secs(1);

/// Resolves `target` to an executable file inside `scripts_dir`, following
/// symlinks and refusing any that lead outside it.
pub fn resolve(scripts_dir: &Path, target: &str) -> Result<PathBuf, String> {
    validate_script_target(target)?;
    let dir = scripts_dir.canonicalize().map_err(|e| {
        format!(
            "the scripts directory {} is not usable: {e}",
            scripts_dir.display()
        )
    })?;
    let path = dir.join(target);
    let resolved = path
        .canonicalize()
        .map_err(|_| format!("{target} does not exist in the scripts directory"))?;
    if !resolved.starts_with(&dir) {
        return Err(format!("{target} leads outside the scripts directory"));
    }
    let meta = resolved
        .metadata()
        .map_err(|e| format!("{target} cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{target} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{target} is not executable"));
    }
    Ok(resolved)
}

#[derive(Clone)]
pub struct ScriptExecutor {
    dir: PathBuf,
    /// At most this many scripts run at once; the rest wait their turn.
    slots: Arc<Semaphore>,
    supervisor: Option<PathBuf>,
}

impl ScriptExecutor {
    pub fn new(dir: PathBuf, max_running: usize, supervisor: Option<PathBuf>) -> Self {
        if supervisor.is_none() {
            tracing::warn!(
                "scripts run without a supervisor: only their process group is killed, so a process a script starts in a new session or process group can outlive it"
            );
        }
        Self {
            dir,
            slots: Arc::new(Semaphore::new(max_running.max(1))),
            supervisor,
        }
    }

    pub fn check(&self, target: &str) -> Result<(), String> {
        resolve(&self.dir, target).map(|_| ())
    }

    /// Runs the handler's script with `payload` on stdin. Exit 0 is success and
    /// stdout is the reply; the exit code stands in `status`.
    pub async fn run(
        &self,
        handler: &Handler,
        call: &CallContext<'_>,
        payload: String,
        timeout: Duration,
    ) -> CallOutcome {
        let started = Instant::now();
        let mut request = RequestRecord {
            target: handler.spec.target.clone(),
            body: payload,
            ..Default::default()
        };
        if !handler.spec.args.is_empty() {
            request.headers.insert(
                "args".into(),
                serde_json::to_string(&handler.spec.args).unwrap_or_default(),
            );
        }
        let mut outcome = CallOutcome::new(request);
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                outcome.error = Some(format!(
                    "timed out after {} ms waiting for a free script slot",
                    timeout.as_millis()
                ));
                outcome.duration = started.elapsed();
                return outcome;
            }
        };
        metrics::gauge!("provisio_scripts_running").increment(1.0);
        let result = self
            .spawn_and_wait(handler, call, &outcome.request.body, deadline)
            .await;
        metrics::gauge!("provisio_scripts_running").decrement(1.0);
        drop(permit);
        match result {
            Ok(run) => {
                outcome.status = run
                    .exit_code
                    .map(|c| c.clamp(0, i32::from(u16::MAX)) as u16);
                outcome.body = Some(capped_text(&run.stdout));
                outcome.truncated = run.stdout_truncated;
                outcome.error = match (run.timed_out, run.exit_code) {
                    (true, _) => Some(format!(
                        "timed out after {} ms; {}",
                        timeout.as_millis(),
                        if self.supervisor.is_some() {
                            "it was killed with everything it started"
                        } else {
                            "its process group was killed"
                        }
                    )),
                    (false, Some(0)) if !run.stdout_complete => Some(format!(
                        "the reply could not be read: stdout was still open {} s after the script ended (a process it started holds it)",
                        READ_GRACE.as_secs()
                    )),
                    (false, Some(0)) => None,
                    (false, Some(code)) => Some(with_stderr(
                        format!("exited with status {code}"),
                        &run.stderr,
                    )),
                    (false, None) => Some(with_stderr("killed by a signal".into(), &run.stderr)),
                };
            }
            Err(e) => outcome.error = Some(e),
        }
        outcome.duration = started.elapsed();
        outcome
    }

    /// The script itself, or its supervisor with the script as argument.
    fn command(&self, script: &Path) -> Command {
        match &self.supervisor {
            Some(supervisor) => {
                let mut command = Command::new(supervisor);
                // Named so in `ps`, whatever path it was started by.
                command
                    .arg0("provisio")
                    .arg(SUPERVISOR_COMMAND)
                    .arg("--")
                    .arg(script);
                command
            }
            None => Command::new(script),
        }
    }

    async fn spawn_and_wait(
        &self,
        handler: &Handler,
        call: &CallContext<'_>,
        payload: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Finished, String> {
        // Checked again at run time: the file may have changed since the
        // handler was saved.
        let path = resolve(&self.dir, &handler.spec.target)?;
        // The supervisor passes its environment, working directory and pipes
        // on to the script unchanged.
        let child = self
            .command(&path)
            .args(&handler.spec.args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", SCRIPT_PATH)
            .env("PROVISIO_EVENT_ID", call.event_id)
            .env("PROVISIO_EVENTS_ID", call.events_id)
            .env("PROVISIO_OBJECT_ID", call.object_id)
            .env("PROVISIO_STAGE", call.stage.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match &self.supervisor {
                Some(supervisor) => format!(
                    "could not start the script supervisor {}: {e}",
                    supervisor.display()
                ),
                None => format!("could not start {}: {e}", handler.spec.target),
            })?;
        let mut run = Started::new(child, self.supervisor.is_some());
        let child = run.child.as_mut().expect("just started");

        let mut stdin = child.stdin.take().expect("stdin is piped");
        let payload = payload.as_bytes().to_vec();
        // A script that never reads stdin must not block us: write in the
        // background and ignore a closed pipe.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        });
        let stdout = tokio::spawn(read_capped(child.stdout.take().expect("stdout is piped")));
        let stderr = tokio::spawn(read_capped(child.stderr.take().expect("stderr is piped")));

        let (exit_code, timed_out) = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) => (status.code(), false),
            Ok(Err(e)) => return Err(format!("waiting for the script failed: {e}")),
            Err(_) => (None, true),
        };
        if timed_out {
            run.stop().await;
        }
        // Whether it finished or timed out, nothing it started may outlive it.
        run.finish();
        writer.abort();
        // Once everything the script started is gone, so are the pipes' other
        // ends; a process that escaped could still hold them: give the readers
        // a moment, then stop reading.
        let stdout = finish_reading(stdout).await;
        let (stderr, _) = finish_reading(stderr).await.unwrap_or_default();
        let stdout_complete = stdout.is_some();
        let (stdout, stdout_truncated) = stdout.unwrap_or_default();
        Ok(Finished {
            exit_code,
            timed_out,
            stdout,
            stdout_truncated,
            stdout_complete,
            stderr,
        })
    }
}

/// A started script, or its supervisor, leading its own process group. It is
/// stopped with everything it started however the run ends, also when the
/// caller stops waiting for it (a before-stage client that went away, an
/// attempt abandoned at shutdown).
struct Started {
    /// `None` once the run is over.
    child: Option<Child>,
    group: Option<Pid>,
    supervised: bool,
}

impl Started {
    fn new(child: Child, supervised: bool) -> Self {
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        Self {
            child: Some(child),
            group,
            supervised,
        }
    }

    /// Stops a run past its timeout.
    async fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child, self.group, self.supervised).await;
        }
    }

    /// Ends a run whose process has exited: what is left in its process group
    /// is killed.
    fn finish(&mut self) {
        kill_group(self.group);
        self.child = None;
    }
}

impl Drop for Started {
    /// The run was abandoned: it is stopped as at a timeout, in the
    /// background. Without a runtime to do that, the process group is killed
    /// and `kill_on_drop` kills the process itself.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let (group, supervised) = (self.group, self.supervised);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { stop(&mut child, group, supervised).await });
            }
            Err(_) => kill_group(group),
        }
    }
}

/// A supervisor gets SIGTERM and [`STOP_GRACE`] to kill what the script
/// started and exit; the process group is killed if it takes longer, or if
/// there is no supervisor.
async fn stop(child: &mut Child, group: Option<Pid>, supervised: bool) {
    if supervised {
        if let Some(id) = child.id() {
            let _ = kill(Pid::from_raw(id as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    kill_group(group);
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn kill_group(group: Option<Pid>) {
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

struct Finished {
    exit_code: Option<i32>,
    timed_out: bool,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    /// False when the reader had to be abandoned: the reply may be cut.
    stdout_complete: bool,
    stderr: Vec<u8>,
}

/// Reads a pipe to its end, keeping the first [`RESPONSE_BODY_CAP`] bytes and
/// discarding the rest, so a flood never blocks the child on a full pipe.
async fn read_capped(mut pipe: impl AsyncRead + Unpin) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = RESPONSE_BODY_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// What a pipe's reader read, or `None` if the pipe was still open
/// [`READ_GRACE`] after the run ended and the reader was abandoned.
async fn finish_reading(
    reader: tokio::task::JoinHandle<(Vec<u8>, bool)>,
) -> Option<(Vec<u8>, bool)> {
    let abort = reader.abort_handle();
    match tokio::time::timeout(READ_GRACE, reader).await {
        Ok(Ok(read)) => Some(read),
        _ => {
            abort.abort();
            None
        }
    }
}

/// Appends the script's stderr (its first kilobyte) to an error message.
fn with_stderr(message: String, stderr: &[u8]) -> String {
    let text = capped_text(&stderr[..stderr.len().min(1024)]);
    let text = text.trim();
    if text.is_empty() {
        message
    } else {
        format!("{message}: {text}")
    }
}
