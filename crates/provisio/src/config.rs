//! Settings: flags, then `PROVISIO_*` environment variables (clap reads both),
//! then `provisio.toml`, then defaults. Validated once, here; a bad value is
//! reported in one line naming the setting in every spelling a user may have
//! used.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use ipnet::IpNet;
use provisio_core::retry::RetrySchedule;
use provisio_store::postgres::PgSettings;
use provisio_store::sqlite::Durability;
use serde::Deserialize;

/// Settings shared by every command that opens the database.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Where the embedded database and the admin token live.
    #[arg(long, env = "PROVISIO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// `sqlite://PATH` (default: `<data-dir>/provisio.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, which several nodes can share.
    #[arg(
        long,
        env = "PROVISIO_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// PostgreSQL: pooled connections per node (default 10).
    #[arg(long, env = "PROVISIO_DATABASE_MAX_CONNECTIONS", value_name = "N")]
    pub database_max_connections: Option<String>,
    /// PostgreSQL: how long a query waits for a connection, such as `5s`;
    /// past it, API requests answer 503 (default 5s).
    #[arg(
        long,
        env = "PROVISIO_DATABASE_ACQUIRE_TIMEOUT",
        value_name = "DURATION"
    )]
    pub database_acquire_timeout: Option<String>,
    /// PostgreSQL: the longest any statement may run, such as `30s` (default 30s).
    #[arg(
        long,
        env = "PROVISIO_DATABASE_STATEMENT_TIMEOUT",
        value_name = "DURATION"
    )]
    pub database_statement_timeout: Option<String>,
    /// The settings file (default: `./provisio.toml` when present).
    #[arg(long, env = "PROVISIO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `provisio serve`'s settings.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The address the API and web section listen on.
    #[arg(long, env = "PROVISIO_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Script handlers run only from inside this directory.
    #[arg(long, env = "PROVISIO_SCRIPTS_DIR", value_name = "DIR")]
    pub scripts_dir: Option<String>,
    /// Delays between attempts, such as `5s,30s,2m,10m`.
    #[arg(long, env = "PROVISIO_RETRY_SCHEDULE", value_name = "LIST")]
    pub retry_schedule: Option<String>,
    /// An admin API token to accept (set it from the environment, not the
    /// command line, where other users can read it).
    #[arg(
        long,
        env = "PROVISIO_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// The largest emit body accepted, in bytes.
    #[arg(long, env = "PROVISIO_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<String>,
    /// Networks HTTP handlers may not reach, comma-separated CIDRs.
    #[arg(long, env = "PROVISIO_DENY_NETWORKS", value_name = "CIDRS")]
    pub deny_networks: Option<String>,
    /// SQLite durability: `full` (fsync each commit; survives power loss) or
    /// `normal` (survives a crash of provisio, not of the machine).
    #[arg(long, env = "PROVISIO_SQLITE_SYNCHRONOUS", value_name = "MODE")]
    pub sqlite_synchronous: Option<String>,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "PROVISIO_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// How long a whole before-stage chain may take, such as `10s`.
    #[arg(long, env = "PROVISIO_BEFORE_DEADLINE", value_name = "DURATION")]
    pub before_deadline: Option<String>,
    /// How many script handlers may run at once.
    #[arg(long, env = "PROVISIO_MAX_SCRIPTS", value_name = "N")]
    pub max_scripts: Option<String>,
    /// How long past a handler's timeout a claimed delivery stays leased, such
    /// as `30s`: how late another node takes over the work of one that died.
    #[arg(long, env = "PROVISIO_LEASE_MARGIN", value_name = "DURATION")]
    pub lease_margin: Option<String>,
    /// How long execution logs and finished deliveries are kept, such as `30d`
    /// (`forever` keeps them).
    #[arg(long, env = "PROVISIO_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// How long a web section login lasts, such as `12h`.
    #[arg(long, env = "PROVISIO_SESSION_TTL", value_name = "DURATION")]
    pub session_ttl: Option<String>,
}

/// The settings file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    scripts_dir: Option<String>,
    retry_schedule: Option<String>,
    admin_token: Option<String>,
    max_body_bytes: Option<u64>,
    deny_networks: Option<Vec<String>>,
    sqlite_synchronous: Option<String>,
    log_format: Option<String>,
    before_deadline: Option<String>,
    max_scripts: Option<u64>,
    database_max_connections: Option<u64>,
    database_acquire_timeout: Option<String>,
    database_statement_timeout: Option<String>,
    lease_margin: Option<String>,
    session_ttl: Option<String>,
    retention: Option<String>,
}

