//! `SalesforceAuth`'s `sfauth.request` span, in a process of its own: tracing caches whether a
//! span is wanted per call site for the whole process, so a test that sets a subscriber for its
//! thread alone races the tests that run beside it without one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

#[path = "it/support/emulator.rs"]
mod emulator;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use emulator::{Org, QUERY};
use reqwest::StatusCode;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use sfauth_adapters::{SalesforceAuth, instance};

fn client(org: &Org) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(SalesforceAuth::new(org.manager.clone(), org.key.clone()))
        .build()
}

async fn query(client: &ClientWithMiddleware) -> StatusCode {
    client.get(instance(QUERY)).send().await.unwrap().status()
}

/// A span's fields by name, as last recorded.
type SpanFields = BTreeMap<String, String>;

/// The fields of every `sfauth.request` span, in the order the spans opened.
#[derive(Clone, Default)]
struct RequestSpans(Arc<Mutex<Vec<(tracing::span::Id, SpanFields)>>>);

impl RequestSpans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(tracing::span::Id, SpanFields)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Fields<'a>(&'a mut SpanFields);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for RequestSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "sfauth.request" {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.lock().push((id.clone(), fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = self.lock();
        if let Some((_, fields)) = spans.iter_mut().rev().find(|(span, _)| span == id) {
            values.record(&mut Fields(fields));
        }
    }
}

#[tokio::test]
async fn the_span_says_whether_the_request_was_refreshed() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let spans = RequestSpans::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let org = Org::start().await.unwrap();
    let client = client(&org);

    assert_eq!(query(&client).await, StatusCode::OK);
    org.end_sessions();
    assert_eq!(query(&client).await, StatusCode::OK);
    let secret = org
        .manager
        .access_token(&org.key)
        .await
        .unwrap()
        .secret()
        .to_owned();

    let spans = spans.lock();
    let fields: Vec<_> = spans.iter().map(|(_, fields)| fields).collect();
    assert_eq!(fields.len(), 2, "{fields:?}");
    let expect = |fields: &SpanFields, attempt: &str, refreshed: &str| {
        assert_eq!(fields["attempt"], attempt, "{fields:?}");
        assert_eq!(fields["refreshed"], refreshed, "{fields:?}");
        assert_eq!(fields["status"], "200", "{fields:?}");
        assert_eq!(fields["tenant"], org.key.short().to_string(), "{fields:?}");
        assert!(
            fields.values().all(|value| !value.contains(&secret)),
            "{fields:?}"
        );
    };
    expect(fields[0], "1", "false");
    expect(fields[1], "2", "true");
}
