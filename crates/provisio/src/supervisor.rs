//! `provisio script-supervisor -- <script> <args…>`: the process the engine
//! runs around every script handler, so that nothing the script started
//! outlives it, not even a descendant that left its process group or session
//! (`setsid`, a double-forked daemon).
//!
//! The supervisor makes itself a child subreaper, so every orphan among the
//! script's descendants is reparented to it rather than to init. It starts the
//! script with everything it was given itself (stdin, stdout, stderr, the
//! environment, the working directory), waits for it, and then, or when the
//! engine sends it SIGTERM at the timeout, kills every process still below it
//! and reaps them until none is left. It exits with the script's exit code,
//! 128 + the signal that killed the script, or 128 + SIGTERM when it was told
//! to stop. It writes nothing but its own failures, to stderr.
//!
//! Linux only (`PR_SET_CHILD_SUBREAPER`, `/proc`). Nothing here is async: the
//! supervisor is a small synchronous process, started once per run.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};
use provisio_engine::scripts::SUPERVISOR_COMMAND;

/// The exit code when the script could not be started.
const NOT_STARTED: u8 = 127;

/// The script and its arguments, when the command line asks for the
/// supervisor: `provisio script-supervisor -- <script> <args…>`.
pub fn requested(mut args: impl Iterator<Item = OsString>) -> Option<Vec<OsString>> {
    args.next(); // the executable
    if args.next()? != SUPERVISOR_COMMAND {
        return None;
    }
    match args.next() {
        Some(separator) if separator == "--" => Some(args.collect()),
        // Not the engine's form: `run` reports that no script was given.
        _ => Some(Vec::new()),
    }
}

/// Runs `command` (the script and its arguments) to its end, then kills and
/// reaps everything it left behind.
pub fn run(command: &[OsString]) -> ExitCode {
    let Some((path, args)) = command.split_first() else {
        eprintln!("provisio script-supervisor: no script given");
        return ExitCode::from(NOT_STARTED);
    };
    if let Err(e) = prctl::set_child_subreaper(true) {
        eprintln!("provisio script-supervisor: cannot become a subreaper: {e}");
        return ExitCode::from(NOT_STARTED);
    }
    // Signals are read from a descriptor, never handled asynchronously; they
    // are blocked before the script starts, so none is missed.
    let watched = watched_signals();
    let signals = watched
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&watched, SfdFlags::SFD_CLOEXEC));
    let signals = match signals {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("provisio script-supervisor: cannot watch signals: {e}");
            return ExitCode::from(NOT_STARTED);
        }
    };
    let engine = getppid();
    let script = match start(path, args) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("could not start {}: {e}", path.to_string_lossy());
            return ExitCode::from(NOT_STARTED);
        }
    };

    let code = reap_exited(Some(script)).unwrap_or_else(|| wait_for(script, &signals, engine));
    kill_descendants();
    ExitCode::from(code)
}

/// Starts the script with this process's stdio, environment and working
/// directory, in its process group, with no signal blocked and SIGPIPE at its
/// default, as the standard library would. `posix_spawn` sets the mask in the
/// child: `std::process::Command` would hand on the supervisor's, and
/// unblocking only after the spawn would leave a window in which a script
/// signalling its process group ends the supervisor.
fn start(script: &OsStr, args: &[OsString]) -> nix::Result<Pid> {
    fn c_string(bytes: Vec<u8>) -> nix::Result<CString> {
        CString::new(bytes).map_err(|_| Errno::EINVAL)
    }
    let path = c_string(script.as_bytes().to_vec())?;
    let argv = std::iter::once(script)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|arg| c_string(arg.as_bytes().to_vec()))
        .collect::<nix::Result<Vec<_>>>()?;
    let env = std::env::vars_os()
        .map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(entry)
        })
        .collect::<nix::Result<Vec<_>>>()?;
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)?;
    posix_spawn(
        path.as_c_str(),
        &PosixSpawnFileActions::init()?,
        &attr,
        &argv,
        &env,
    )
}