/// A setting's spellings, for error messages.
struct Name {
    key: &'static str,
    flag: &'static str,
    env: &'static str,
}

const LISTEN: Name = Name {
    key: "listen",
    flag: "--listen",
    env: "PROVISIO_LISTEN",
};
const DATA_DIR: Name = Name {
    key: "data_dir",
    flag: "--data-dir",
    env: "PROVISIO_DATA_DIR",
};
const DATABASE_URL: Name = Name {
    key: "database_url",
    flag: "--database-url",
    env: "PROVISIO_DATABASE_URL",
};
const SCRIPTS_DIR: Name = Name {
    key: "scripts_dir",
    flag: "--scripts-dir",
    env: "PROVISIO_SCRIPTS_DIR",
};
const RETRY_SCHEDULE: Name = Name {
    key: "retry_schedule",
    flag: "--retry-schedule",
    env: "PROVISIO_RETRY_SCHEDULE",
};
const ADMIN_TOKEN: Name = Name {
    key: "admin_token",
    flag: "--admin-token",
    env: "PROVISIO_ADMIN_TOKEN",
};
const MAX_BODY_BYTES: Name = Name {
    key: "max_body_bytes",
    flag: "--max-body-bytes",
    env: "PROVISIO_MAX_BODY_BYTES",
};
const DENY_NETWORKS: Name = Name {
    key: "deny_networks",
    flag: "--deny-networks",
    env: "PROVISIO_DENY_NETWORKS",
};
const SQLITE_SYNCHRONOUS: Name = Name {
    key: "sqlite_synchronous",
    flag: "--sqlite-synchronous",
    env: "PROVISIO_SQLITE_SYNCHRONOUS",
};
const LOG_FORMAT: Name = Name {
    key: "log_format",
    flag: "--log-format",
    env: "PROVISIO_LOG_FORMAT",
};
const BEFORE_DEADLINE: Name = Name {
    key: "before_deadline",
    flag: "--before-deadline",
    env: "PROVISIO_BEFORE_DEADLINE",
};
const DATABASE_MAX_CONNECTIONS: Name = Name {
    key: "database_max_connections",
    flag: "--database-max-connections",
    env: "PROVISIO_DATABASE_MAX_CONNECTIONS",
};
const DATABASE_ACQUIRE_TIMEOUT: Name = Name {
    key: "database_acquire_timeout",
    flag: "--database-acquire-timeout",
    env: "PROVISIO_DATABASE_ACQUIRE_TIMEOUT",
};
const DATABASE_STATEMENT_TIMEOUT: Name = Name {
    key: "database_statement_timeout",
    flag: "--database-statement-timeout",
    env: "PROVISIO_DATABASE_STATEMENT_TIMEOUT",
};
const LEASE_MARGIN: Name = Name {
    key: "lease_margin",
    flag: "--lease-margin",
    env: "PROVISIO_LEASE_MARGIN",
};
const RETENTION: Name = Name {
    key: "retention",
    flag: "--retention",
    env: "PROVISIO_RETENTION",
};
const SESSION_TTL: Name = Name {
    key: "session_ttl",
    flag: "--session-ttl",
    env: "PROVISIO_SESSION_TTL",
};
const MAX_SCRIPTS: Name = Name {
    key: "max_scripts",
    flag: "--max-scripts",
    env: "PROVISIO_MAX_SCRIPTS",
};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn invalid(name: &Name, message: impl fmt::Display) -> ConfigError {
    ConfigError(format!(
        "invalid {} ({} / {} / {} in provisio.toml): {message}",
        name.key, name.flag, name.env, name.key
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
    pub lease_margin: std::time::Duration,
    pub session_ttl: std::time::Duration,
    /// How long history is kept; `None` keeps it forever.
    pub retention: Option<std::time::Duration>,
    /// How often retention runs (not a user setting: tests shorten it).
    pub prune_every: std::time::Duration,
}

impl Settings {
    /// Settings for a test or embedding: defaults under `data_dir`, listening
    /// on a random loopback port.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self {
            store: StoreSettings {
                data_dir: data_dir.to_owned(),
                database: Database::Sqlite(data_dir.join("provisio.db")),
                sqlite_synchronous: Durability::Full,
            },
            listen: "127.0.0.1:0".parse().expect("valid address"),
            scripts_dir: data_dir.join("scripts"),
            retry_schedule: RetrySchedule::default(),
            admin_token: None,
            max_body_bytes: 1024 * 1024,
            deny_networks: provisio_engine::netguard::default_deny_list(),
            log_format: LogFormat::Text,
            before_deadline: std::time::Duration::from_secs(10),
            max_scripts: 8,
            lease_margin: std::time::Duration::from_secs(30),
            session_ttl: std::time::Duration::from_secs(12 * 3600),
            retention: Some(std::time::Duration::from_secs(30 * 86_400)),
            prune_every: std::time::Duration::from_secs(600),
        }
    }
}

