//! The write thread's tests: transactions, their failures, and lingering.

use super::*;
use crate::query::Sql;
use crate::rows::Columns;

/// Rows in `t` as another connection sees them: committed ones only.
fn committed_rows(dir: &tempfile::TempDir) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
        .unwrap()
}

/// A thread whose lingering transactions wait for the next job (as
/// long as a test takes).
/// Inserts a row in a lingering transaction (FULL, as a record's).
fn linger_insert(direct: &Direct, n: i64, s: &str) -> Answer {
    direct
        .linger(Durability::Full, vec![insert(n, Some(s))])
        .unwrap()
}

async fn thread_with_table() -> (tempfile::TempDir, Direct) {
    thread_lingering(Duration::from_secs(3600)).await
}

async fn thread_lingering(linger: Duration) -> (tempfile::TempDir, Direct) {
    let dir = tempfile::tempdir().unwrap();
    let direct = Direct::open(&dir.path().join("t.db"), linger)
        .await
        .unwrap();
    direct
        .transaction(
            Durability::Normal,
            vec![Stmt::new(
                "CREATE TABLE t (n INTEGER PRIMARY KEY, s TEXT NOT NULL)",
            )],
        )
        .await
        .unwrap();
    (dir, direct)
}

fn insert(n: i64, s: Option<&str>) -> Stmt {
    let mut q = Stmt::new("INSERT INTO t (n, s) VALUES (");
    q.arg(n).sql(", ").arg(s.map(str::to_owned)).sql(")");
    q
}

async fn count(direct: &Direct) -> i64 {
    let rows = direct
        .transaction(
            Durability::Normal,
            vec![Stmt::new("SELECT COUNT(*) AS n FROM t")],
        )
        .await
        .unwrap();
    rows[0].int("n").unwrap()
}

/// The rows of `select`, read in a transaction at NORMAL, which must see
/// `synchronous` 1 whatever ran (or failed) before.
async fn read_at_normal(direct: &Direct, select: &'static str) -> Vec<Row> {
    let mut rows = direct
        .transaction(
            Durability::Normal,
            vec![Stmt::new("PRAGMA synchronous"), Stmt::new(select)],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.remove(0).int("synchronous").unwrap(),
        1,
        "not back at NORMAL"
    );
    rows
}

#[tokio::test]
async fn each_transaction_runs_at_its_own_durability_whatever_ran_before() {
    let (_dir, direct) = thread_with_table().await;
    let level = async |durability| {
        let rows = direct
            .transaction(durability, vec![Stmt::new("PRAGMA synchronous")])
            .await
            .unwrap();
        rows[0].int("synchronous").unwrap()
    };
    use Durability::{Full, Normal};
    // The setting is switched only when it changes: repeats, then each way.
    for (i, (durability, expected)) in [
        (Full, 2),
        (Full, 2),
        (Normal, 1),
        (Normal, 1),
        (Full, 2),
        (Normal, 1),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            level(durability).await,
            expected,
            "transaction {i}, {durability:?}"
        );
    }
    // A FULL transaction that failed leaves the next NORMAL one at NORMAL.
    assert!(
        direct
            .transaction(Full, vec![insert(1, None)])
            .await
            .is_err()
    );
    assert_eq!(level(Normal).await, 1);
    assert_eq!(level(Full).await, 2);
}

