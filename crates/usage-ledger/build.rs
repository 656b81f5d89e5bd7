//! The integration tests embed the workspace migrations with `sqlx::migrate!`, which does not
//! track the directory on stable Rust: rebuild when a migration is added.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
