//! Throwaway databases for tests and benchmarks: each run gets a fresh
//! `provisio_test_<random>` database on the server named by
//! `PROVISIO_TEST_DATABASE_URL`, dropped when the handle is.
//!
//! When that server cannot be reached, [`ScratchDatabase::create`] returns
//! `None` after printing why, so a developer without PostgreSQL can still run
//! the rest of the suite, unless `CI` is set: there a missing server is a
//! failure, never a silent skip.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

/// The admin connection used when `PROVISIO_TEST_DATABASE_URL` is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for as long as this handle.
pub struct ScratchDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates a fresh database, or returns `None` (outside CI) when
    /// PostgreSQL is unreachable. Panics in CI, or on any other failure.
    pub async fn create() -> Option<ScratchDatabase> {
        let admin_url = std::env::var("PROVISIO_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let admin = PgConnectOptions::from_str(&admin_url)
            .expect("PROVISIO_TEST_DATABASE_URL is a postgres:// URL");
        let mut conn = match PgConnection::connect_with(&admin).await {
            Ok(conn) => conn,
            Err(err) if !in_ci() => {
                println!(
                    "skipped: PostgreSQL is unreachable at {} ({err}); set PROVISIO_TEST_DATABASE_URL, or CI=true to make this a failure",
                    target(&admin)
                );
                return None;
            }
            Err(err) => panic!(
                "PostgreSQL is unreachable at {} and CI is set: {err}",
                target(&admin)
            ),
        };
        let name = format!("provisio_test_{:016x}", rand_u64());
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a scratch database");
        let _ = conn.close().await;
        let url = url_of(&admin, admin.get_username(), &name);
        Some(ScratchDatabase { admin, name, url })
    }

    /// `postgres://…/provisio_test_…`, for `--database-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database for another role (one made with
    /// [`ScratchDatabase::admin`]).
    pub fn url_as(&self, user: &str) -> String {
        url_of(&self.admin, user, &self.name)
    }

    /// Runs one statement as the admin, connected to this database.
    pub async fn admin(&self, statement: &str) {
        let mut conn = self.connect_admin().await;
        conn.execute(sqlx::AssertSqlSafe(statement.to_owned()))
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
        let _ = conn.close().await;
    }

    /// Runs one query as the admin, connected to this database, and returns
    /// the first column of each row (an `EXPLAIN`'s lines, a count).
    pub async fn column<T>(&self, query: &str) -> Vec<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        let mut conn = self.connect_admin().await;
        let values = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("{query}: {err}"));
        let _ = conn.close().await;
        values
    }

    /// How many rows the mirror of due work (`due_deliveries`) and the
    /// pending deliveries differ by, counted both ways: 0 when every write
    /// kept the mirror. Both change in one transaction, so any snapshot
    /// shows them equal.
    pub async fn unmirrored(&self) -> i64 {
        let mirrored = "SELECT seq, handler_id, next_attempt_at, lease_until FROM due_deliveries";
        let pending = "SELECT seq, handler_id, next_attempt_at, lease_until FROM deliveries
                       WHERE state = 'pending'";
        let differ = format!(
            "SELECT count(*) FROM (({mirrored} EXCEPT {pending}) UNION ALL ({pending} EXCEPT {mirrored})) x"
        );
        self.column::<i64>(&differ).await[0]
    }

    async fn connect_admin(&self) -> PgConnection {
        PgConnection::connect_with(&self.admin.clone().database(&self.name))
            .await
            .expect("admin connection")
    }

    /// Cuts every connection to this database, as a server restart or a
    /// network failure would. Returns how many were cut.
    pub async fn terminate_connections(&self) -> u64 {
        let mut conn = PgConnection::connect_with(&self.admin)
            .await
            .expect("admin connection");
        let cut: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .expect("terminate connections");
        let _ = conn.close().await;
        cut.len() as u64
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop may run outside a runtime, or inside one that must not block:
        // a thread of its own with a small runtime does the async work.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the scratch database {}", self.name);
        }
    }
}

/// `postgres://user@host:port/database` on the admin's server.
fn url_of(admin: &PgConnectOptions, user: &str, database: &str) -> String {
    format!(
        "postgres://{user}@{}:{}/{database}",
        admin.get_host(),
        admin.get_port()
    )
}

/// `CI` set to anything but empty or `false`, as CI services set it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

fn target(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Enough randomness for a unique name, without a dependency: the standard
/// library's randomly keyed hasher, fed the time and the process id.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
