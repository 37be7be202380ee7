//! Integrations of sfauth with the HTTP ecosystem: reqwest-middleware, tower and axum login
//! routes.
//!
//! Each adapter is a thin layer over the `TokenManager` of the `sfauth` crate, which is this
//! crate's only sfauth dependency.
