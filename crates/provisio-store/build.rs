//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds the migration files at compile time but does not tell cargo about
//! them, so a new file would otherwise be missed by an incremental build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
