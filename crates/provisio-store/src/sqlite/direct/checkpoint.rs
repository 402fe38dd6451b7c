//! Checkpoints off the write thread.
//!
//! SQLite copies the WAL's pages back into the database (a checkpoint)
//! from the connection whose commit took the WAL past 1,000 frames, inside
//! that commit's call. On the write thread that stopped every emit, claim
//! and record behind it: in a 20-handler fan-out eleven times a second, 8 ms
//! each (uprobes on `sqlite3WalCheckpoint`: 9 % of the thread's time).
//!
//! So the write thread's connection does not checkpoint at 1,000 frames:
//! its WAL hook asks a thread of its own (with a connection of its own) to
//! run a PASSIVE checkpoint, which copies what it can while the write
//! thread goes on committing (WAL mode lets one writer and one checkpoint
//! run at once). A checkpoint that cannot keep up with the commits never
//! lets the WAL start over (it starts over only when every frame was
//! copied), so past [`INLINE_FRAMES`] the write thread checkpoints itself,
//! as SQLite would have: by then most frames were copied already, and what
//! is left is quick. Durability does not change: commits still sync the
//! WAL as before, and a checkpoint syncs the WAL before it writes the
//! database and the database before the WAL can start over.

use std::cell::{Cell, RefCell};
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use rusqlite::hooks::Wal;

/// WAL frames after which the checkpointer is asked to copy them: SQLite's
/// own automatic checkpoint threshold.
const FRAMES: c_int = 1000;

/// WAL frames beyond which the write thread checkpoints itself (~32 MB of
/// 4 KiB pages).
const INLINE_FRAMES: c_int = 8 * FRAMES;

/// What the write thread does after a commit.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    /// Asks the checkpointer; remember the WAL's frames at this ask.
    Ask,
    /// Checkpoints on the write thread itself.
    Inline,
}

/// A count of WAL frames taken at some earlier commit (`mark`), as it
/// stands in the WAL that now holds `frames`: itself, or zero when there
/// are fewer frames now than then (the WAL started over since).
fn in_this_wal(mark: c_int, frames: c_int) -> c_int {
    if frames < mark { 0 } else { mark }
}

/// After a commit that left `frames` in the WAL, when the checkpointer was
/// last asked at `asked` frames: what to do, and the frames of the last ask
/// from now on.
fn after_commit(frames: c_int, asked: c_int) -> (Step, c_int) {
    let asked = in_this_wal(asked, frames);
    if frames >= INLINE_FRAMES {
        (Step::Inline, 0)
    } else if frames - asked >= FRAMES {
        (Step::Ask, frames)
    } else {
        (Step::Nothing, asked)
    }
}

/// The frames a commit wrote, from the frames in the WAL after it and
/// after the commit before.
fn written(frames: c_int, before: c_int) -> c_int {
    frames - in_this_wal(before, frames)
}

thread_local! {
    /// The write thread's way to its checkpointer, and the frames at its
    /// last ask. A WAL hook is a plain function; the write thread is the
    /// only one whose connection has it.
    static CHECKPOINTER: RefCell<Option<SyncSender<()>>> = const { RefCell::new(None) };
    static ASKED: Cell<c_int> = const { Cell::new(0) };
    /// The frames in the WAL after the last commit.
    static FRAMES_NOW: Cell<c_int> = const { Cell::new(0) };
}

/// Starts the checkpointer of the database at `path` and makes it the
/// calling thread's (the write thread's). It stops when that thread ends.
pub(super) fn start_for_this_thread(path: PathBuf) -> std::io::Result<()> {
    // One ask pending at most: a checkpoint covers every frame before it.
    let (ask, asks) = sync_channel(1);
    std::thread::Builder::new()
        .name("provisio-checkpoint".into())
        .spawn(move || run(&path, &asks))?;
    CHECKPOINTER.with(|c| *c.borrow_mut() = Some(ask));
    Ok(())
}

