//! What `SalesforceAuth` costs: the throughput of a client through the middleware against raw
//! reqwest sending the same request (absolute URL, `Authorization` header set by hand), to the
//! same loopback server, at 1 and 64 requests in flight.
//!
//! The server is a minimal axum app answering a small JSON body to any request that carries an
//! `Authorization` header: the cheaper the server, the larger the middleware's share, so this
//! is the least flattering measure. The tenant's `instance_url` points at it (the emulator's
//! org is moved there and the token refreshed once), so the middleware resolves its paths
//! against it as it would against Salesforce.
//!
//! Rounds alternate raw and middleware (the order flipped every round). Each loss is the median
//! of the rounds' own losses, each round's middleware against the raw run beside it, so that a
//! neighbour's build on the shared cores, which comes and goes within seconds, hits both sides of
//! a comparison alike; the requests per second are the medians of their rounds. (The ratio of
//! the medians of all raw and all middleware rounds compared runs seconds apart: on two cores
//! with a load of five, its figures spread over about twice the range from run to run.)
//!
//! Figures (`middleware_overhead_pct_1`, `middleware_overhead_pct_64`: throughput lost, in
//! percent, by the middleware sending the same absolute URL string as raw, the request raw
//! reqwest makes; the raw and middleware requests per second beside them;
//! `middleware_relative_overhead_pct_*` and `middleware_relative_rps_*`, the same middleware
//! sent a path on the `INSTANCE` placeholder, which it resolves against the tenant's instance
//! with a second URL parse raw reqwest never makes, since it cannot resolve a path at all; and
//! `reqwest_middleware_overhead_pct_*`, the loss of a reqwest-middleware client with no
//! middleware at all, to tell the framework's share from ours; and
//! `floor_middleware_overhead_pct_*`, the loss with a middleware that only sets a fixed
//! `Authorization` value and hands the request on, the floor under any middleware on this
//! framework) go to the file named by
//! `SFAUTH_BENCH_ADAPTERS`, else `adapters.json` in `SFAUTH_BENCH_DIR` (else `target/bench`).
//!
//! ```sh
//! cargo bench -p sfauth-adapters --bench middleware
//! ```
//!
//! Wall-clock figures on shared cores move by several percent from run to run, more than the
//! middleware costs. For a noise-free comparison of code paths, `SFAUTH_BENCH_PROFILE=raw`,
//! `bare`, `floor`, `middleware` (absolute URL) or `relative` (placeholder) sends `SFAUTH_BENCH_REQUESTS` (default 2,000) requests one after the
//! other that way, inside `profiled`, and stops; under callgrind, collect that function alone and
//! divide by the count:
//!
//! ```sh
//! SFAUTH_BENCH_PROFILE=middleware valgrind --tool=callgrind --toggle-collect='*profiled*' \
//!     target/release/deps/middleware-<hash>
//! ```

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark reports its figures and stops on any error"
)]

#[path = "../tests/it/support/emulator.rs"]
mod emulator;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::{Map, Value, json};
use sfauth_adapters::{SalesforceAuth, instance};

const PATH: &str = "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account";
const ROUNDS: usize = 15;

/// A small answer, about the size of a one-record query result.
const BODY: &str = r#"{"totalSize":1,"done":true,"records":[{"attributes":{"type":"Account","url":"/services/data/v62.0/sobjects/Account/0015e000000EMU1AAO"},"Id":"0015e000000EMU1AAO","Name":"Acme Corporation"}]}"#;

async fn answer(headers: HeaderMap) -> impl IntoResponse {
    if headers.contains_key(header::AUTHORIZATION) {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            BODY,
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
        )
    }
}

