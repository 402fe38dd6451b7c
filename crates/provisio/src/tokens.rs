//! `provisio token …`: manage API tokens directly in the local database.

use clap::Subcommand;
use provisio_core::timefmt::format_millis;

use provisio_store::{TokenRecord, TokenRef};

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
    /// Revoke one token by id or name.
    Revoke {
        /// The token's id or name. Refused when it is the id of one live
        /// token and the name of another: then say --id or --name.
        #[arg(required_unless_present_any = ["id", "name"], conflicts_with_all = ["id", "name"])]
        token: Option<String>,
        /// Revoke the live token with this id.
        #[arg(long, conflicts_with = "name")]
        id: Option<i64>,
        /// Revoke the live token with this name.
        #[arg(long)]
        name: Option<String>,
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
            if name.parse::<i64>().is_ok() {
                // It would read as another token's id in `token revoke`.
                anyhow::bail!("--name must not be a number");
            }
            let store = open_store(&store.resolve()?).await?;
            let token = provisio_server::auth::generate_token();
            store
                .create_token(name, &provisio_server::auth::hash_token(&token))
                .await?;
            crate::out!("{token}");
        }
        TokenCommand::List { store } => {
            let store = open_store(&store.resolve()?).await?;
            crate::out!("{:<6} {:<24} {:<30} STATUS", "ID", "NAME", "CREATED");
            for t in store.list_tokens().await? {
                let status = match t.revoked_at {
                    Some(at) => format!("revoked {}", format_millis(at)),
                    None => "live".into(),
                };
                crate::out!(
                    "{:<6} {:<24} {:<30} {status}",
                    t.id,
                    t.name,
                    format_millis(t.created_at)
                );
            }
        }
        TokenCommand::Revoke {
            token,
            id,
            name,
            store,
        } => {
            let store = open_store(&store.resolve()?).await?;
            let (target, described) = match (&token, id, &name) {
                (_, Some(id), _) => (TokenRef::Id(id), format!("id {id}")),
                (_, _, Some(name)) => (TokenRef::Name(name), format!("name {name:?}")),
                (Some(text), None, None) => {
                    let id = resolve(&store.list_tokens().await?, text)?;
                    (TokenRef::Id(id), format!("id {id}"))
                }
                (None, None, None) => {
                    anyhow::bail!("say which token: an id or name, --id or --name")
                }
            };
            if !store.revoke_token(target).await? {
                anyhow::bail!("no live token with {described}");
            }
            crate::out!("revoked the token with {described}");
        }
    }
    Ok(())
}

/// The id of the one live token that `text` names, by id or by name. A
/// number that is the id of one live token and the name of another is
/// refused rather than guessed: revoking the wrong one (say, the admin token)
/// locks an operator out or leaves a leaked token working.
fn resolve(tokens: &[TokenRecord], text: &str) -> anyhow::Result<i64> {
    let live = || tokens.iter().filter(|t| t.revoked_at.is_none());
    let by_id = text
        .parse::<i64>()
        .ok()
        .and_then(|id| live().find(|t| t.id == id));
    let by_name = live().find(|t| t.name == text);
    match (by_id, by_name) {
        (Some(a), Some(b)) if a.id != b.id => anyhow::bail!(
            "{text:?} is the id of the token named {:?} and the name of token {}; say --id {text} or --name {text}",
            a.name,
            b.id
        ),
        (Some(t), _) | (None, Some(t)) => Ok(t.id),
        (None, None) => anyhow::bail!("no live token with id or name {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use provisio_store::TokenHash;

    use super::*;

    fn token(id: i64, name: &str, live: bool) -> TokenRecord {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        TokenRecord {
            id,
            name: name.into(),
            hash: TokenHash([id as u8; 32]),
            created_at: at,
            revoked_at: (!live).then_some(at),
        }
    }

    #[test]
    fn a_number_that_is_one_tokens_id_and_anothers_name_is_refused() {
        let tokens = [token(3, "admin", true), token(7, "3", true)];
        let err = resolve(&tokens, "3").unwrap_err().to_string();
        assert!(err.contains("--id 3") && err.contains("--name 3"), "{err}");
    }

    #[test]
    fn an_unambiguous_id_or_name_picks_exactly_one_token() {
        let tokens = [
            token(3, "admin", true),
            token(7, "3", false),
            token(8, "ci", true),
        ];
        assert_eq!(
            resolve(&tokens, "3").unwrap(),
            3,
            "the revoked name does not count"
        );
        assert_eq!(resolve(&tokens, "ci").unwrap(), 8);
        assert_eq!(resolve(&tokens, "8").unwrap(), 8);
        assert!(
            resolve(&tokens, "7").is_err(),
            "revoked tokens are not live"
        );
        assert!(resolve(&tokens, "nobody").is_err());
    }
}
