//! Project automation for sfauth, run as `cargo xtask <command>`.
fn main() {}
