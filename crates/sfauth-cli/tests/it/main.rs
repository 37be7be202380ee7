//! The `sfauth` binary's integration tests, one test binary (linked once): each file is a
//! module, and `common` holds what they share (the emulator, a `Cli` runner, stores).
//!
//! Every test runs the real `sfauth` executable against the emulator over TCP; `browser_login`
//! drives Debian's Chromium through WebDriver.

mod common;

mod browser_login;
mod cli_commands;
mod cli_daily;
mod cli_doctor_rotation;
mod cli_errors;
mod cli_numbers;
mod cli_policies;
mod cli_proxy;
mod cli_secret_rotation;
mod cli_shared_stores;
mod cli_signals;
mod cli_store_state;
mod cli_terminal;