fn load_file(path: Option<&Path>) -> Result<FileSettings, ConfigError> {
    let (path, required) = match path {
        Some(p) => (p.to_owned(), true),
        None => (PathBuf::from("provisio.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileSettings::default());
        }
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    };
    toml::from_str(&text).map_err(|e| {
        let message = e.message().trim().to_owned();
        ConfigError(format!("{}: {message}", path.display()))
    })
}

/// The first value given: flag or environment, then the file.
fn pick(arg: &Option<String>, file: Option<String>) -> Option<String> {
    arg.clone().filter(|s| !s.is_empty()).or(file)
}

impl StoreArgs {
    pub fn resolve(&self) -> Result<StoreSettings, ConfigError> {
        let file = load_file(self.config.as_deref())?;
        resolve_store(self, &file, None)
    }
}

fn resolve_store(
    args: &StoreArgs,
    file: &FileSettings,
    sync: Option<String>,
) -> Result<StoreSettings, ConfigError> {
    let data_dir = PathBuf::from(
        pick(&args.data_dir, file.data_dir.clone()).unwrap_or_else(|| "./data".into()),
    );
    let mut database = match pick(&args.database_url, file.database_url.clone()) {
        None => Database::Sqlite(data_dir.join("provisio.db")),
        Some(url) => parse_database_url(&url).map_err(|e| invalid(&DATABASE_URL, e))?,
    };
    if let Database::Postgres(pg) = &mut database {
        let max = match (
            &args.database_max_connections,
            file.database_max_connections,
        ) {
            (Some(s), _) if !s.is_empty() => s.parse::<u64>().map_err(|_| {
                invalid(&DATABASE_MAX_CONNECTIONS, format!("{s:?} is not a number"))
            })?,
            (_, Some(n)) => n,
            _ => u64::from(pg.max_connections),
        };
        // The change listener holds one connection; work needs at least one more.
        if !(2..=1000).contains(&max) {
            return Err(invalid(&DATABASE_MAX_CONNECTIONS, "must be from 2 to 1000"));
        }
        pg.max_connections = max as u32;
        if let Some(t) = duration(
            &DATABASE_ACQUIRE_TIMEOUT,
            pick(
                &args.database_acquire_timeout,
                file.database_acquire_timeout.clone(),
            ),
        )? {
            pg.acquire_timeout = t;
        }
        if let Some(t) = duration(
            &DATABASE_STATEMENT_TIMEOUT,
            pick(
                &args.database_statement_timeout,
                file.database_statement_timeout.clone(),
            ),
        )? {
            pg.statement_timeout = t;
        }
    }
    let sqlite_synchronous = match sync.as_deref() {
        None | Some("full") => Durability::Full,
        Some("normal") => Durability::Normal,
        Some(other) => {
            return Err(invalid(
                &SQLITE_SYNCHRONOUS,
                format!("{other:?} is not full or normal"),
            ));
        }
    };
    if data_dir.as_os_str().is_empty() {
        return Err(invalid(&DATA_DIR, "must not be empty"));
    }
    Ok(StoreSettings {
        data_dir,
        database,
        sqlite_synchronous,
    })
}

fn parse_database_url(url: &str) -> Result<Database, String> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err("a sqlite URL needs a path, such as sqlite://data/provisio.db".into());
        }
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return PgSettings::parse(url).map(Database::Postgres);
    }
    Err("must be a sqlite:// or postgres:// URL".into())
}

