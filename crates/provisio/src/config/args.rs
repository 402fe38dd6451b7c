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
    /// How many threads run the API and the deliveries (default: one fewer
    /// than the machine's cores, at least one).
    #[arg(long, env = "PROVISIO_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<String>,
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
    pub(super) worker_threads: Option<u64>,
}

/// A setting, by its key in `provisio.toml`. Its flag and variable are
/// spelled from the key (`max_scripts` → `--max-scripts`,
/// `PROVISIO_MAX_SCRIPTS`), as clap spells them from the field's name; a test
/// holds the two to that.
pub(super) struct Name(pub(super) &'static str);

impl Name {
    pub(super) fn key(&self) -> &'static str {
        self.0
    }

    pub(super) fn flag(&self) -> String {
        format!("--{}", self.0.replace('_', "-"))
    }

    pub(super) fn env(&self) -> String {
        format!("PROVISIO_{}", self.0.to_ascii_uppercase())
    }
}

pub(super) const LISTEN: Name = Name("listen");
pub(super) const DATA_DIR: Name = Name("data_dir");
pub(super) const DATABASE_URL: Name = Name("database_url");
pub(super) const SCRIPTS_DIR: Name = Name("scripts_dir");
pub(super) const RETRY_SCHEDULE: Name = Name("retry_schedule");
pub(super) const ADMIN_TOKEN: Name = Name("admin_token");
pub(super) const MAX_BODY_BYTES: Name = Name("max_body_bytes");
pub(super) const DENY_NETWORKS: Name = Name("deny_networks");
pub(super) const SQLITE_SYNCHRONOUS: Name = Name("sqlite_synchronous");
pub(super) const LOG_FORMAT: Name = Name("log_format");
pub(super) const BEFORE_DEADLINE: Name = Name("before_deadline");
pub(super) const DATABASE_MAX_CONNECTIONS: Name = Name("database_max_connections");
pub(super) const DATABASE_ACQUIRE_TIMEOUT: Name = Name("database_acquire_timeout");
pub(super) const DATABASE_STATEMENT_TIMEOUT: Name = Name("database_statement_timeout");
pub(super) const LEASE_MARGIN: Name = Name("lease_margin");
pub(super) const RETENTION: Name = Name("retention");
pub(super) const SESSION_TTL: Name = Name("session_ttl");
pub(super) const MAX_SCRIPTS: Name = Name("max_scripts");
pub(super) const WORKER_THREADS: Name = Name("worker_threads");

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings `Name` derives from a key are clap's: every flag's
    /// variable is `PROVISIO_` and the flag in capitals, and every `Name`
    /// is a flag `serve` has.
    #[test]
    fn flags_and_variables_are_spelled_from_the_key() {
        let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let mut flags = Vec::new();
        for arg in command.get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            let name = Name(Box::leak(long.replace('-', "_").into_boxed_str()));
            assert_eq!(env.to_str(), Some(name.env().as_str()), "--{long}");
            flags.push(format!("--{long}"));
        }
        for name in [
            LISTEN,
            DATA_DIR,
            DATABASE_URL,
            SCRIPTS_DIR,
            RETRY_SCHEDULE,
            ADMIN_TOKEN,
            MAX_BODY_BYTES,
            DENY_NETWORKS,
            SQLITE_SYNCHRONOUS,
            LOG_FORMAT,
            BEFORE_DEADLINE,
            DATABASE_MAX_CONNECTIONS,
            DATABASE_ACQUIRE_TIMEOUT,
            DATABASE_STATEMENT_TIMEOUT,
            LEASE_MARGIN,
            RETENTION,
            SESSION_TTL,
            MAX_SCRIPTS,
            WORKER_THREADS,
        ] {
            assert!(flags.contains(&name.flag()), "{} has no flag", name.key());
        }
    }
}
