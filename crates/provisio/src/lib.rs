//! The `provisio` binary's library half: settings, the `serve` command's
//! wiring, and the token commands. `main.rs` only parses the command line.
//!
//! # Layout
//!
//! - [`config`]: flags > `PROVISIO_*` > `provisio.toml` > defaults, validated once.
//! - [`serve`]: opens the store, seeds the catalog, bootstraps the admin token,
//!   starts the engine and the HTTP server, and shuts them down in order.
//! - [`tokens`]: `provisio token create|list|revoke` on the local database.

pub mod config;
pub mod serve;
pub mod tokens;