/// The signals the supervisor reads instead of acting on: SIGCHLD, and every
/// signal that would end or stop it, so that a script signalling its own
/// process group (`trap 'kill 0' EXIT`) cannot take it down. Faults stay
/// unblocked.
fn watched_signals() -> SigSet {
    let mut set = SigSet::all();
    for fault in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGABRT,
        Signal::SIGSYS,
    ] {
        set.remove(fault);
    }
    set
}

/// Waits until the script exits or the engine sends a signal (SIGTERM at
/// the timeout); returns the exit code.
fn wait_for(script: Pid, signals: &SignalFd, engine: Pid) -> u8 {
    loop {
        match signals.read_signal() {
            Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => {
                if let Some(code) = reap_exited(Some(script)) {
                    return code;
                }
            }
            // Only the engine may stop a run; anyone else's signal is dropped.
            Ok(Some(info)) if info.ssi_pid == engine.as_raw() as u32 => {
                return 128 + info.ssi_signo as u8;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("provisio script-supervisor: cannot read signals: {e}");
                return 128 + Signal::SIGTERM as u8;
            }
        }
    }
}

/// Reaps every child that has exited, without blocking; returns the script's
/// exit code (128 + signal when a signal killed it) if it was among them.
fn reap_exited(script: Option<Pid>) -> Option<u8> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) if Some(pid) == script => {
                code = Some(status as u8);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if Some(pid) == script => {
                code = Some(128 + signal as u8);
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}

/// Kills every process below this one and reaps them, round after round, so
/// a process forked while the others were being killed is caught too. Ends
/// when none is left, or when all that are left refuse the signal.
fn kill_descendants() {
    let me = getpid();
    let mut pause = Duration::from_micros(200);
    loop {
        // Orphans are reparented to us, so with no child left there is no
        // descendant either: the common case costs one system call.
        if matches!(
            waitpid(None, Some(WaitPidFlag::WNOHANG)),
            Err(Errno::ECHILD)
        ) {
            return;
        }
        reap_exited(None);
        let mut signalled = false;
        for pid in living_descendants(me) {
            signalled |= kill(pid, Signal::SIGKILL).is_ok();
        }
        if !signalled {
            reap_exited(None);
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// The processes below `root` that have not exited yet, read from `/proc`.
fn living_descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<(i32, bool)>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // Gone since the directory was listed: nothing to kill.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, parent)) = parse_stat(&stat) {
            children
                .entry(parent)
                .or_default()
                .push((pid, state == 'Z'));
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(parent) = todo.pop() {
        for &(pid, zombie) in children.get(&parent).into_iter().flatten() {
            todo.push(pid);
            if !zombie {
                found.push(Pid::from_raw(pid));
            }
        }
    }
    found
}

/// The state and parent pid from a `/proc/<pid>/stat` line. The command name
/// before them is in parentheses and may hold anything, so parsing starts
/// after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> impl Iterator<Item = OsString> {
        line.split(' ').map(OsString::from)
    }

    #[test]
    fn only_the_engines_command_line_asks_for_the_supervisor() {
        assert_eq!(
            requested(words("provisio script-supervisor -- /s/a.sh -x --y")),
            Some(["/s/a.sh", "-x", "--y"].map(OsString::from).to_vec())
        );
        assert_eq!(
            requested(words("provisio script-supervisor /s/a.sh")),
            Some(Vec::new())
        );
        assert_eq!(requested(words("provisio serve")), None);
        assert_eq!(requested(words("provisio")), None);
    }

    #[test]
    fn stat_lines_parse_past_any_command_name() {
        assert_eq!(parse_stat("42 (sleep) S 7 42 42 0 -1"), Some(('S', 7)));
        assert_eq!(parse_stat("43 (a) b) S (c) Z 9 43 43 0 -1"), Some(('Z', 9)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