/// One way of sending the request.
#[derive(Clone)]
enum Sender {
    Raw {
        client: reqwest::Client,
        url: String,
        authorization: reqwest::header::HeaderValue,
    },
    /// Through `SalesforceAuth`, to the same absolute URL string as `Raw` (the tenant's
    /// instance): the same request, with the token set by the middleware.
    Middleware {
        client: ClientWithMiddleware,
        url: String,
    },
    /// Through `SalesforceAuth`, to the path on the `INSTANCE` placeholder (`instance(PATH)`),
    /// which the middleware resolves against the tenant's instance: a second URL parse that
    /// raw reqwest, which cannot resolve a path, never pays.
    Relative(ClientWithMiddleware),
    /// reqwest-middleware with [`FixedBearer`], the least an authenticating middleware can do,
    /// to the same URL as `Raw`: the floor under any middleware's overhead on this framework.
    Floor {
        client: ClientWithMiddleware,
        url: String,
    },
    /// reqwest-middleware with no middleware, the same request as `Raw`: what the framework
    /// costs before `SalesforceAuth` does anything.
    Bare {
        client: ClientWithMiddleware,
        url: String,
        authorization: reqwest::header::HeaderValue,
    },
}

impl Sender {
    async fn send(&self) {
        let response = match self {
            Self::Raw {
                client,
                url,
                authorization,
            } => client
                .get(url)
                .header(header::AUTHORIZATION, authorization.clone())
                .send()
                .await
                .unwrap(),
            Self::Middleware { client, url } | Self::Floor { client, url } => {
                client.get(url).send().await.unwrap()
            }
            Self::Relative(client) => client.get(instance(PATH)).send().await.unwrap(),
            Self::Bare {
                client,
                url,
                authorization,
            } => client
                .get(url)
                .header(header::AUTHORIZATION, authorization.clone())
                .send()
                .await
                .unwrap(),
        };
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }
}

/// A middleware that sets one fixed `Authorization` value and hands the request on: no token to
/// look up, no copy kept for a retry, no span, no box of its own (the next step's future is
/// returned as it is). What any middleware pays for being one.
struct FixedBearer(reqwest::header::HeaderValue);

impl reqwest_middleware::Middleware for FixedBearer {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut request: reqwest::Request,
        extensions: &'life1 mut http::Extensions,
        next: reqwest_middleware::Next<'life2>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, self.0.clone());
        next.run(request, extensions)
    }
}

/// Requests per second for `total` requests, `in_flight` at a time.
async fn throughput(sender: &Sender, in_flight: usize, total: usize) -> f64 {
    let per_task = total / in_flight;
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    sender.send().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_task * in_flight) as f64 / started.elapsed().as_secs_f64()
}

/// `requests` requests sent one after the other through `sender`: what callgrind counts (its
/// name is the `--toggle-collect` pattern). A plain function around `block_on`, so that every
/// poll of the client's futures on this thread runs inside it.
#[inline(never)]
fn profiled(runtime: &tokio::runtime::Runtime, sender: &Sender, requests: usize) {
    runtime.block_on(async {
        for _ in 0..requests {
            sender.send().await;
        }
    });
}

