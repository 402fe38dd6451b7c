//! `provisio serve`: wires storage, engine and HTTP server together.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use provisio_engine::{Engine, EngineConfig};
use provisio_server::{AppState, ServerConfig};
use provisio_store::Store;
use provisio_store::postgres::PgStore;
use provisio_store::sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Database, Settings, StoreSettings};

/// How long an emit waits for the SQLite writer before answering 503.
const SQLITE_EMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The name the bootstrap admin token is stored under.
pub const ADMIN_TOKEN_NAME: &str = "admin";

/// A running server: its address, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin token generated on this start, if one was (it is printed once
    /// and written to `<data-dir>/admin-token`).
    pub generated_token: Option<String>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting requests, drains the engine, and waits for both.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("the server task panicked")?
    }

    /// Waits until the server stops (after [`Running::shutdown_token`] fires).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Opens the configured database (creating the data directory if needed) and
/// brings its schema up to date.
pub async fn open_store(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    create_private_dir(&settings.data_dir)?;
    match &settings.database {
        Database::Sqlite(path) => {
            let store = SqliteStore::open(path, settings.sqlite_synchronous)
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Database::Postgres(pg) => {
            let store = PgStore::connect(pg).await.map_err(|err| match err {
                provisio_store::StoreError::Database(cause) => anyhow::anyhow!(
                    "cannot connect to PostgreSQL at {}: {cause}",
                    pg.display_target()
                ),
                other => anyhow::Error::new(other)
                    .context(format!("cannot use PostgreSQL at {}", pg.display_target())),
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// `provisio migrate`: applies the configured database's migrations and
/// returns, for deployments that upgrade the schema as a separate step.
pub async fn migrate(settings: &StoreSettings) -> anyhow::Result<String> {
    open_store(settings).await?;
    Ok(match &settings.database {
        Database::Sqlite(path) => format!("the database {} is up to date", path.display()),
        Database::Postgres(pg) => format!("the database {} is up to date", pg.display_target()),
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// This process's own executable, to run as the script supervisor. It is
/// `/proc/self/exe` rather than the file's path: the child that executes it
/// runs this very build even after a package upgrade has replaced or removed
/// the file, so supervisor and engine always agree.
pub fn own_executable() -> anyhow::Result<PathBuf> {
    let exe = PathBuf::from("/proc/self/exe");
    std::fs::read_link(&exe)
        .context("cannot find this executable at /proc/self/exe (is /proc mounted?); scripts need it to run under a supervisor")?;
    Ok(exe)
}

/// Starts everything and returns once the listener is bound and the engine runs.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    crate::install_crypto();
    provisio_server::telemetry::handle();
    // SQLite is one node's file; PostgreSQL is shared by design.
    let lock = match &settings.store.database {
        Database::Sqlite(_) => Some(lock_data_dir(&settings.store.data_dir)?),
        Database::Postgres(_) => None,
    };
    let store = open_store(&settings.store).await?;
    store
        .seed_event_types(&provisio_core::catalog::builtin())
        .await?;
    let generated_token = bootstrap_admin_token(store.as_ref(), &settings).await?;
    if !settings.scripts_dir.is_dir() {
        tracing::warn!(dir = %settings.scripts_dir.display(), "the scripts directory does not exist; script handlers cannot be created");
    }

    let mut engine_config = EngineConfig::new(settings.scripts_dir.clone());
    engine_config.retry_schedule = settings.retry_schedule.clone();
    engine_config.deny_networks = settings.deny_networks.clone();
    engine_config.before_deadline = settings.before_deadline;
    engine_config.max_scripts = settings.max_scripts;
    engine_config.retention = settings.retention;
    engine_config.prune_every = settings.prune_every;
    engine_config.lease_margin = settings.lease_margin;
    engine_config.emit_timeout = match &settings.store.database {
        Database::Postgres(pg) => pg.acquire_timeout,
        // SQLite's writer is local: only a stuck disk makes it this slow.
        Database::Sqlite(_) => SQLITE_EMIT_TIMEOUT,
    };
    engine_config.script_supervisor = settings.script_supervisor.clone();
    let engine = Engine::start(store, engine_config).await?;

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState::new(
        engine.clone(),
        ServerConfig {
            max_body_bytes: settings.max_body_bytes,
            session_ttl: settings.session_ttl,
            ..ServerConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let served =
            provisio_server::run(listener, state, async move { stop.cancelled().await }).await;
        engine.shutdown().await;
        drop(lock);
        served.context("the HTTP server failed")
    });
    tracing::info!(%addr, "provisio is listening");
    Ok(Running {
        addr,
        generated_token,
        shutdown,
        task,
    })
}

/// Holds an exclusive lock on the data directory for the life of the server,
/// so two servers never share one SQLite queue.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    create_private_dir(dir)?;
    let path = dir.join("provisio.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another provisio server is using the data directory {}",
            dir.display()
        )
    })?;
    Ok(file)
}

/// Applies `PROVISIO_ADMIN_TOKEN`, or generates a token when none is stored.
async fn bootstrap_admin_token(
    store: &dyn Store,
    settings: &Settings,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = &settings.admin_token {
        let hash = provisio_server::auth::hash_token(token.expose());
        // The same value as another live token would make two names for one
        // credential; say which, so the operator knows what to revoke.
        if let Some(other) = store.find_token(&hash).await?
            && other.name != ADMIN_TOKEN_NAME
        {
            anyhow::bail!(
                "PROVISIO_ADMIN_TOKEN is already the live token named {:?}; revoke that one (provisio token revoke --id {}) or choose another value",
                other.name,
                other.id
            );
        }
        store.put_token(ADMIN_TOKEN_NAME, &hash).await?;
        return Ok(None);
    }
    let live = store
        .list_tokens()
        .await?
        .into_iter()
        .any(|t| t.revoked_at.is_none());
    if live {
        return Ok(None);
    }
    let token = provisio_server::auth::generate_token();
    store
        .put_token(ADMIN_TOKEN_NAME, &provisio_server::auth::hash_token(&token))
        .await?;
    let path = settings.store.data_dir.join("admin-token");
    write_private(&path, &format!("{token}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Shown once; a closed standard output must not stop the server (the
    // token is in the file too).
    let _ = writeln!(
        std::io::stdout(),
        "provisio: generated an admin API token (shown once; also in {}):\n{token}",
        path.display()
    );
    Ok(Some(token))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}
