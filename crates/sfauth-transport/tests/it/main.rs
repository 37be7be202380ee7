//! sfauth-transport's integration tests, one binary: each file is a module.
//!
//! `loopback`: the transports against a real HTTP server on loopback; `proxy`: requests that
//! leave through an HTTP `CONNECT` proxy to a TLS server, as an allowlisted egress does.

mod loopback;
mod proxy;
