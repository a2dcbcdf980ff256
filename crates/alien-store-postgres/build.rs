//! `sqlx::migrate!` embeds the migration files at compile time; cargo does not know them, so a
//! new or changed migration must make the crate build again.
fn main() {
    println!("cargo:rerun-if-changed=migrations_kv");
    println!("cargo:rerun-if-changed=migrations_store");
}
