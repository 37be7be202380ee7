//! Shared helpers for the end-to-end tests in this package.
//!
//! Each scenario is its own test target (`cargo test -p sfauth-tests --test NAME`), so one can
//! be run alone; what several scenarios need lives here.
