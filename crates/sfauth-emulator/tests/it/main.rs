//! Integration tests: the emulator over real TCP, spoken to with plain HTTP (reqwest), never
//! through an sfauth crate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

mod binary;
mod common;
mod endpoints;
mod faults;
mod frontdoor;
mod gateway;
mod grants;
mod lost_answers;
mod mandate;
mod numbers;
mod policies;
mod rest_api;
mod robustness;
mod soap;