#[tokio::test]
async fn a_failing_statement_undoes_its_whole_transaction() {
    let (_dir, direct) = thread_with_table().await;
    let err = direct
        .transaction(
            Durability::Full,
            vec![insert(1, Some("a")), insert(2, None)],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT NULL"), "{err}");
    assert!(!err.is_unavailable(), "a refused row is not an outage");
    assert_eq!(count(&direct).await, 0, "the first insert was kept");
    // The connection goes on working, back at NORMAL.
    direct
        .transaction(Durability::Normal, vec![insert(1, Some("a"))])
        .await
        .unwrap();
    let rows = read_at_normal(&direct, "SELECT n, s FROM t").await;
    assert_eq!(rows[0].int("n").unwrap(), 1);
    assert_eq!(rows[0].text("s").unwrap(), "a");
    assert_eq!(
        rows[0].opt_int("s").ok(),
        None,
        "text is not read as a number"
    );
}

#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_by_the_next_one() {
    let (_dir, direct) = thread_with_table().await;
    // A caller that started and never finished (it was cancelled).
    direct
        .start(Durability::Full, vec![insert(1, Some("lost"))])
        .await
        .unwrap();
    direct
        .transaction(Durability::Normal, vec![insert(2, Some("kept"))])
        .await
        .unwrap();
    let rows = read_at_normal(&direct, "SELECT s FROM t").await;
    let texts: Vec<String> = rows.iter().map(|r| r.text("s").unwrap()).collect();
    assert_eq!(texts, ["kept"]);
    // `finish` without a transaction of its own is refused, not run
    // outside one.
    assert!(direct.finish(vec![insert(3, Some("x"))]).await.is_err());
    assert_eq!(count(&direct).await, 1);
}

#[tokio::test]
async fn start_and_finish_make_one_transaction() {
    let (_dir, direct) = thread_with_table().await;
    let seen = direct
        .start(
            Durability::Full,
            vec![Stmt::new("SELECT COUNT(*) AS n FROM t")],
        )
        .await
        .unwrap();
    assert_eq!(seen[0].int("n").unwrap(), 0);
    direct.finish(vec![insert(1, Some("a"))]).await.unwrap();
    assert_eq!(count(&direct).await, 1);
}

#[tokio::test]
async fn a_lingering_write_commits_with_the_next_transaction() {
    let (dir, direct) = thread_with_table().await;
    let answer = linger_insert(&direct, 1, "a");
    // Once the thread has answered a later call, the insert has run,
    // uncommitted (the call joined it: a `finish` cannot).
    assert!(direct.finish(Vec::new()).await.is_err());
    assert_eq!(
        committed_rows(&dir),
        0,
        "committed before anything joined it"
    );
    // A read on the thread joins it, sees it, and commits both.
    assert_eq!(count(&direct).await, 1);
    assert!(answer.wait().await.unwrap().is_empty());
    assert_eq!(committed_rows(&dir), 1);
    // The joined commit ran at FULL, and the connection is back at NORMAL.
    read_at_normal(&direct, "SELECT n FROM t").await;
}

#[tokio::test]
async fn a_lingering_write_commits_by_itself_when_nothing_comes() {
    let (dir, direct) = thread_lingering(LINGER).await;
    let started = Instant::now();
    let answer = linger_insert(&direct, 1, "a");
    answer.wait().await.unwrap();
    assert!(started.elapsed() >= LINGER, "committed before the linger");
    assert_eq!(committed_rows(&dir), 1);
    read_at_normal(&direct, "SELECT n FROM t").await;
}

#[tokio::test]
async fn a_lingering_write_whose_rows_someone_waits_on_commits_at_once() {
    let (dir, direct) = thread_with_table().await;
    let mut returning = insert(1, Some("a"));
    returning.sql(" RETURNING n");
    let answer = direct.linger(Durability::Normal, vec![returning]).unwrap();
    let rows = tokio::time::timeout(Duration::from_secs(10), answer.wait())
        .await
        .expect("it lingered")
        .unwrap();
    assert_eq!(rows[0].int("n").unwrap(), 1);
    assert_eq!(committed_rows(&dir), 1);
}

#[tokio::test]
async fn a_failing_job_rolls_back_what_lingered_and_says_so() {
    let (dir, direct) = thread_with_table().await;
    let first = linger_insert(&direct, 1, "a");
    let second = linger_insert(&direct, 2, "b");
    // A job that joins them and fails takes them down with it.
    assert!(
        direct
            .transaction(Durability::Normal, vec![insert(3, None)])
            .await
            .is_err()
    );
    for answer in [first, second] {
        let err = answer.wait().await.unwrap_err();
        assert!(err.to_string().contains("rolled back"), "{err}");
    }
    assert_eq!(count(&direct).await, 0);
    assert_eq!(committed_rows(&dir), 0);
    // A `finish` whose transaction is gone can neither end a lingering
    // one nor undo it; a flush (before a write on another connection)
    // commits it.
    let answer = linger_insert(&direct, 4, "d");
    assert!(direct.finish(vec![insert(5, Some("e"))]).await.is_err());
    direct.flush().await.unwrap();
    answer.wait().await.unwrap();
    assert_eq!(committed_rows(&dir), 1);
}

