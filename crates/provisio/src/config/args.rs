//! The settings as users write them: clap's flags and `PROVISIO_*` variables,
//! the `provisio.toml` file, and each setting's spellings for error messages.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use super::ConfigError;

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
pub(super) struct FileSettings {
    pub(super) listen: Option<String>,
    pub(super) data_dir: Option<String>,
    pub(super) database_url: Option<String>,
    pub(super) scripts_dir: Option<String>,
    pub(super) retry_schedule: Option<String>,
    pub(super) admin_token: Option<String>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) deny_networks: Option<Vec<String>>,
    pub(super) sqlite_synchronous: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) before_deadline: Option<String>,
    pub(super) max_scripts: Option<u64>,
    pub(super) database_max_connections: Option<u64>,
    pub(super) database_acquire_timeout: Option<String>,
    pub(super) database_statement_timeout: Option<String>,
    pub(super) lease_margin: Option<String>,
    pub(super) session_ttl: Option<String>,
    pub(super) retention: Option<String>,
}

/// A setting's spellings, for error messages.
pub(super) struct Name {
    pub(super) key: &'static str,
    pub(super) flag: &'static str,
    pub(super) env: &'static str,
}

pub(super) const LISTEN: Name = Name {
    key: "listen",
    flag: "--listen",
    env: "PROVISIO_LISTEN",
};
pub(super) const DATA_DIR: Name = Name {
    key: "data_dir",
    flag: "--data-dir",
    env: "PROVISIO_DATA_DIR",
};
pub(super) const DATABASE_URL: Name = Name {
    key: "database_url",
    flag: "--database-url",
    env: "PROVISIO_DATABASE_URL",
};
pub(super) const SCRIPTS_DIR: Name = Name {
    key: "scripts_dir",
    flag: "--scripts-dir",
    env: "PROVISIO_SCRIPTS_DIR",
};
pub(super) const RETRY_SCHEDULE: Name = Name {
    key: "retry_schedule",
    flag: "--retry-schedule",
    env: "PROVISIO_RETRY_SCHEDULE",
};
pub(super) const ADMIN_TOKEN: Name = Name {
    key: "admin_token",
    flag: "--admin-token",
    env: "PROVISIO_ADMIN_TOKEN",
};
pub(super) const MAX_BODY_BYTES: Name = Name {
    key: "max_body_bytes",
    flag: "--max-body-bytes",
    env: "PROVISIO_MAX_BODY_BYTES",
};
pub(super) const DENY_NETWORKS: Name = Name {
    key: "deny_networks",
    flag: "--deny-networks",
    env: "PROVISIO_DENY_NETWORKS",
};
pub(super) const SQLITE_SYNCHRONOUS: Name = Name {
    key: "sqlite_synchronous",
    flag: "--sqlite-synchronous",
    env: "PROVISIO_SQLITE_SYNCHRONOUS",
};
pub(super) const LOG_FORMAT: Name = Name {
    key: "log_format",
    flag: "--log-format",
    env: "PROVISIO_LOG_FORMAT",
};
pub(super) const BEFORE_DEADLINE: Name = Name {
    key: "before_deadline",
    flag: "--before-deadline",
    env: "PROVISIO_BEFORE_DEADLINE",
};
pub(super) const DATABASE_MAX_CONNECTIONS: Name = Name {
    key: "database_max_connections",
    flag: "--database-max-connections",
    env: "PROVISIO_DATABASE_MAX_CONNECTIONS",
};
pub(super) const DATABASE_ACQUIRE_TIMEOUT: Name = Name {
    key: "database_acquire_timeout",
    flag: "--database-acquire-timeout",
    env: "PROVISIO_DATABASE_ACQUIRE_TIMEOUT",
};
pub(super) const DATABASE_STATEMENT_TIMEOUT: Name = Name {
    key: "database_statement_timeout",
    flag: "--database-statement-timeout",
    env: "PROVISIO_DATABASE_STATEMENT_TIMEOUT",
};
pub(super) const LEASE_MARGIN: Name = Name {
    key: "lease_margin",
    flag: "--lease-margin",
    env: "PROVISIO_LEASE_MARGIN",
};
pub(super) const RETENTION: Name = Name {
    key: "retention",
    flag: "--retention",
    env: "PROVISIO_RETENTION",
};
pub(super) const SESSION_TTL: Name = Name {
    key: "session_ttl",
    flag: "--session-ttl",
    env: "PROVISIO_SESSION_TTL",
};
pub(super) const MAX_SCRIPTS: Name = Name {
    key: "max_scripts",
    flag: "--max-scripts",
    env: "PROVISIO_MAX_SCRIPTS",
};

pub(super) fn load_file(path: Option<&Path>) -> Result<FileSettings, ConfigError> {
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
pub(super) fn pick(arg: &Option<String>, file: Option<String>) -> Option<String> {
    arg.clone().filter(|s| !s.is_empty()).or(file)
}
