//! The cached-token hot path of `TokenManager`, measured against what callers would otherwise
//! use (`cargo xtask bench` runs it and reads the medians back).
//!
//! Every benchmark reads a fresh, cached token (with a known expiry, so the clock is checked) of
//! one tenant among [`TENANTS`]; none of them can refresh (the transport fails every request),
//! and no runtime is involved:
//!
//! - `manager/cached_token_{1t,2t}`: `manager.access_token(&key)`, the keyed path;
//! - `manager/cached_token_rotating_{1t,2t}`: the keyed path over [`ROTATING`] tenants in turn;
//! - `manager/handle_token_{1t,2t}`: `tenant.access_token()` on a `Tenant` handle;
//! - `manager/handle_cached_{1t,2t}`: `tenant.cached()`, the handle's synchronous check;
//! - `baseline/mutex_{1t,2t}`: a `tokio::sync::Mutex<HashMap<TokenKey, TokenSet>>` lookup that
//!   clones the access token, as a naive cache does;
//! - `baseline/yup_oauth2_1t`: yup-oauth2's `Authenticator::token` on a valid token in its
//!   built-in token cache (seeded through its token file, so it never fetches one), and
//!   `baseline/yup_oauth2_custom_storage_1t` the same with a custom `TokenStorage`;
//! - `parts/*`: the pieces of a keyed lookup alone, to see where its time goes.
//!
//! The manager's paths are polled with `ready`, which panics if they ever wait; the baselines,
//! whose `tokio::sync::Mutex` does wait under contention, with a parking `block_on` that costs
//! the same single poll when nothing waits.
//!
//! Each benchmark runs on spawned threads and counts their time on the CPU (see [`on_threads`]):
//! `_1t` on one thread, `_2t` on two at once against the same tenant, reporting the time per call
//! on one thread (the slower one); on a two-core machine that is where a shared cache line or
//! refcount shows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails by panicking"
)]

mod common;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use sfauth_core::{TokenKey, TokenSet};

use common::ready;

/// Tenants in the manager's map (and in the baseline's): the benchmarks read one of them.
const TENANTS: usize = 10_000;

/// Tenants the rotating benchmark reads in turn.
const ROTATING: usize = 1_000;

/// The tenant every other benchmark reads.
const PROBE: usize = 4_242;