/// What `SFAUTH_BENCH_PROFILE` asks for: the sender, the count, and the org (kept alive).
type Profile = (Sender, usize, emulator::Org);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench_dir() -> PathBuf {
    let dir = match std::env::var_os("SFAUTH_BENCH_DIR") {
        Some(dir) => dir.into(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                PathBuf::from,
            )
            .join("bench"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some((sender, requests, org)) = runtime.block_on(run()) {
        profiled(&runtime, &sender, requests);
        println!("{requests} requests sent");
        drop(org);
    }
}

async fn run() -> Option<Profile> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(answer))
            .await
            .unwrap();
    });

    // The tenant's instance is the loopback server: the org moves there and one refresh brings
    // the token that names it.
    let org = emulator::Org::start().await.unwrap();
    org.migrate(&server_url).unwrap();
    let token = org.manager.refresh(&org.key).await.unwrap();
    assert_eq!(token.instance_url().as_str(), format!("{server_url}/"));

    // The token manager's own share: a cached token, taken a hundred thousand times.
    let started = Instant::now();
    for _ in 0..100_000 {
        let token = org.manager.access_token(&org.key).await.unwrap();
        std::hint::black_box(token.authorization());
    }
    println!(
        "access_token + authorization: {:?} per call",
        started.elapsed() / 100_000
    );
    {
        let client = reqwest::Client::new();
        let started = Instant::now();
        for _ in 0..100_000 {
            let request = client.get(instance(PATH)).build().unwrap();
            std::hint::black_box(request.try_clone());
        }
        println!(
            "placeholder request built and copied: {:?} per call",
            started.elapsed() / 100_000
        );
        let started = Instant::now();
        for _ in 0..100_000 {
            let request = client.get(format!("{server_url}{PATH}")).build().unwrap();
            std::hint::black_box(request);
        }
        println!(
            "raw request built: {:?} per call",
            started.elapsed() / 100_000
        );
    }
    let raw = Sender::Raw {
        client: reqwest::Client::new(),
        url: format!("{server_url}{PATH}"),
        authorization: token.authorization(),
    };
    let bare = Sender::Bare {
        client: ClientBuilder::new(reqwest::Client::new()).build(),
        url: format!("{server_url}{PATH}"),
        authorization: token.authorization(),
    };
    let floor = Sender::Floor {
        client: ClientBuilder::new(reqwest::Client::new())
            .with(FixedBearer(token.authorization()))
            .build(),
        url: format!("{server_url}{PATH}"),
    };
    drop(token);
    let with_auth = || {
        ClientBuilder::new(reqwest::Client::new())
            .with(SalesforceAuth::new(org.manager.clone(), org.key.clone()))
            .build()
    };
    let middleware = Sender::Middleware {
        client: with_auth(),
        url: format!("{server_url}{PATH}"),
    };
    let relative = Sender::Relative(with_auth());

    if let Ok(profile) = std::env::var("SFAUTH_BENCH_PROFILE") {
        let sender = match profile.as_str() {
            "raw" => raw,
            "bare" => bare,
            "middleware" => middleware,
            "relative" => relative,
            "floor" => floor,
            other => {
                panic!(
                    "SFAUTH_BENCH_PROFILE is raw, bare, floor, middleware or relative, not {other}"
                )
            }
        };
        let requests = std::env::var("SFAUTH_BENCH_REQUESTS").map_or(2_000, |n| {
            n.parse().expect("SFAUTH_BENCH_REQUESTS is a number")
        });
        // Pools, caches and the first allocations warmed outside the collected function.
        for _ in 0..200 {
            sender.send().await;
        }
        return Some((sender, requests, org));
    }

    let mut figures = Map::new();
    for (in_flight, total) in [(1, 3_000), (64, 12_800)] {
        // Warm every pool and cache.
        for sender in [&raw, &middleware, &bare, &relative, &floor] {
            throughput(sender, in_flight, total / 4).await;
        }
        // Raw, middleware (absolute), bare, relative, floor, and the other way round the next
        // round:
        // the targeted comparison always runs right beside raw.
        let order = [&raw, &middleware, &bare, &relative, &floor];
        let mut rounds = [(); 5].map(|()| Vec::with_capacity(ROUNDS));
        for round in 0..ROUNDS {
            let mut slots: Vec<usize> = (0..order.len()).collect();
            if round % 2 == 1 {
                slots.reverse();
            }
            for slot in slots {
                rounds[slot].push(throughput(order[slot], in_flight, total).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let [
            raw_rounds,
            middleware_rounds,
            bare_rounds,
            relative_rounds,
            floor_rounds,
        ] = rounds;
        let loss = |rounds: &[f64]| {
            median(
                rounds
                    .iter()
                    .zip(&raw_rounds)
                    .map(|(rps, raw)| (1.0 - rps / raw) * 100.0)
                    .collect(),
            )
        };
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        for (name, value) in [
            (
                "reqwest_middleware_overhead_pct",
                round2(loss(&bare_rounds)),
            ),
            ("floor_middleware_overhead_pct", round2(loss(&floor_rounds))),
            ("middleware_overhead_pct", round2(loss(&middleware_rounds))),
            (
                "middleware_relative_overhead_pct",
                round2(loss(&relative_rounds)),
            ),
            ("raw_reqwest_rps", median(raw_rounds).round()),
            ("middleware_rps", median(middleware_rounds).round()),
            ("middleware_relative_rps", median(relative_rounds).round()),
        ] {
            figures.insert(format!("{name}_{in_flight}"), json!(value));
        }
    }

    for (name, value) in &figures {
        println!("{name:<32} {value}");
    }
    let out = std::env::var_os("SFAUTH_BENCH_ADAPTERS")
        .map_or_else(|| bench_dir().join("adapters.json"), PathBuf::from);
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&Value::Object(figures)).unwrap(),
    )
    .unwrap();
    println!("figures written to {}", out.display());
    None
}
