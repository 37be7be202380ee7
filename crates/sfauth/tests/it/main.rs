//! sfauth's integration tests, one binary (linked once): each file is a module, `support`
//! holds what they share (a scripted store and transport, the fixture ids).
//!
//! `invariants`: the refresh protocol's promises under failures only a scripted store or
//! transport can provoke; `removal_races`; `recent_tenants`; `background_fleet`: the
//! background refresher across managers sharing a store; `change_feed`: the refresher taking
//! another worker's tokens from the store's notices; `login`: the login entry points
//! against the emulator.

mod support;

mod background_fleet;
mod change_feed;
mod invariants;
mod login;
mod recent_tenants;
mod removal_races;