#[tokio::test]
async fn a_counted_statement_answers_with_its_count_only_when_it_changed_rows() {
    let (dir, direct) = thread_with_table().await;
    let mut q = Stmt::new("INSERT INTO t (n, s) VALUES (?1, 'a'), (?1 + 1, 'b'), (?1 + 2, 'c')");
    q.bind(10);
    let rows = direct
        .transaction(Durability::Normal, vec![q.count_as("inserted")])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text("moved").unwrap(), "inserted");
    assert_eq!(rows[0].int("count").unwrap(), 3);
    // A statement that changed nothing answers with no row: as a lingering
    // write, nobody waits on it, and it lingers.
    let none = Stmt::new("UPDATE t SET s = 'z' WHERE n > 100").count_as("updated");
    let answer = direct.linger(Durability::Normal, vec![none]).unwrap();
    assert_eq!(count(&direct).await, 3);
    assert!(answer.wait().await.unwrap().is_empty());
    assert_eq!(committed_rows(&dir), 3);
}

#[tokio::test]
async fn each_row_runs_its_statement_per_row_in_the_same_transaction() {
    let (_dir, direct) = thread_with_table().await;
    let seed = (1..=4).map(|n| insert(n, Some("new"))).collect();
    direct.transaction(Durability::Normal, seed).await.unwrap();
    let mark = |claimed: &'static str| {
        Stmt::new("SELECT n FROM t WHERE s = 'new' ORDER BY n LIMIT 2").each_row(move |row| {
            let mut q = Stmt::new("UPDATE t SET s = ?1 WHERE n = ?2");
            q.bind(claimed).bind(row.int("n")?);
            Ok(q)
        })
    };
    // The rows read are answered; the next read sees them marked.
    let rows = direct
        .transaction(Durability::Normal, vec![mark("first"), mark("second")])
        .await
        .unwrap();
    let read: Vec<i64> = rows.iter().map(|r| r.int("n").unwrap()).collect();
    assert_eq!(read, [1, 2, 3, 4]);
    // A statement built from a row that fails rolls the whole transaction
    // back, the rows marked before it included.
    let failing = Stmt::new("SELECT n FROM t WHERE s = 'first' ORDER BY n").each_row(|row| {
        let n = row.int("n")?;
        let mut q =
            Stmt::new("UPDATE t SET s = CASE WHEN ?1 = 2 THEN NULL ELSE 'third' END WHERE n = ?1");
        q.bind(n);
        Ok(q)
    });
    let err = direct
        .transaction(Durability::Normal, vec![failing])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT NULL"), "{err}");
    let rows = read_at_normal(&direct, "SELECT s FROM t ORDER BY n").await;
    let texts: Vec<String> = rows.iter().map(|r| r.text("s").unwrap()).collect();
    assert_eq!(texts, ["first", "first", "second", "second"]);
}

#[tokio::test]
async fn the_wal_is_copied_into_the_database_by_a_thread_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY, s TEXT NOT NULL)",
        )
        .unwrap();
    let direct = Direct::open(&path, Duration::from_secs(3600))
        .await
        .unwrap();
    let database_bytes = || std::fs::metadata(&path).unwrap().len();
    let before = database_bytes();
    // A page per row: 1,200 commits leave well over 1,000 frames in the
    // WAL, far below where the write thread would checkpoint itself.
    let page = "x".repeat(3000);
    for n in 0..1200 {
        direct
            .transaction(Durability::Normal, vec![insert(n, Some(&page))])
            .await
            .unwrap();
    }
    // Only a checkpoint writes the database file in WAL mode.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while database_bytes() < before + 1000 * 4096 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: the database file is still {} bytes",
            database_bytes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&direct).await, 1200);
}
