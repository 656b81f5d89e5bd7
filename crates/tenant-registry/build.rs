//! `sqlx::migrate!` embeds the migration files at compile time but, on stable Rust, does not
//! ask to be rebuilt when a file is added to the directory: without this, an incremental build
//! keeps the old list and the readiness check (`applied >= known`) passes on a stale schema.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