/// Runs `op` `iters` times on each of `threads` threads at once, each with its own state from
/// `make`, and returns the slowest thread's time on the CPU: criterion divides it by `iters`,
/// giving the time per call on one thread.
///
/// Time on the CPU (wall time less the time the thread sat runnable but preempted, which Linux
/// accounts in `/proc/thread-self/schedstat` each time the thread gets a CPU back), because the
/// machines are shared: a thread preempted by a colleague's build would otherwise report the
/// build's time as ours, and the two-thread figures would measure the machine's load instead of
/// contention on shared cache lines, which still shows in time on the CPU. Every variant, one
/// thread or two, is measured the same way, on spawned threads, after a few untimed calls that
/// set up thread-local state. Without schedstat this is plain wall time.
fn on_threads<S: Send>(
    threads: usize,
    iters: u64,
    make: &impl Fn() -> S,
    op: &(impl Fn(&mut S) + Sync),
) -> Duration {
    let barrier = Barrier::new(threads);
    let states: Vec<S> = (0..threads).map(|_| make()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .map(|mut state| {
                let barrier = &barrier;
                scope.spawn(move || {
                    for _ in 0..16 {
                        op(&mut state);
                    }
                    barrier.wait();
                    let delayed = run_delay();
                    let wall = Instant::now();
                    for _ in 0..iters {
                        op(&mut state);
                    }
                    let wall = wall.elapsed();
                    match (delayed, run_delay()) {
                        (Some(start), Some(end)) => wall.saturating_sub(end.saturating_sub(start)),
                        _ => wall,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a benchmark thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

/// How long this thread has waited, runnable, for a CPU so far (Linux schedstat's second field).
fn run_delay() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Registers `{name}_1t` and, with `two`, `{name}_2t`: `op` on one thread, then on two at once.
fn threaded<S: Send>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    two: bool,
    make: impl Fn() -> S,
    op: impl Fn(&mut S) + Sync,
) {
    let counts: &[usize] = if two { &[1, 2] } else { &[1] };
    for &threads in counts {
        group.bench_function(format!("{name}_{threads}t"), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &make, &op));
        });
    }
}

fn manager_benches(c: &mut Criterion) {
    let runtime = common::runtime();
    let manager = runtime.block_on(common::loaded_manager(TENANTS));
    let key = common::key(PROBE);
    // The paths measured below must be the fresh-token ones.
    assert_eq!(
        ready(manager.access_token(&key)).unwrap().secret(),
        common::access_token(PROBE)
    );
    let handle = || runtime.block_on(manager.tenant(&key)).unwrap();
    assert!(handle().cached().is_some(), "the probe's token is fresh");

    let mut group = c.benchmark_group("manager");
    threaded(
        &mut group,
        "cached_token",
        true,
        || (),
        |()| {
            let token = ready(manager.access_token(black_box(&key))).unwrap();
            black_box(token.secret().len());
        },
    );
    // Many tenants served by one thread in turn, so that the per-thread shortcut to recent
    // tenants misses on nearly every call: the keyed path as an ISV's sync worker sees it.
    let keys: Vec<TokenKey> = (0..ROTATING).map(|i| common::key(i * 7)).collect();
    for key in &keys {
        assert!(ready(manager.access_token(key)).is_ok());
    }
    threaded(
        &mut group,
        "cached_token_rotating",
        true,
        || 0usize,
        |next| {
            let key = &keys[*next % ROTATING];
            *next += 1;
            let token = ready(manager.access_token(black_box(key))).unwrap();
            black_box(token.secret().len());
        },
    );
    threaded(&mut group, "handle_token", true, handle, |tenant| {
        let token = ready(tenant.access_token()).unwrap();
        black_box(token.secret().len());
    });
    threaded(&mut group, "handle_cached", true, handle, |tenant| {
        let token = tenant.cached().unwrap();
        black_box(token.secret().len());
    });
    group.finish();
}

fn baseline_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");

    // What a cache written in an afternoon looks like: one async mutex over a std `HashMap`
    // (SipHash over the five strings of the key), cloning the token out to release the lock.
    let map: HashMap<TokenKey, TokenSet> = (0..TENANTS)
        .map(|i| (common::key(i), common::tokens(i)))
        .collect();
    let naive = tokio::sync::Mutex::new(map);
    let key = common::key(PROBE);
    let naive_token = |key: &TokenKey| -> String {
        common::block_on(async {
            let map = naive.lock().await;
            map.get(key)
                .map(|tokens| tokens.access_token.expose_secret().to_owned())
        })
        .unwrap()
    };
    assert_eq!(naive_token(&key), common::access_token(PROBE));
    threaded(
        &mut group,
        "mutex",
        true,
        || (),
        |()| {
            black_box(naive_token(black_box(&key)));
        },
    );

    let runtime = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let authenticator = runtime.block_on(yup_authenticator(&dir.path().join("tokens.json")));
    let scopes = ["api"];
    let token = ready(authenticator.token(&scopes)).unwrap();
    assert_eq!(token.token(), Some(common::access_token(PROBE).as_str()));
    let custom = runtime.block_on(yup_custom_storage_authenticator());
    assert_eq!(
        ready(custom.token(&scopes)).unwrap().token(),
        Some(common::access_token(PROBE).as_str())
    );
    threaded(
        &mut group,
        "yup_oauth2_custom_storage",
        false,
        || (),
        |()| {
            let token = common::block_on(custom.token(black_box(&scopes))).unwrap();
            black_box(token.token().map(str::len));
        },
    );
    threaded(
        &mut group,
        "yup_oauth2",
        false,
        || (),
        |()| {
            let token = common::block_on(authenticator.token(black_box(&scopes))).unwrap();
            black_box(token.token().map(str::len));
        },
    );
    group.finish();
}

/// The pieces a keyed lookup is made of, on their own, to see where its time goes: hashing and
/// comparing the five-string key, pinning the tenant map, a map lookup, an `ArcSwap` load, and
/// the coarse and the precise clock.
fn part_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    let key = common::key(PROBE);
    let same = common::key(PROBE);
    let state = foldhash::fast::RandomState::default();
    let map: papaya::HashMap<TokenKey, u64, foldhash::fast::RandomState> =
        papaya::HashMap::default();
    for i in 0..TENANTS {
        map.pin().insert(common::key(i), i as u64);
    }
    let swap = arc_swap::ArcSwap::from_pointee(common::tokens(PROBE));
    threaded(
        &mut group,
        "foldhash_key",
        false,
        || (),
        |()| {
            black_box(state.hash_one(black_box(&key)));
        },
    );
    threaded(
        &mut group,
        "key_eq",
        false,
        || (),
        |()| {
            black_box(black_box(&key) == black_box(&same));
        },
    );
    threaded(
        &mut group,
        "papaya_pin",
        false,
        || (),
        |()| {
            black_box(&map.pin());
        },
    );
    threaded(
        &mut group,
        "papaya_get",
        true,
        || (),
        |()| {
            black_box(map.pin().get(black_box(&key)).copied());
        },
    );
    threaded(
        &mut group,
        "arcswap_load",
        true,
        || (),
        |()| {
            black_box(swap.load().access_token.expose_secret().len());
        },
    );
    // The control for the handle's two-thread figure: the same `arc_swap::Cache` check, but
    // each thread on its own `ArcSwap`, so that nothing at all is shared. Whatever slowdown it
    // shows at two threads comes from the machine (cores sharing execution units or a host
    // that schedules the two vCPUs on one core's siblings), not from the code measured.
    threaded(
        &mut group,
        "control_unshared_cache",
        true,
        || {
            arc_swap::Cache::new(Arc::new(arc_swap::ArcSwap::from_pointee(common::tokens(
                PROBE,
            ))))
        },
        |cache| {
            black_box(cache.load().access_token.expose_secret().len());
        },
    );
    coarsetime::Clock::update();
    threaded(
        &mut group,
        "coarse_clock",
        false,
        || (),
        |()| {
            black_box(coarsetime::Clock::recent_since_epoch());
        },
    );
    threaded(
        &mut group,
        "system_time_now",
        false,
        || (),
        |()| {
            black_box(std::time::SystemTime::now());
        },
    );
    group.finish();
}

/// A yup-oauth2 installed-flow authenticator whose token cache already holds a valid token for
/// scope `api`: its documented token file, written before the authenticator reads it at build.
/// `token(&["api"])` then takes yup-oauth2's cached path (its in-memory map behind a
/// `tokio::sync::Mutex`, the same code as its default memory storage, and a clock read for the
/// expiry check) and never the network.
async fn yup_authenticator(
    token_file: &std::path::Path,
) -> yup_oauth2::authenticator::DefaultAuthenticator {
    let token = yup_token();
    let file = serde_json::json!([{ "scopes": ["api"], "token": token }]);
    std::fs::write(token_file, serde_json::to_vec(&file).unwrap()).unwrap();
    yup_oauth2::InstalledFlowAuthenticator::builder(
        yup_secret(),
        yup_oauth2::InstalledFlowReturnMethod::HTTPRedirect,
    )
    .persist_tokens_to_disk(token_file)
    .build()
    .await
    .unwrap()
}

/// The token yup-oauth2 finds in its cache: valid for hours, so never refreshed.
fn yup_token() -> yup_oauth2::storage::TokenInfo {
    yup_oauth2::storage::TokenInfo {
        access_token: Some(common::access_token(PROBE)),
        refresh_token: None,
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(8)),
        id_token: None,
    }
}

