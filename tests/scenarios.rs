//! The end-to-end scenarios that can share one test process, one module (and file) each.
//!
//! `cargo test -p sfauth-tests --test scenarios` runs them all; a module's path filters one
//! scenario (`… --test scenarios core_flows::`). The scenarios that need a process of their own
//! are separate targets: see `Cargo.toml`.

mod core_errors;
mod core_flows;
mod core_hosts;
mod manager_gateway;
mod manager_processes;
mod manager_reauth;
mod manager_refresh;
mod manager_renewal;
mod platform_2026;
