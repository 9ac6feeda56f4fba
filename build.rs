//! Rebuild when a migration changes: `sqlx::migrate!` embeds `migrations/` at compile time,
//! and a proc macro cannot tell cargo which files it read (sqlx's documented advice).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
