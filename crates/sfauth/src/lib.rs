//! The sfauth facade: the crate most applications depend on.
//!
//! It ties `sfauth-core` (flows and types), `sfauth-transport` (HTTP) and `sfauth-storage`
//! (persistence) together behind the `TokenManager`, which hands out valid access tokens and
//! refreshes them safely. The manager arrives with its own issue; until then this crate only
//! fixes the dependency edges of the layer diagram in `docs/ARCHITECTURE.md`.
