//! The `provisio` binary's library half: settings, the `serve` command's
//! wiring, and the token commands. `main.rs` only parses the command line.
//!
//! # Layout
//!
//! - [`config`]: flags > `PROVISIO_*` > `provisio.toml` > defaults, validated once.
//! - [`serve`]: opens the store, seeds the catalog, bootstraps the admin token,
//!   starts the engine and the HTTP server, and shuts them down in order.
//! - [`tokens`]: `provisio token create|list|revoke` on the local database.
//! - [`client`]: `provisio emit|handlers|executions|deliveries|redeliver` against a running server.
//! - [`output`]: standard output that ends quietly when its pipe closes.
//! - [`supervisor`]: the hidden `provisio script-supervisor`, run around every
//!   script so nothing the script started outlives it.

pub mod client;
pub mod config;
pub mod output;
pub mod serve;
pub mod supervisor;
pub mod tokens;

/// Installs rustls's process-wide crypto provider (ring: it builds without the
/// C toolchain aws-lc needs). HTTPS handlers and the command-line client need
/// it; a second call does nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
