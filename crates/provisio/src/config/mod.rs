//! Settings: flags, then `PROVISIO_*` environment variables (clap reads both),
//! then `provisio.toml`, then defaults. Validated once, here; a bad value is
//! reported in one line naming the setting in every spelling a user may have
//! used.

//!
//! - `args`: the flags, variables and file keys, as typed.
//! - `resolve`: validation into [`Settings`].

mod args;
mod resolve;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use provisio_core::retry::RetrySchedule;
use provisio_store::postgres::PgSettings;
use provisio_store::sqlite::Durability;

use args::Name;
pub use args::{ServeArgs, StoreArgs};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn invalid(name: &Name, message: impl fmt::Display) -> ConfigError {
    ConfigError(format!(
        "invalid {} ({} / {} / {} in provisio.toml): {message}",
        name.key(),
        name.flag(),
        name.env(),
        name.key()
    ))
}

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Settings {
    /// The effective settings as `key = value` lines, secrets masked: what
    /// `provisio config check` prints.
    pub fn describe(&self) -> String {
        let duration = provisio_core::retry::format_duration;
        let database = match &self.store.database {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres(pg) => match reqwest::Url::parse(&pg.url) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    format!(
                        "{url} (max {} connections, acquire timeout {}, statement timeout {})",
                        pg.max_connections,
                        duration(pg.acquire_timeout),
                        duration(pg.statement_timeout)
                    )
                }
                Err(_) => "postgres://…".into(),
            },
        };
        let lines = [
            ("listen", self.listen.to_string()),
            ("data_dir", self.store.data_dir.display().to_string()),
            ("database_url", database),
            ("scripts_dir", self.scripts_dir.display().to_string()),
            (
                "retry_schedule",
                self.retry_schedule
                    .delays()
                    .iter()
                    .map(|d| duration(*d))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "admin_token",
                if self.admin_token.is_some() {
                    "*** (set)".into()
                } else {
                    "(not set)".into()
                },
            ),
            ("max_body_bytes", self.max_body_bytes.to_string()),
            (
                "deny_networks",
                self.deny_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "sqlite_synchronous",
                match self.store.sqlite_synchronous {
                    Durability::Full => "full".into(),
                    Durability::Normal => "normal".into(),
                },
            ),
            (
                "log_format",
                if self.log_format == LogFormat::Json {
                    "json".into()
                } else {
                    "text".into()
                },
            ),
            ("before_deadline", duration(self.before_deadline)),
            ("max_scripts", self.max_scripts.to_string()),
            ("worker_threads", self.worker_threads.to_string()),
            ("session_ttl", duration(self.session_ttl)),
            (
                "retention",
                self.retention
                    .map(duration)
                    .unwrap_or_else(|| "forever".into()),
            ),
        ];
        lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub enum Database {
    /// A file only this process uses.
    Sqlite(PathBuf),
    /// A server any number of nodes share.
    Postgres(PgSettings),
}

/// Validated settings for opening the database.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub data_dir: PathBuf,
    pub database: Database,
    pub sqlite_synchronous: Durability,
}

/// Validated settings for `provisio serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store: StoreSettings,
    pub listen: SocketAddr,
    pub scripts_dir: PathBuf,
    pub retry_schedule: RetrySchedule,
    pub admin_token: Option<Secret>,
    pub max_body_bytes: usize,
    pub deny_networks: Vec<IpNet>,
    pub log_format: LogFormat,
    pub before_deadline: std::time::Duration,
    pub max_scripts: usize,
    /// The async runtime's worker threads (`provisio serve` builds its
    /// runtime with them; an embedding brings its own runtime).
    pub worker_threads: usize,
    pub lease_margin: std::time::Duration,
    pub session_ttl: std::time::Duration,
    /// How long history is kept; `None` keeps it forever.
    pub retention: Option<std::time::Duration>,
    /// How often retention runs (not a user setting: tests shorten it).
    pub prune_every: std::time::Duration,
    /// The provisio executable run as the supervisor around every script (not
    /// a user setting: `provisio serve` sets its own, in-process test servers
    /// the built binary). `None` only kills the script's process group; see
    /// `EngineConfig::script_supervisor`.
    pub script_supervisor: Option<PathBuf>,
}

/// One fewer worker thread than the machine has cores, and at least one.
///
/// On SQLite one more thread does the database's work (the write thread,
/// which runs the queue's statements); a worker per core left it competing with them, and
/// on two cores the second worker cost more than it gave: each lone event woke
/// both workers in turn, where one worker took every hand-off between the
/// connection, the dispatcher, the attempt and the recorder without a thread
/// switch (the benchmark at 200 and 1,000 events/s: 12–20 % less CPU per event,
/// the burst unchanged, the fan-out 5–30 % slower). ARCHITECTURE.md, "Threads".
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Where `serve` listens when nothing says otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The data directory when nothing says otherwise.
pub(crate) const DEFAULT_DATA_DIR: &str = "./data";
/// The scripts directory when nothing says otherwise.
pub(crate) const DEFAULT_SCRIPTS_DIR: &str = "./scripts";

