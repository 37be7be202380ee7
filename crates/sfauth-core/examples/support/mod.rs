//! A canned transport for the examples: answers each request with the next scripted reply and
//! prints only the method and path of what was sent (never headers or bodies, which carry
//! credentials). Swap it for `sfauth-transport`'s reqwest transport to talk to Salesforce.

#![allow(dead_code, reason = "each example uses only some of these helpers")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sfauth_core::http::{
    HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};

/// A token response as Salesforce sends it (no `expires_in`; `issued_at` in milliseconds).
pub(crate) const TOKEN: &str = r#"{"access_token":"00D5e000000Abcd!AQ4AQExampleOnly","refresh_token":"5Aep861ExampleOnly","scope":"refresh_token api id","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","token_type":"Bearer","issued_at":"1700000000123"}"#;

/// A transport answering with `replies` in order: `(status, JSON body)`.
pub(crate) fn script(replies: Vec<(u16, &'static str)>) -> impl HttpTransport {
    let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
    move |request: HttpRequest| {
        let next = replies.lock().ok().and_then(|mut r| r.pop_front());
        eprintln!("-> {} {}", request.method(), request.uri().path());
        async move {
            let (status, body) = next.ok_or_else(|| {
                TransportError::new(TransportErrorKind::Other, "script exhausted")
            })?;
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json;charset=UTF-8")
                .body(Bytes::from_static(body.as_bytes()))
                .map_err(|e| {
                    TransportError::new(TransportErrorKind::Other, "bad canned response")
                        .with_source(e)
                })
                .map(|response: HttpResponse| response)
        }
    }
}
