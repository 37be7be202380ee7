//! `SalesforceAuthLayer` over hyper-util's client (a plain tower HTTP stack), against the
//! emulator over TCP: relative URIs resolved against the instance across ended sessions and an
//! org migration, a revoked login as a typed error, a streamed body sent once, concurrent
//! requests sharing one refresh, and a 401 a refresh cannot fix returned as it is.

use crate::emulator;

use std::convert::Infallible;

use bytes::Bytes;
use emulator::{Org, QUERY};
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Either, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sfauth_adapters::{BoxError, Error, ErrorKind, SalesforceAuthLayer, SalesforceAuthService};
use sfauth_emulator::{Endpoint, Fault, FaultKind, Gateway};
use tower::{Layer as _, ServiceExt as _};

/// A body sent whole (retried after a refresh) or streamed (sent once).
type Body = Either<Full<Bytes>, BoxBody<Bytes, Infallible>>;

type Service = SalesforceAuthService<Client<HttpConnector, Body>>;

fn service(org: &Org) -> Service {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    SalesforceAuthLayer::new(org.manager.clone(), org.key.clone()).layer(client)
}

fn get(body: Body) -> Request<Body> {
    let mut request = Request::new(body);
    *request.uri_mut() = http::Uri::from_static(QUERY);
    request
}

fn whole() -> Body {
    Either::Left(Full::new(Bytes::new()))
}

/// `request` through `service`: its status and body, or the service's error.
async fn send(service: &Service, request: Request<Body>) -> Result<(StatusCode, String), BoxError> {
    let response = service.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn relative_uris_keep_working_across_ended_sessions_and_a_migration() {
    let org = Org::start().await.unwrap();
    let service = service(&org);

    let (status, body) = send(&service, get(whole())).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Acme Corporation"), "{body}");

    org.end_sessions();
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(org.refreshes(), 1);

    let moved = Gateway::builder(org.emulator.base_url())
        .start()
        .await
        .unwrap();
    org.migrate(moved.url()).unwrap();
    org.end_sessions();
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        moved.counters().requests,
        1,
        "the retry went to the new instance"
    );
    assert_eq!(org.refreshes(), 2);
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(moved.counters().requests, 2);
}

#[tokio::test]
async fn a_revoked_login_is_reauthorization_required() {
    let org = Org::start().await.unwrap();
    let service = service(&org);
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );

    org.revoke().unwrap();
    let error = send(&service, get(whole())).await.unwrap_err();
    let ours = error
        .downcast_ref::<Error>()
        .expect("the layer's own error");
    assert_eq!(ours.kind(), ErrorKind::ReauthorizationRequired);
}

#[tokio::test]
async fn a_streamed_body_is_not_sent_twice() {
    let org = Org::start().await.unwrap();
    let service = service(&org);
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );
    org.end_sessions();

    let before = org.rest_requests();
    let streamed = Either::Right(Full::new(Bytes::from_static(b"once")).boxed());
    let (status, body) = send(&service, get(streamed)).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("INVALID_SESSION_ID"), "{body}");
    assert_eq!(org.rest_requests(), before + 1, "sent once");
    assert_eq!(org.refreshes(), 0);

    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(org.refreshes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_refresh() {
    let org = Org::start().await.unwrap();
    let service = service(&org);
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );
    org.end_sessions();

    let requests = (0..1000).map(|_| {
        let service = service.clone();
        tokio::spawn(async move { send(&service, get(whole())).await.unwrap().0 })
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(org.refreshes(), 1);
}

#[tokio::test]
async fn a_401_a_refresh_cannot_fix_is_returned_as_it_is() {
    let org = Org::start().await.unwrap();
    let service = service(&org);
    assert_eq!(
        send(&service, get(whole())).await.unwrap().0,
        StatusCode::OK
    );

    let not_for_rest = r#"[{"message":"This session is not valid for use with the REST API","errorCode":"INVALID_SESSION_ID"}]"#;
    org.emulator.inject_fault(
        Fault::new(
            Endpoint::Rest,
            FaultKind::Response {
                status: 401,
                content_type: "application/json;charset=UTF-8".into(),
                body: not_for_rest.into(),
            },
        )
        .times(1),
    );
    let before = org.rest_requests();
    let response = service.clone().oneshot(get(whole())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/json;charset=UTF-8"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, not_for_rest.as_bytes());
    assert_eq!(org.rest_requests(), before + 1, "not retried");
    assert_eq!(org.refreshes(), 0);
}