/// Replaces SQLite's automatic checkpoint on `conn` (the write thread's)
/// with the hook that asks the checkpointer.
pub(super) fn hook(conn: &rusqlite::Connection) {
    conn.wal_hook(Some(wal_grew));
}

/// The WAL hook: runs after each commit on the write thread, with the
/// frames now in the WAL. It never fails: the commit has happened, and an
/// error here would be reported as the commit's.
fn wal_grew(wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    // Each frame is a page written whole (twice: into the WAL, then by a
    // checkpoint into the database), so frames per event are the write
    // path's cost in pages.
    let new = written(frames, FRAMES_NOW.replace(frames));
    metrics::counter!("provisio_sqlite_wal_frames_total").increment(new as u64);
    let (step, asked) = after_commit(frames, ASKED.get());
    ASKED.set(asked);
    match step {
        Step::Nothing => {}
        Step::Ask => CHECKPOINTER.with(|c| {
            if let Some(ask) = c.borrow().as_ref()
                && let Err(TrySendError::Disconnected(())) = ask.try_send(())
            {
                tracing::warn!("the checkpoint thread is gone; the write thread checkpoints");
                checkpoint_here(wal);
            }
        }),
        Step::Inline => checkpoint_here(wal),
    }
    Ok(())
}

/// A checkpoint on the write thread itself. Busy when the checkpointer is
/// at it: it will have copied most of the frames, and a later commit steps
/// in again.
fn checkpoint_here(wal: &Wal) {
    let started = Instant::now();
    if wal.checkpoint().is_ok() {
        timed(started);
    }
}

/// The checkpointer's loop: a PASSIVE checkpoint per ask, on a connection
/// opened again after a failure.
fn run(path: &std::path::Path, asks: &Receiver<()>) {
    let mut conn: Option<rusqlite::Connection> = None;
    while asks.recv().is_ok() {
        if conn.is_none() {
            match open(path) {
                Ok(opened) => conn = Some(opened),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open the checkpoint connection; the write thread checkpoints past its limit");
                    continue;
                }
            }
        }
        let started = Instant::now();
        let checkpointed = conn.as_ref().expect("opened above").query_row(
            "PRAGMA wal_checkpoint(PASSIVE)",
            [],
            |row| row.get::<_, i64>(0),
        );
        match checkpointed {
            // 1: another checkpoint was running; the next ask retries.
            Ok(0) => timed(started),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "checkpoint failed; retrying at the next ask");
                conn = None;
            }
        }
    }
}

fn open(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    // A checkpoint syncs the WAL before it writes the database and the
    // database after, at NORMAL as at FULL.
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    Ok(conn)
}

fn timed(started: Instant) {
    metrics::histogram!("provisio_sqlite_checkpoint_seconds")
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_wrote_the_frames_it_added_or_all_there_are_after_the_wal_started_over() {
        assert_eq!(written(12, 0), 12);
        assert_eq!(written(30, 12), 18);
        assert_eq!(written(7, 8000), 7);
    }

    #[test]
    fn the_checkpointer_is_asked_once_per_thousand_frames_and_the_writer_steps_in_past_its_limit() {
        assert_eq!(after_commit(10, 0), (Step::Nothing, 0));
        assert_eq!(after_commit(999, 0), (Step::Nothing, 0));
        assert_eq!(after_commit(1000, 0), (Step::Ask, 1000));
        // Asked at 1,000: not again until 1,000 more, although the WAL
        // keeps its frames until it starts over.
        assert_eq!(after_commit(1500, 1000), (Step::Nothing, 1000));
        assert_eq!(after_commit(2000, 1000), (Step::Ask, 2000));
        // The WAL started over: counted from zero again.
        assert_eq!(after_commit(30, 2000), (Step::Nothing, 0));
        assert_eq!(after_commit(1000, 2000), (Step::Ask, 1000));
        // The checkpointer cannot keep up: the write thread does it.
        assert_eq!(after_commit(INLINE_FRAMES, 7000), (Step::Inline, 0));
        assert_eq!(after_commit(INLINE_FRAMES + 5, 0), (Step::Inline, 0));
    }
}
