//! The `TokenManager` figures that are not timings of a hot loop, measured once per run and
//! written as a flat JSON object for `cargo xtask bench`:
//!
//! - `coalesced_token_requests_10k_callers`: refresh grants the emulator (over TCP) handled
//!   when 10,000 tasks asked for one tenant's token at the moment it was due;
//! - `bytes_per_tenant_100k`: live heap bytes the manager holds per tenant after loading
//!   100,000 tenants, less the bytes of their access and refresh tokens;
//! - `cached_token_allocs_per_call`, `handle_token_allocs_per_call`: heap allocations per call
//!   on the two cached-token paths (the issue asks for none);
//! - `load_all_100k_memory_store_s` and `size_of_*`: to read the figures above by.
//!
//! The whole binary runs on a counting global allocator, so it is kept apart from the timing
//! benchmarks in `manager.rs` and the warm start in `startup.rs` (counting every allocation in
//! shared counters slows a parallel warm start by a fifth).
//!
//! Environment: `SFAUTH_BENCH_FIGURES` (default: `figures.json` in the bench directory, see
//! `common::bench_dir`) receives the figures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails by panicking"
)]
#![allow(clippy::print_stdout, reason = "a benchmark reports its figures")]

mod common;

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, json};
use sfauth::storage::TokenRecord;
use sfauth::{MemoryStore, TokenManager, TokenStore};
use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, TokenSet};
use sfauth_emulator::{Clock, Emulator};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLERS: usize = 10_000;
const BIG: usize = 100_000;
const HOUR: Duration = Duration::from_secs(3600);

fn main() {
    let runtime = common::runtime();
    let dir = common::bench_dir();
    let mut figures = Map::new();

    let (keyed, handle) = runtime.block_on(allocations_per_call());
    figures.insert("cached_token_allocs_per_call".into(), json!(keyed));
    figures.insert("handle_token_allocs_per_call".into(), json!(handle));

    let coalesced = runtime.block_on(coalesced_token_requests());
    figures.insert(
        "coalesced_token_requests_10k_callers".into(),
        json!(coalesced),
    );

    let (bytes, memory_seconds) = runtime.block_on(bytes_per_tenant());
    figures.insert("bytes_per_tenant_100k".into(), json!(bytes));
    figures.insert("load_all_100k_memory_store_s".into(), json!(memory_seconds));

    // Inline sizes of the types a tenant holds copies of, to read `bytes_per_tenant_100k` by.
    for (name, size) in [
        (
            "size_of_token_key",
            std::mem::size_of::<sfauth_core::TokenKey>(),
        ),
        ("size_of_token_set", std::mem::size_of::<TokenSet>()),
        ("size_of_token_record", std::mem::size_of::<TokenRecord>()),
        ("size_of_url", std::mem::size_of::<url::Url>()),
        (
            "size_of_mutex_option_box_token_record",
            std::mem::size_of::<std::sync::Mutex<Option<Box<TokenRecord>>>>(),
        ),
        (
            "size_of_mutex_option_box_renewal",
            std::mem::size_of::<std::sync::Mutex<Option<Box<sfauth::Renewal>>>>(),
        ),
        (
            "size_of_tokio_mutex_unit",
            std::mem::size_of::<tokio::sync::Mutex<()>>(),
        ),
    ] {
        figures.insert(name.into(), json!(size));
    }

    common::write_figures("SFAUTH_BENCH_FIGURES", &dir.join("figures.json"), &figures);
}

