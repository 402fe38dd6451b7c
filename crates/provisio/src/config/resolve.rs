//! Turning what users wrote into validated [`Settings`]: one function per
//! command's settings, one line naming the setting for anything wrong.

use std::path::PathBuf;

use ipnet::IpNet;
use provisio_core::retry::RetrySchedule;
use provisio_store::postgres::PgSettings;
use provisio_store::sqlite::Durability;

use super::args::*;
use super::*;

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
        pick(&args.data_dir, file.data_dir.clone()).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    );
    let mut database = match pick(&args.database_url, file.database_url.clone()) {
        None => Database::Sqlite(data_dir.join("provisio.db")),
        Some(url) => parse_database_url(&url).map_err(|e| invalid(&DATABASE_URL, e))?,
    };
    if let Database::Postgres(pg) = &mut database {
        // The change listener holds one connection; work needs at least one more.
        let max = count(
            &DATABASE_MAX_CONNECTIONS,
            &args.database_max_connections,
            file.database_max_connections,
            pg.max_connections as usize,
            2..=1000,
        )?;
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

/// A whole-number setting within `range`: the flag or variable, then the
/// file, then `default`.
fn count(
    name: &Name,
    arg: &Option<String>,
    file: Option<u64>,
    default: usize,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, ConfigError> {
    let n = match (arg, file) {
        (Some(s), _) if !s.is_empty() => s
            .parse::<u64>()
            .map_err(|_| invalid(name, format!("{s:?} is not a number")))?,
        (_, Some(n)) => n,
        _ => default as u64,
    };
    if !range.contains(&n) {
        return Err(invalid(
            name,
            format!("must be from {} to {}", range.start(), range.end()),
        ));
    }
    Ok(n as usize)
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = load_file(self.store.config.as_deref())?;
        let store = resolve_store(
            &self.store,
            &file,
            pick(&self.sqlite_synchronous, file.sqlite_synchronous.clone()),
        )?;

        // Every default comes from here (see `Settings::for_data_dir`).
        let defaults = Settings::for_data_dir(&store.data_dir);
        let listen =
            pick(&self.listen, file.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen.parse().map_err(|_| {
            invalid(
                &LISTEN,
                format!("{listen:?} is not an address such as 127.0.0.1:8080"),
            )
        })?;

        let scripts_dir = PathBuf::from(
            pick(&self.scripts_dir, file.scripts_dir.clone())
                .unwrap_or_else(|| DEFAULT_SCRIPTS_DIR.into()),
        );
        if scripts_dir.as_os_str().is_empty() {
            return Err(invalid(&SCRIPTS_DIR, "must not be empty"));
        }

        let retry_schedule = match pick(&self.retry_schedule, file.retry_schedule.clone()) {
            None => defaults.retry_schedule,
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
            _ => defaults.max_body_bytes as u64,
        };
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(invalid(&MAX_BODY_BYTES, "must be from 1024 to 67108864"));
        }

        let deny_networks = match (&self.deny_networks, &file.deny_networks) {
            (Some(s), _) if !s.is_empty() => parse_networks(s.split(',')),
            (_, Some(list)) => parse_networks(list.iter().map(String::as_str)),
            _ => Ok(defaults.deny_networks),
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
            None => defaults.before_deadline,
            Some(s) => provisio_core::retry::parse_duration(&s)
                .map_err(|e| invalid(&BEFORE_DEADLINE, e))?,
        };
        if before_deadline.is_zero() || before_deadline > std::time::Duration::from_secs(300) {
            return Err(invalid(
                &BEFORE_DEADLINE,
                "must be more than 0 and at most 5m",
            ));
        }

        let max_scripts = count(
            &MAX_SCRIPTS,
            &self.max_scripts,
            file.max_scripts,
            defaults.max_scripts,
            1..=1024,
        )?;
        let worker_threads = count(
            &WORKER_THREADS,
            &self.worker_threads,
            file.worker_threads,
            defaults.worker_threads,
            1..=1024,
        )?;

        let lease_margin = duration(
            &LEASE_MARGIN,
            pick(&self.lease_margin, file.lease_margin.clone()),
        )?
        .unwrap_or(defaults.lease_margin);
        let session_ttl = match pick(&self.session_ttl, file.session_ttl.clone()) {
            None => defaults.session_ttl,
            Some(s) => {
                provisio_core::retry::parse_duration(&s).map_err(|e| invalid(&SESSION_TTL, e))?
            }
        };
        if session_ttl.is_zero() {
            return Err(invalid(&SESSION_TTL, "must be more than 0"));
        }

        let retention = match pick(&self.retention, file.retention.clone()).as_deref() {
            None => defaults.retention,
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
            max_scripts,
            worker_threads,
            lease_margin,
            session_ttl,
            retention,
            prune_every: defaults.prune_every,
            script_supervisor: None,
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
