//! sfauth-adapters' integration tests, one binary (linked once): each file is a module, all
//! against the emulator over TCP. `middleware_span` stays a binary of its own: it installs a
//! global tracing subscriber.

#[path = "support/emulator.rs"]
mod emulator;

mod connect_org_browser;
mod login_router;
mod middleware;
mod tower;
mod webhook;
