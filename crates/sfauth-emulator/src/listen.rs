//! The accept loop: every connection served by hyper's HTTP/1 server with a header read
//! timeout, so that neither an idle keep-alive connection nor a client that never finishes its
//! request head is held forever by a server people leave running for days.
//!
//! `axum::serve` gives no handle on hyper's connection settings (it has no timer, so no
//! timeout can apply), hence this loop of our own. hyper starts the header read timer as soon
//! as a connection is ready for a request head, idle keep-alive time included, so the one
//! timeout bounds both the wait for the first byte and a slow head. The body's own timeout and
//! size limit are applied where the body is read ([`crate::routes`]).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Uri;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::context::Peer;

/// Serves `app` on `listener` until `stop` turns true (or its sender is gone), then lets every
/// open connection finish its request in progress and waits for them all.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    // Every connection task holds a receiver; `closed()` resolves once the last one is gone.
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            down = stop.wait_for(|down| *down) => {
                drop(down);
                break;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the listener is still good, so wait
                // a little (as `axum::serve` does) rather than spin or stop serving.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small answers go out at once; Nagle would only add latency here.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut req = req.map(Body::new);
                // The refresh-token IP allowlist is checked against the socket's address,
                // never a header a client could set.
                req.extensions_mut().insert(Peer(peer));
                collapse_slashes(&mut req);
                app.clone().oneshot(req)
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            // The watch guard must not live across the await below (it is not `Send`).
            let stopping = async move {
                let _ = stop.wait_for(|down| *down).await;
            };
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                // Timeouts and clients that hang up mid-request end up here; not our failure.
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
    Ok(())
}

/// `//services/data/...` (what `sf` sends when an instance URL ends in `/`) is served as
/// `/services/data/...`, as Salesforce does: runs of slashes in the path become one.
fn collapse_slashes(req: &mut Request) {
    let path = req.uri().path();
    if !path.contains("//") {
        return;
    }
    let mut collapsed = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        collapsed.push(c);
    }
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{collapsed}?{q}"),
        None => collapsed,
    };
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = path_and_query.parse() else {
        // Collapsing slashes cannot make a valid path invalid; keep the original if it did.
        return;
    };
    parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubled_slashes_collapse_and_the_query_stays() {
        for (given, wanted) in [
            ("//services/data/v62.0/", "/services/data/v62.0/"),
            (
                "/services//data///v62.0/query?q=a//b",
                "/services/data/v62.0/query?q=a//b",
            ),
            ("/plain", "/plain"),
        ] {
            let mut req = Request::builder()
                .uri(given)
                .body(Body::empty())
                .unwrap_or_default();
            collapse_slashes(&mut req);
            assert_eq!(req.uri().to_string(), wanted);
        }
    }
}
