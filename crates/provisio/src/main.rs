//! `provisio`: parses the command line and hands over to the library.

use clap::{CommandFactory, Parser, Subcommand};
use provisio::client::{
    ClientArgs, DeliveriesCommand, EmitArgs, ExecutionsCommand, HandlersCommand, ReplayCommand,
    ReplayStart,
};
use provisio::config::{LogFormat, ServeArgs, StoreArgs};
use provisio::tokens::TokenCommand;

/// mimalloc rather than glibc's malloc: less CPU per delivery under fan-out
/// and drains (ARCHITECTURE.md, "Threads").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "provisio",
    version,
    about = "A self-hosted Provisioning API engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the web section and the delivery workers.
    Serve(Box<ServeArgs>),
    /// Apply the database's migrations and exit (`serve` also applies them).
    Migrate(StoreArgs),
    /// Manage API tokens in the local database.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Emit an event to a running server (or run the before chain: exit
    /// status 3 when it forbids the action).
    Emit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: EmitArgs,
    },
    /// Manage handlers on a running server.
    Handlers {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: HandlersCommand,
    },
    /// Read the execution log of a running server.
    Executions {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ExecutionsCommand,
    },
    /// Follow, retry and skip deliveries on a running server.
    Deliveries {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Send a finished or blocked delivery again.
    Redeliver {
        #[command(flatten)]
        client: ClientArgs,
        /// The delivery's id.
        delivery_id: String,
    },
    /// Resend stored events to a handler as a replay job (or a resync with
    /// --latest-per-object) and follow it until done; or show, list and
    /// cancel jobs.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Replay {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: Option<ReplayCommand>,
        #[command(flatten)]
        start: ReplayStart,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the settings (flags, environment, file) and print the
    /// effective ones, secrets masked.
    Check(Box<ServeArgs>),
}

fn main() -> std::process::ExitCode {
    // `provisio script-supervisor -- <script> <args…>` is internal: the engine
    // runs it around every script. It is not a clap subcommand, so help and
    // completions never show it, and it starts no runtime.
    if let Some(command) = provisio::supervisor::requested(std::env::args_os()) {
        return provisio::supervisor::run(&command);
    }
    let cli = Cli::parse();
    provisio::install_crypto();
    let result = match cli.command {
        // The server's settings choose its runtime's threads.
        Command::Serve(args) => args
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|settings| runtime(Some(settings.worker_threads))?.block_on(serve(settings))),
        command => runtime(None).and_then(|rt| rt.block_on(run(command))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The verdict is already printed: the status alone says "forbidden".
        Err(err) if err.is::<provisio::client::Forbidden>() => {
            std::process::ExitCode::from(provisio::client::Forbidden::EXIT_CODE)
        }
        Err(err) => {
            eprintln!("provisio: {}", provisio_core::error_line(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    Ok(builder.enable_all().build()?)
}

async fn serve(mut settings: provisio::config::Settings) -> anyhow::Result<()> {
    settings.script_supervisor = Some(provisio::serve::own_executable()?);
    init_logging(settings.log_format);
    // Every connection holds a descriptor; the usual soft limit of
    // 1,024 is reached long before the machine's.
    match provisio_server::connections::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit"),
    }
    let running = provisio::serve::start(settings).await?;
    let shutdown = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    running.wait().await
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => unreachable!("serve builds its own runtime"),
        Command::Emit { client, args } => provisio::client::emit(&client, args).await,
        Command::Handlers { client, command } => provisio::client::handlers(&client, command).await,
        Command::Executions { client, command } => {
            provisio::client::executions(&client, command).await
        }
        Command::Deliveries { client, command } => {
            provisio::client::deliveries(&client, command).await
        }
        Command::Redeliver {
            client,
            delivery_id,
        } => provisio::client::redeliver(&client, &delivery_id).await,
        Command::Replay {
            client,
            command,
            start,
        } => provisio::client::replay(&client, command, start).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "provisio", &mut script);
            provisio::output::write(&String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            provisio::output::write(&args.resolve()?.describe());
            Ok(())
        }
        Command::Migrate(args) => {
            let settings = args.resolve()?;
            init_logging(LogFormat::Text);
            provisio::out!("{}", provisio::serve::migrate(&settings).await?);
            Ok(())
        }
        Command::Token(command) => {
            init_logging(LogFormat::Text);
            provisio::tokens::run(command).await
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROVISIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every flag and argument of every subcommand says what it is for, in
    /// `--help` and in the shell completions made from the same tree.
    #[test]
    fn every_flag_and_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "provisio", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
