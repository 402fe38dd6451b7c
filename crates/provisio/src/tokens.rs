//! `provisio token …`: manage API tokens directly in the local database.

use clap::Subcommand;
use provisio_core::timefmt::format_millis;

use crate::config::StoreArgs;
use crate::serve::open_store;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// A name to recognise the token by, unique among live tokens.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by id or name.
    Revoke {
        /// The token's id or name.
        token: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, store } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 100 {
                anyhow::bail!("--name must be 1 to 100 characters");
            }
            let store = open_store(&store.resolve()?).await?;
            let token = provisio_server::auth::generate_token();
            store
                .create_token(name, &provisio_server::auth::hash_token(&token))
                .await?;
            println!("{token}");
        }
        TokenCommand::List { store } => {
            let store = open_store(&store.resolve()?).await?;
            println!("{:<6} {:<24} {:<30} STATUS", "ID", "NAME", "CREATED");
            for t in store.list_tokens().await? {
                let status = match t.revoked_at {
                    Some(at) => format!("revoked {}", format_millis(at)),
                    None => "live".into(),
                };
                println!(
                    "{:<6} {:<24} {:<30} {status}",
                    t.id,
                    t.name,
                    format_millis(t.created_at)
                );
            }
        }
        TokenCommand::Revoke { token, store } => {
            let store = open_store(&store.resolve()?).await?;
            if !store.revoke_token(&token).await? {
                anyhow::bail!("no live token with id or name {token:?}");
            }
            println!("revoked {token}");
        }
    }
    Ok(())
}