/// Heap allocations per call of the keyed and the handle paths on a fresh cached token.
async fn allocations_per_call() -> (f64, f64) {
    const CALLS: u32 = 10_000;
    let manager = common::loaded_manager(1_000).await;
    let key = common::key(7);
    let mut tenant = manager.tenant(&key).await.unwrap();
    // Warm up thread-local state (arc-swap debt slots, the map's epoch registration).
    for _ in 0..100 {
        common::ready(manager.access_token(&key)).unwrap();
        common::ready(tenant.access_token()).unwrap();
    }
    let region = Region::new(GLOBAL);
    for _ in 0..CALLS {
        let token = common::ready(manager.access_token(&key)).unwrap();
        std::hint::black_box(token.secret().len());
    }
    let keyed = allocations(&region) / f64::from(CALLS);
    let region = Region::new(GLOBAL);
    for _ in 0..CALLS {
        let token = common::ready(tenant.access_token()).unwrap();
        std::hint::black_box(token.secret().len());
    }
    let handle = allocations(&region) / f64::from(CALLS);
    (keyed, handle)
}

/// Allocations and reallocations since `region` began.
fn allocations(region: &Region<'_, System>) -> f64 {
    let change = region.change();
    (change.allocations + change.reallocations) as f64
}

/// 10,000 concurrent `access_token` calls on a tenant whose token is due, against the emulator
/// over TCP; returns the refresh grants the emulator handled meanwhile.
async fn coalesced_token_requests() -> u64 {
    // The emulator's clock runs two hours behind: the tokens of the login look two hours old,
    // past the one-hour session timeout, so they are due at once; advancing the clock by two
    // hours afterwards makes the refreshed ones new.
    let now_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let behind = i64::try_from((2 * HOUR).as_millis()).unwrap();
    let emulator = Emulator::builder()
        .clock(Clock::manual(now_ms - behind))
        .auto_approve(true)
        .seed(20_261_124)
        .start()
        .await
        .unwrap();
    let creds = emulator.credentials().clone();
    let client = OAuthClient::new(
        LoginHost::my_domain(emulator.base_url()).unwrap(),
        ConnectedApp::new(creds.client_id.clone())
            .with_secret(creds.client_secret.clone())
            .with_redirect_uri(&creds.callback_url)
            .unwrap(),
    )
    .with_session_timeout(HOUR);
    let transport = sfauth::transport::ReqwestTransport::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tokens = common::login(&client, &transport).await;
    let manager = TokenManager::builder(client)
        .transport(Arc::new(transport))
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    let key = manager.store_tokens(tokens, "default").await.unwrap();
    emulator.advance(2 * HOUR);
    let before = emulator.counters().grant("refresh_token");

    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (manager, key, barrier) = (manager.clone(), key.clone(), barrier.clone());
        callers.spawn(async move {
            barrier.wait().await;
            manager.access_token(&key).await.unwrap().secret().len()
        });
    }
    callers.join_all().await;
    let refreshes = emulator.counters().grant("refresh_token") - before;
    emulator.shutdown().await;
    refreshes
}

/// Live heap bytes the manager holds per tenant once 100,000 tenants are loaded (from a
/// `MemoryStore` filled beforehand, whose own copies are not counted), less the access and
/// refresh token bytes; also the seconds that `load_all` took (the manager's share of a warm
/// start, as the memory store's listing is only clones).
async fn bytes_per_tenant() -> (f64, f64) {
    let store = Arc::new(MemoryStore::new());
    let now = SystemTime::now();
    let mut token_bytes = 0usize;
    for i in 0..BIG {
        let tokens = common::tokens(i);
        token_bytes += tokens.access_token.expose_secret().len()
            + tokens
                .refresh_token
                .as_ref()
                .map_or(0, |t| t.expose_secret().len());
        store
            .insert(TokenRecord::new(common::key(i), tokens, now))
            .await
            .unwrap();
    }
    let region = Region::new(GLOBAL);
    let manager = common::offline_manager(store.clone()).await;
    let started = Instant::now();
    let loaded = manager.load_all().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(loaded, BIG);
    let change = region.change();
    // `stats_alloc` books a growing or shrinking `realloc` as bytes allocated or deallocated.
    let live = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
    drop(manager);
    ((live - token_bytes as f64) / BIG as f64, seconds)
}
