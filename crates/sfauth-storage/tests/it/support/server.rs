//! Finding the real servers (Redis, PostgreSQL) that the shared stores' tests run against.
//!
//! A test reads its server's URL from an environment variable, with the machine's usual
//! server as the default. When nothing answers there it is skipped with a loud message, except
//! under `CI=true`, where a missing server is a failure: CI must never pass by testing nothing.
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The URL of the server named by `var` (or `default`) if something accepts TCP connections
/// there; `None` after a loud message when nothing does and `CI` is not `true`.
///
/// # Panics
///
/// When nothing answers and `CI=true`.
pub(crate) fn server_url(var: &str, default: &str, what: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if reachable(&url) {
        return Some(url);
    }
    let message = format!("{what} is not reachable at {url} (set {var} to point elsewhere)");
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{message}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {message}; this test checked nothing !!!!!!!!\n");
    None
}

fn reachable(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    // `url` knows no default port for these schemes.
    let default_port = match parsed.scheme() {
        "redis" | "rediss" => 6379,
        "postgres" | "postgresql" => 5432,
        _ => return false,
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let port = parsed.port().unwrap_or(default_port);
    let Ok(addresses) = (host, port).to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok())
}