/// The application secret of the yup-oauth2 authenticators, its endpoints unroutable on purpose:
/// a benchmark that reached for them would fail, not measure a network call.
fn yup_secret() -> yup_oauth2::ApplicationSecret {
    yup_oauth2::ApplicationSecret {
        client_id: common::CLIENT_ID.to_owned(),
        client_secret: "not-used".to_owned(),
        token_uri: "https://127.0.0.1:9/services/oauth2/token".to_owned(),
        auth_uri: "https://127.0.0.1:9/services/oauth2/authorize".to_owned(),
        redirect_uris: vec!["http://localhost:1717/callback".to_owned()],
        ..Default::default()
    }
}

/// A `TokenStorage` holding one valid token, as an application plugging its own cache into
/// yup-oauth2 (`with_storage`) would write it.
struct OneToken(yup_oauth2::storage::TokenInfo);

#[async_trait::async_trait]
impl yup_oauth2::storage::TokenStorage for OneToken {
    async fn set(
        &self,
        _scopes: &[&str],
        _token: yup_oauth2::storage::TokenInfo,
    ) -> Result<(), yup_oauth2::storage::TokenStorageError> {
        panic!("the benchmark's token is valid: yup-oauth2 must not replace it")
    }

    async fn get(&self, _scopes: &[&str]) -> Option<yup_oauth2::storage::TokenInfo> {
        Some(self.0.clone())
    }
}

/// yup-oauth2 with a custom storage (`with_storage`): its cached path then also collects and
/// sorts the scopes and boxes the storage's future on every call.
async fn yup_custom_storage_authenticator() -> yup_oauth2::authenticator::DefaultAuthenticator {
    yup_oauth2::InstalledFlowAuthenticator::builder(
        yup_secret(),
        yup_oauth2::InstalledFlowReturnMethod::HTTPRedirect,
    )
    .with_storage(Box::new(OneToken(yup_token())))
    .build()
    .await
    .unwrap()
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = manager_benches, baseline_benches, part_benches
}
criterion_main!(benches);
