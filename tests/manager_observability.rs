//! What the TokenManager tells its operators, against the emulator over TCP: the `metrics`
//! facade (refreshes by outcome, cause and trigger, token requests, latency, coalesced callers,
//! tenants by status), the `Stats` snapshot agreeing with it, and one `sfauth.refresh` span per
//! refresh carrying its outcome and cause.
//!
//! One test in this binary: it installs the process-wide metrics recorder.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sfauth::{ErrorKind, MemoryStore};
use sfauth_emulator::Clock;
use sfauth_tests::Env;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

const HOUR: Duration = Duration::from_secs(3600);

/// The fields of every `sfauth.refresh` span, as recorded by the time it closed.
#[derive(Clone, Default)]
struct RefreshSpans(Arc<Mutex<HashMap<u64, HashMap<String, String>>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for RefreshSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "sfauth.refresh" {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().insert(id.into_u64(), fields);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl RefreshSpans {
    fn outcomes(&self) -> Vec<(String, String)> {
        let spans = self.0.lock().unwrap();
        let mut outcomes: Vec<_> = spans
            .values()
            .map(|f| (f["outcome"].clone(), f["cause"].clone()))
            .collect();
        outcomes.sort();
        outcomes
    }
}

/// Every metric as `name{label=value,...}` (labels sorted), with its value.
fn metrics(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            )
        })
        .collect()
}

fn counter(metrics: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match metrics.get(name) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{name}: {other:?} in {:?}", metrics.keys()),
    }
}

fn gauge(metrics: &HashMap<String, DebugValue>, name: &str) -> f64 {
    match metrics.get(name) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{name}: {other:?} in {:?}", metrics.keys()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_are_counted_by_outcome_and_cause_and_traced() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();
    let spans = RefreshSpans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();

    // Tokens issued two hours before the real clock, with a one-hour session timeout: due at
    // once, while the emulator (caught up) issues fresh ones.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let env = Env::start_with(|b| b.clock(Clock::manual(now_ms - 2 * HOUR.as_millis() as i64)))
        .await
        .unwrap();
    let manager = env
        .manager_builder(env.client().unwrap().with_session_timeout(HOUR))
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let key = env.store_login(&manager, "default").await.unwrap();
    env.emulator.advance(2 * HOUR);
    let client_id = env.creds().client_id.clone();
    env.emulator
        .set_policy(&client_id, |p| p.refresh_latency_ms = 200)
        .unwrap();

    // Twenty callers at expiry: one refresh, the rest served by it.
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (manager, key) = (manager.clone(), key.clone());
        callers.spawn(async move { manager.access_token(&key).await.map(|_| ()) });
    }
    for result in callers.join_all().await {
        result.unwrap();
    }

    // Then an admin revokes the user: the next forced refresh needs a new login.
    env.emulator
        .revoke_user_tokens(&env.creds().username)
        .unwrap();
    let error = manager.refresh(&key).await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::ReauthorizationRequired,
        "{error:?}"
    );
    let stats = manager.stats();

    let metrics = metrics(&snapshotter);
    assert_eq!(
        counter(
            &metrics,
            "sfauth_refreshes_total{cause=none,outcome=refreshed,trigger=expiring}"
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            "sfauth_refreshes_total{cause=token_expired_or_revoked,outcome=reauth_required,trigger=forced}"
        ),
        1
    );
    assert_eq!(counter(&metrics, "sfauth_token_requests_total{}"), 2);
    assert_eq!(stats.token_requests, 2);
    // Nineteen callers waited on the one refresh; snapshot and metric agree.
    let coalesced = counter(&metrics, "sfauth_coalesced_callers_total{}");
    assert_eq!(coalesced, stats.coalesced);
    assert!(coalesced >= 1, "the stampede coalesced nobody");
    match metrics.get("sfauth_refresh_duration_seconds{}") {
        Some(DebugValue::Histogram(samples)) => {
            assert_eq!(samples.len(), 2);
            // The slow endpoint's 200 ms shows in the first one.
            assert!(samples.iter().any(|s| s.into_inner() >= 0.2), "{samples:?}");
        }
        other => panic!("no latency histogram: {other:?}"),
    }
    assert_eq!(gauge(&metrics, "sfauth_tenants{status=active}"), 0.0);
    assert_eq!(
        gauge(&metrics, "sfauth_tenants{status=reauth_required}"),
        1.0
    );
    assert_eq!((stats.tenants, stats.tenants_reauth_required), (1, 1));

    assert_eq!(
        spans.outcomes(),
        vec![
            (
                "reauth_required".to_owned(),
                "token_expired_or_revoked".to_owned()
            ),
            ("refreshed".to_owned(), "none".to_owned()),
        ]
    );
}