impl Settings {
    /// Settings for a test or embedding: defaults under `data_dir`, listening
    /// on a random loopback port.
    ///
    /// Each default is written once, in the layer that uses it: the engine's
    /// in `EngineConfig::new`, the HTTP layer's in `ServerConfig::default`,
    /// the database pool's in `PgSettings::new`. Resolving the flags, the file
    /// and the environment starts from these, and `config check` prints the
    /// result, so all of them agree.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let engine = provisio_engine::EngineConfig::new(data_dir.join("scripts"));
        let server = provisio_server::ServerConfig::default();
        Self {
            store: StoreSettings {
                data_dir: data_dir.to_owned(),
                database: Database::Sqlite(data_dir.join("provisio.db")),
                sqlite_synchronous: Durability::Full,
            },
            listen: "127.0.0.1:0".parse().expect("valid address"),
            scripts_dir: engine.scripts_dir,
            retry_schedule: engine.retry_schedule,
            admin_token: None,
            max_body_bytes: server.max_body_bytes,
            deny_networks: engine.deny_networks,
            log_format: LogFormat::Text,
            before_deadline: engine.before_deadline,
            max_scripts: engine.max_scripts,
            worker_threads: default_worker_threads(),
            lease_margin: engine.lease_margin,
            session_ttl: server.session_ttl,
            retention: engine.retention,
            prune_every: engine.prune_every,
            script_supervisor: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(f: impl FnOnce(&mut ServeArgs)) -> Result<Settings, ConfigError> {
        let mut args = ServeArgs::default();
        f(&mut args);
        args.resolve()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = serve(|_| {}).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.store.data_dir, PathBuf::from("./data"));
        assert!(
            matches!(&s.store.database, Database::Sqlite(p) if p == &PathBuf::from("./data/provisio.db")),
            "{:?}",
            s.store.database
        );
        assert_eq!(s.scripts_dir, PathBuf::from("./scripts"));
        assert_eq!(s.retry_schedule, RetrySchedule::default());
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(s.worker_threads, (cores - 1).max(1));
    }

    #[test]
    fn worker_threads_are_a_count_from_1_to_1024() {
        assert_eq!(
            serve(|a| a.worker_threads = Some("3".into()))
                .unwrap()
                .worker_threads,
            3
        );
        for bad in ["0", "1025", "two", "-1"] {
            let e = serve(|a| a.worker_threads = Some(bad.into()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("PROVISIO_WORKER_THREADS"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = serve(|a| a.listen = Some("nowhere".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--listen") && e.contains("PROVISIO_LISTEN"),
            "{e}"
        );
        let e = serve(|a| a.retry_schedule = Some("5x".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PROVISIO_RETRY_SCHEDULE"), "{e}");
        let e = serve(|a| a.store.database_url = Some("mysql://localhost/x".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--database-url") && e.contains("postgres://"),
            "{e}"
        );
        let e = serve(|a| {
            a.store.database_url = Some("postgres://localhost/x".into());
            a.store.database_max_connections = Some("1".into());
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("PROVISIO_DATABASE_MAX_CONNECTIONS"), "{e}");
        let e = serve(|a| a.lease_margin = Some("soon".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PROVISIO_LEASE_MARGIN"), "{e}");
        let e = serve(|a| a.admin_token = Some("short".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PROVISIO_ADMIN_TOKEN"), "{e}");
        assert!(
            !e.contains("short\""),
            "the token value must not be echoed: {e}"
        );
    }

    #[test]
    fn a_postgres_url_selects_postgres_with_its_pool_settings() {
        let s = serve(|a| {
            a.store.database_url = Some("postgres://app:hunter22@db.example:5433/provisio".into());
            a.store.database_max_connections = Some("4".into());
            a.store.database_statement_timeout = Some("2s".into());
        })
        .unwrap();
        let Database::Postgres(pg) = &s.store.database else {
            panic!("{:?}", s.store.database);
        };
        assert_eq!(pg.max_connections, 4);
        assert_eq!(pg.statement_timeout, std::time::Duration::from_secs(2));
        assert_eq!(pg.acquire_timeout, std::time::Duration::from_secs(5));
        assert!(
            !format!("{s:?}").contains("hunter22"),
            "the password must not print"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = serve(|a| a.admin_token = Some("a-very-long-admin-token".into())).unwrap();
        assert!(!format!("{s:?}").contains("a-very-long-admin-token"));
    }
}