/// A duration setting, such as `5s` or `250ms`, more than zero.
fn duration(
    name: &Name,
    value: Option<String>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let parsed = provisio_core::retry::parse_duration(&value).map_err(|e| invalid(name, e))?;
    if parsed.is_zero() {
        return Err(invalid(name, "must be more than 0"));
    }
    Ok(Some(parsed))
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = load_file(self.store.config.as_deref())?;
        let store = resolve_store(
            &self.store,
            &file,
            pick(&self.sqlite_synchronous, file.sqlite_synchronous.clone()),
        )?;

        let listen =
            pick(&self.listen, file.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().map_err(|_| {
            invalid(
                &LISTEN,
                format!("{listen:?} is not an address such as 127.0.0.1:8080"),
            )
        })?;

        let scripts_dir = PathBuf::from(
            pick(&self.scripts_dir, file.scripts_dir.clone()).unwrap_or_else(|| "./scripts".into()),
        );
        if scripts_dir.as_os_str().is_empty() {
            return Err(invalid(&SCRIPTS_DIR, "must not be empty"));
        }

        let retry_schedule = match pick(&self.retry_schedule, file.retry_schedule.clone()) {
            None => RetrySchedule::default(),
            Some(s) => RetrySchedule::parse(&s).map_err(|e| invalid(&RETRY_SCHEDULE, e))?,
        };

        let admin_token = match pick(&self.admin_token, file.admin_token.clone()) {
            None => None,
            Some(t) if t.trim().len() < 16 => {
                return Err(invalid(
                    &ADMIN_TOKEN,
                    "must be at least 16 characters; use a long random string",
                ));
            }
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(invalid(
                    &ADMIN_TOKEN,
                    "must not contain spaces or control characters",
                ));
            }
            Some(t) => Some(Secret(t)),
        };

        let max_body_bytes = match (&self.max_body_bytes, file.max_body_bytes) {
            (Some(s), _) if !s.is_empty() => s
                .parse::<u64>()
                .map_err(|_| invalid(&MAX_BODY_BYTES, format!("{s:?} is not a number of bytes")))?,
            (_, Some(n)) => n,
            _ => 1024 * 1024,
        };
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(invalid(&MAX_BODY_BYTES, "must be from 1024 to 67108864"));
        }

        let deny_networks = match (&self.deny_networks, &file.deny_networks) {
            (Some(s), _) if !s.is_empty() => parse_networks(s.split(',')),
            (_, Some(list)) => parse_networks(list.iter().map(String::as_str)),
            _ => Ok(provisio_engine::netguard::default_deny_list()),
        }
        .map_err(|e| invalid(&DENY_NETWORKS, e))?;

        let log_format = match pick(&self.log_format, file.log_format.clone()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    &LOG_FORMAT,
                    format!("{other:?} is not text or json"),
                ));
            }
        };

        let before_deadline = match pick(&self.before_deadline, file.before_deadline.clone()) {
            None => std::time::Duration::from_secs(10),
            Some(s) => provisio_core::retry::parse_duration(&s)
                .map_err(|e| invalid(&BEFORE_DEADLINE, e))?,
        };
        if before_deadline.is_zero() || before_deadline > std::time::Duration::from_secs(300) {
            return Err(invalid(
                &BEFORE_DEADLINE,
                "must be more than 0 and at most 5m",
            ));
        }

        let max_scripts = match (&self.max_scripts, file.max_scripts) {
            (Some(s), _) if !s.is_empty() => s
                .parse::<u64>()
                .map_err(|_| invalid(&MAX_SCRIPTS, format!("{s:?} is not a number")))?,
            (_, Some(n)) => n,
            _ => 8,
        };
        if !(1..=1024).contains(&max_scripts) {
            return Err(invalid(&MAX_SCRIPTS, "must be from 1 to 1024"));
        }

        let lease_margin = duration(
            &LEASE_MARGIN,
            pick(&self.lease_margin, file.lease_margin.clone()),
        )?
        .unwrap_or(std::time::Duration::from_secs(30));
        let session_ttl = match pick(&self.session_ttl, file.session_ttl.clone()) {
            None => std::time::Duration::from_secs(12 * 3600),
            Some(s) => {
                provisio_core::retry::parse_duration(&s).map_err(|e| invalid(&SESSION_TTL, e))?
            }
        };
        if session_ttl.is_zero() {
            return Err(invalid(&SESSION_TTL, "must be more than 0"));
        }

        let retention = match pick(&self.retention, file.retention.clone()).as_deref() {
            None => Some(std::time::Duration::from_secs(30 * 86_400)),
            Some("forever") => None,
            Some(s) => match provisio_core::retry::parse_duration(s) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => Some(d),
                Ok(_) => return Err(invalid(&RETENTION, "must be at least 1s, or forever")),
                Err(e) => return Err(invalid(&RETENTION, e)),
            },
        };

        Ok(Settings {
            store,
            listen,
            scripts_dir,
            retry_schedule,
            admin_token,
            max_body_bytes: max_body_bytes as usize,
            deny_networks,
            log_format,
            before_deadline,
            max_scripts: max_scripts as usize,
            lease_margin,
            session_ttl,
            retention,
            prune_every: std::time::Duration::from_secs(600),
        })
    }
}

fn parse_networks<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<IpNet>, String> {
    items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{s:?} is not a network such as 169.254.0.0/16"))
        })
        .collect()
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
