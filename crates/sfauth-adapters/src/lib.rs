//! Reserved for integrations of sfauth with the HTTP ecosystem: reqwest-middleware, tower and
//! axum login routes. None is written yet; this crate has no items.
//!
//! When they come, each adapter is to be a thin layer over the `TokenManager` of the `sfauth`
//! crate, which is this crate's only sfauth dependency.
