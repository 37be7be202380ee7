//! `sqlx::migrate!` embeds `migrations/` when the crate compiles, but cargo does not know the
//! macro reads that folder: a migration added on its own would not be embedded until some
//! source file changed. Telling cargo to watch it rebuilds the crate when a migration appears.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
