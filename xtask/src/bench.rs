//! `cargo xtask bench`: runs the `TokenManager` benchmarks and checks them against the
//! targets of the issue that asked for them.
//!
//! Four bench targets of `sfauth` run in one `cargo bench --features redis,postgres`: `manager`
//! (criterion timings of the cached-token paths and their baselines), `figures` (the stampede,
//! memory and allocation figures, on a counting allocator), `startup` (the warm start and a
//! bare scan of the same SQLite rows, on the system allocator) and `fleet` (issue #13: eight
//! processes sharing a Redis or PostgreSQL store, how soon the losers of a refresh hold the
//! winner's tokens, how fast the workers' background refreshers get through 10,000 tenants
//! due at once compared with the emulator's raw throughput, and a store's `get` against a raw
//! read of the same bytes); the last three write their figures as JSON. The medians are read
//! back from criterion's `<target>/criterion/<group>/<id>/new/estimates.json`, only if written
//! by this run, and the ratios the issues ask for are printed as a table; every figure is also
//! written to `<target>/bench/summary.json`, one flat object, where issues #13 and #14 look for
//! their keys after one run. Missing a target is
//! reported, not an error: the figures are for people to read. The fleet figures need the
//! local servers (`SFAUTH_TEST_REDIS_URL`, `SFAUTH_TEST_POSTGRES_URL`); when one does not
//! answer, the benchmark says so and skips its figures, and the table shows them missing.
//! Then `sfauth-adapters`' `middleware` bench (issue #14) measures the reqwest middleware's
//! throughput loss against raw reqwest on one loopback server, at 1 and 64 requests in flight,
//! beside the loss of reqwest-middleware with no middleware and with one that only sets a fixed
//! header, measured in the same rounds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::{cargo, cargo_metadata};

/// Summary keys read from criterion, and the benchmark ids they come from (median, ns).
const TIMINGS: &[(&str, &str)] = &[
    ("cached_token_ns_1t", "manager/cached_token_1t"),
    ("cached_token_ns_2t", "manager/cached_token_2t"),
    (
        "cached_token_rotating_ns_1t",
        "manager/cached_token_rotating_1t",
    ),
    (
        "cached_token_rotating_ns_2t",
        "manager/cached_token_rotating_2t",
    ),
    ("handle_token_ns_1t", "manager/handle_token_1t"),
    ("handle_token_ns_2t", "manager/handle_token_2t"),
    ("handle_cached_ns_1t", "manager/handle_cached_1t"),
    ("handle_cached_ns_2t", "manager/handle_cached_2t"),
    ("mutex_baseline_ns_1t", "baseline/mutex_1t"),
    ("mutex_baseline_ns_2t", "baseline/mutex_2t"),
    ("yup_oauth2_token_ns_1t", "baseline/yup_oauth2_1t"),
    (
        "yup_oauth2_custom_storage_ns_1t",
        "baseline/yup_oauth2_custom_storage_1t",
    ),
    // The pieces of a keyed lookup, and a control with nothing shared between threads.
    ("part_foldhash_key_ns", "parts/foldhash_key_1t"),
    ("part_key_eq_ns", "parts/key_eq_1t"),
    ("part_papaya_pin_ns", "parts/papaya_pin_1t"),
    ("part_papaya_get_ns_1t", "parts/papaya_get_1t"),
    ("part_papaya_get_ns_2t", "parts/papaya_get_2t"),
    ("part_arcswap_load_ns_1t", "parts/arcswap_load_1t"),
    ("part_arcswap_load_ns_2t", "parts/arcswap_load_2t"),
    ("part_coarse_clock_ns", "parts/coarse_clock_1t"),
    ("part_system_time_now_ns", "parts/system_time_now_1t"),
    ("control_unshared_ns_1t", "parts/control_unshared_cache_1t"),
    ("control_unshared_ns_2t", "parts/control_unshared_cache_2t"),
];

/// The bench targets that write figures as JSON: the variable naming their output file, the
/// file (in the bench directory), and the keys it must hold.
const FIGURE_FILES: &[(&str, &str, &[&str])] = &[
    (
        "SFAUTH_BENCH_FIGURES",
        "figures.json",
        &[
            "coalesced_token_requests_10k_callers",
            "bytes_per_tenant_100k",
        ],
    ),
    (
        "SFAUTH_BENCH_STARTUP",
        "startup.json",
        &["warm_start_100k_sqlite_s", "warm_start_ratio_sqlite"],
    ),
    // Each backend's figures are there only when its server answered: see `fleet_checks`.
    ("SFAUTH_BENCH_FLEET", "fleet.json", &[]),
    (
        "SFAUTH_BENCH_ADAPTERS",
        "adapters.json",
        &["middleware_overhead_pct_1", "middleware_overhead_pct_64"],
    ),
];

/// The shared stores whose fleet figures are checked, and the names of their rows: the
/// losers' adoption p99, the fleet's refreshes over the raw emulator, the token requests for
/// 10,000 tenants, and `get` over a raw read.
const FLEET_BACKENDS: &[(&str, [&str; 4])] = &[
    (
        "redis",
        [
            "fleet adoption p99, redis",
            "fleet refreshes / raw emulator, redis",
            "fleet token requests, 10k tenants, redis",
            "store get / raw HMGET, redis",
        ],
    ),
    (
        "postgres",
        [
            "fleet adoption p99, postgres",
            "fleet refreshes / raw emulator, postgres",
            "fleet token requests, 10k tenants, postgres",
            "store get / raw SELECT, postgres",
        ],
    ),
];

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut cli_only = false;
    for arg in args {
        match arg.as_str() {
            "cli" => cli_only = true,
            other => bail!("bench: unknown argument {other:?} (expected nothing, or cli)"),
        }
    }
    let target = target_dir()?;
    let bench_dir = target.join("bench");
    let criterion_dir = target.join("criterion");
    fs::create_dir_all(&bench_dir).with_context(|| format!("creating {}", bench_dir.display()))?;
    if cli_only {
        // The whole-process figure alone: it needs only two release binaries, not the
        // criterion and fleet runs, so it can be taken on its own in a minute.
        let ms = crate::bench_cli::cli_token_ms(&target, &bench_dir)?;
        let check = Check::at_most("sfauth token, cached, process wall median", ms, 10.0, MS);
        let mut summary = Map::new();
        summary.insert("cli_token_ms".to_owned(), Value::from(ms));
        print_table(&summary, std::slice::from_ref(&check));
        return Ok(());
    }
    let mut sfauth = cargo();
    sfauth
        .args(["bench", "-p", "sfauth", "--features", "redis,postgres"])
        .args([
            "--bench", "manager", "--bench", "figures", "--bench", "startup", "--bench", "fleet",
        ]);
    // The adapters' overhead over raw reqwest, on a loopback server of its own.
    let mut adapters = cargo();
    adapters.args(["bench", "-p", "sfauth-adapters", "--bench", "middleware"]);
    let mut benches = [sfauth, adapters];
    for bench in &mut benches {
        bench
            .env("CRITERION_HOME", &criterion_dir)
            .env("SFAUTH_BENCH_DIR", &bench_dir);
    }
    for (var, file, _) in FIGURE_FILES {
        let path = bench_dir.join(file);
        // Whatever an earlier run left must not pass for this run's figures.
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        for bench in &mut benches {
            bench.env(var, &path);
        }
    }

    let started = SystemTime::now();
    for bench in &mut benches {
        let status = bench.status().context("cannot start cargo bench")?;
        if !status.success() {
            bail!("cargo bench failed ({status})");
        }
    }

    let mut summary = Map::new();
    for (key, id) in TIMINGS {
        let median = criterion_median(&criterion_dir, id, started)?;
        summary.insert((*key).to_owned(), Value::from(median));
    }
    for (_, file, required) in FIGURE_FILES {
        let path = bench_dir.join(file);
        let figures: Map<String, Value> = serde_json::from_slice(
            &fs::read(&path)
                .with_context(|| format!("the benchmarks wrote no {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        for key in *required {
            if !figures.get(*key).is_some_and(Value::is_number) {
                bail!("{} has no number for {key}", path.display());
            }
        }
        summary.extend(figures);
    }

    // Issue #16: `sfauth token` as a whole process, on a cached token.
    summary.insert(
        "cli_token_ms".to_owned(),
        Value::from(crate::bench_cli::cli_token_ms(&target, &bench_dir)?),
    );

    let checks = checks(&summary)?;
    print_table(&summary, &checks);
    let path = bench_dir.join("summary.json");
    fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("bench: wrote {}", path.display());
    Ok(())
}

/// The build directory as cargo sees it (`CARGO_TARGET_DIR`, config, or `target/`).
fn target_dir() -> Result<PathBuf> {
    cargo_metadata()?
        .get("target_directory")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// The median (ns) of benchmark `id`, which must have been measured since `since`.
fn criterion_median(criterion_dir: &Path, id: &str, since: SystemTime) -> Result<f64> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    let modified = fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .with_context(|| format!("criterion wrote no {}", path.display()))?;
    if modified < since {
        bail!("{} is from an earlier run", path.display());
    }
    let estimates: Value = serde_json::from_slice(&fs::read(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    estimates
        .pointer("/median/point_estimate")
        .and_then(Value::as_f64)
        .with_context(|| format!("{} has no median", path.display()))
}

/// One target of the issue: what is measured, its value, the goal and whether it is met.
struct Check {
    what: &'static str,
    value: String,
    goal: String,
    met: bool,
}

/// How a figure is shown: what follows the number, and how many decimals it gets.
#[derive(Clone, Copy)]
struct Unit {
    suffix: &'static str,
    decimals: usize,
}

const NS: Unit = Unit {
    suffix: " ns",
    decimals: 1,
};
const BYTES: Unit = Unit {
    suffix: " B",
    decimals: 0,
};
const MS: Unit = Unit {
    suffix: " ms",
    decimals: 2,
};
const SECS: Unit = Unit {
    suffix: " s",
    decimals: 3,
};
const TIMES: Unit = Unit {
    suffix: "x",
    decimals: 2,
};
const COUNT: Unit = Unit {
    suffix: "",
    decimals: 0,
};
const PCT: Unit = Unit {
    suffix: " %",
    decimals: 1,
};

impl Unit {
    fn show(self, value: f64) -> String {
        format!("{value:.*}{}", self.decimals, self.suffix)
    }
}

// The constructors write the goal from the same number the check compares against, so the two
// cannot disagree.
impl Check {
    fn compared(
        what: &'static str,
        value: f64,
        op: &str,
        limit: f64,
        unit: Unit,
        met: bool,
    ) -> Self {
        Self {
            what,
            value: unit.show(value),
            goal: format!("{op} {limit}{}", unit.suffix),
            met,
        }
    }

    fn at_most(what: &'static str, value: f64, limit: f64, unit: Unit) -> Self {
        Self::compared(what, value, "<=", limit, unit, value <= limit)
    }

    fn at_least(what: &'static str, value: f64, limit: f64, unit: Unit) -> Self {
        Self::compared(what, value, ">=", limit, unit, value >= limit)
    }

    /// For counts, which come through JSON as whole floats and compare exactly.
    fn exactly(what: &'static str, value: f64, target: f64, unit: Unit) -> Self {
        Self::compared(what, value, "==", target, unit, value == target)
    }

    /// A figure printed for context, with no target to meet; `note` says why it is shown.
    fn info(what: &'static str, value: String, note: &str) -> Self {
        Self {
            what,
            value,
            goal: format!("({note})"),
            met: true,
        }
    }

    /// A figure the run did not produce (its server was missing): it misses its target.
    fn missing(what: &'static str) -> Self {
        Self {
            what,
            value: "missing".to_owned(),
            goal: "(measured)".to_owned(),
            met: false,
        }
    }

    /// Adds a second figure after the value, in parentheses.
    fn detail(mut self, detail: String) -> Self {
        self.value = format!("{} ({detail})", self.value);
        self
    }
}

fn checks(summary: &Map<String, Value>) -> Result<Vec<Check>> {
    let get = |key: &str| {
        summary
            .get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("the summary has no number for {key}"))
    };
    let keyed = get("cached_token_ns_1t")?;
    let keyed_2t = get("cached_token_ns_2t")?;
    let handle = get("handle_token_ns_1t")?;
    let handle_2t = get("handle_token_ns_2t")?;
    let yup = get("yup_oauth2_token_ns_1t")?;
    let mutex = get("mutex_baseline_ns_1t")?;
    let coalesced = get("coalesced_token_requests_10k_callers")?;
    let bytes = get("bytes_per_tenant_100k")?;
    let warm = get("warm_start_100k_sqlite_s")?;
    let control = get("control_unshared_ns_1t")?;
    let control_2t = get("control_unshared_ns_2t")?;
    // What a keyed hit pays even when it skips the map (through the thread's recent tenants):
    // comparing the caller's key with the tenant's, and loading the tenant's `ArcSwap` for an
    // owned, `Send` guard. Printed beside the yup-oauth2 ratio, because it bounds that ratio on
    // the machine measured.
    let floor = get("part_key_eq_ns")? + get("part_arcswap_load_ns_1t")?;
    let mut checks = vec![
        Check::at_most("keyed access_token, median", keyed, 30.0, NS),
        Check::at_least("keyed: yup-oauth2 token() / ours", yup / keyed, 20.0, TIMES),
        Check::info(
            "keyed floor: key compare + ArcSwap load",
            format!("{floor:.1} ns (<= {:.1}x)", yup / floor),
            "bound",
        ),
        Check::at_least(
            "handle: yup-oauth2 token() / ours",
            yup / handle,
            20.0,
            TIMES,
        ),
        Check::at_least("keyed: mutex baseline / ours", mutex / keyed, 3.0, TIMES),
        Check::info(
            "keyed at 2 threads / 1 thread",
            format!("{:.2}x ({keyed_2t:.1} ns)", keyed_2t / keyed),
            "no target",
        ),
        Check::at_most("handle access_token, median", handle, 5.0, NS),
        Check::at_most(
            "handle at 2 threads / 1 thread",
            handle_2t / handle,
            1.2,
            TIMES,
        )
        .detail(NS.show(handle_2t)),
        Check::info(
            "control, nothing shared: 2 threads / 1",
            format!("{:.2}x ({control_2t:.1} ns)", control_2t / control),
            "machine",
        ),
        Check::exactly(
            "token requests, 10k callers at expiry",
            coalesced,
            1.0,
            COUNT,
        ),
        Check::at_most("bytes per tenant beyond tokens, 100k", bytes, 1024.0, BYTES),
        Check::at_most("warm start, 100k tenants from SQLite", warm, 1.0, SECS),
        Check::at_most(
            "warm start / bare scan of the rows",
            get("warm_start_ratio_sqlite")?,
            1.5,
            TIMES,
        ),
        Check::at_most(
            "middleware throughput loss, 1 in flight",
            get("middleware_overhead_pct_1")?,
            2.0,
            PCT,
        ),
        Check::at_most(
            "middleware throughput loss, 64 in flight",
            get("middleware_overhead_pct_64")?,
            2.0,
            PCT,
        ),
    ];
    // Context for the targeted figures, not targets: the same middleware given relative paths,
    // which it resolves against the tenant's instance URL (raw reqwest cannot); and, in the same
    // run, what the framework costs with no middleware, and with one that only sets a fixed
    // header (the floor under any middleware on reqwest-middleware).
    for (key, what, note) in [
        (
            "middleware_relative_overhead_pct_1",
            "middleware, relative paths, 1 in flight",
            "resolves paths",
        ),
        (
            "middleware_relative_overhead_pct_64",
            "middleware, relative paths, 64 in flight",
            "resolves paths",
        ),
        (
            "reqwest_middleware_overhead_pct_1",
            "reqwest-middleware alone, 1 in flight",
            "no middleware",
        ),
        (
            "reqwest_middleware_overhead_pct_64",
            "reqwest-middleware alone, 64 in flight",
            "no middleware",
        ),
        (
            "floor_middleware_overhead_pct_1",
            "fixed-header middleware, 1 in flight",
            "the floor",
        ),
        (
            "floor_middleware_overhead_pct_64",
            "fixed-header middleware, 64 in flight",
            "the floor",
        ),
    ] {
        if let Some(pct) = summary.get(key).and_then(Value::as_f64) {
            checks.push(Check::info(what, PCT.show(pct), note));
        }
    }
    if let Some(ms) = summary.get("cli_token_ms").and_then(Value::as_f64) {
        checks.push(Check::at_most(
            "sfauth token, cached, process wall median",
            ms,
            10.0,
            MS,
        ));
    }
    for (key, what) in [
        ("cached_token_allocs_per_call", "allocations per keyed call"),
        (
            "handle_token_allocs_per_call",
            "allocations per handle call",
        ),
    ] {
        if let Some(allocs) = summary.get(key).and_then(Value::as_f64) {
            checks.push(Check::exactly(what, allocs, 0.0, COUNT));
        }
    }
    checks.extend(fleet_checks(summary));
    Ok(checks)
}

/// How a row's check is made from its name and value.
type MakeCheck = dyn Fn(&'static str, f64) -> Check;

/// The targets of issue #13, per shared store. A figure the benchmark could not measure (its
/// server did not answer) is a row that says so and misses its target.
fn fleet_checks(summary: &Map<String, Value>) -> Vec<Check> {
    let mut checks = Vec::new();
    for (backend, [adopt, refresh, requests, get]) in FLEET_BACKENDS {
        let figure = |key: &str| {
            summary
                .get(&format!("{key}_{backend}"))
                .and_then(Value::as_f64)
        };
        let rows: [(&'static str, &str, &MakeCheck); 4] = [
            (adopt, "fleet_adopt_p99_ms", &|what, value| {
                Check::at_most(what, value, 10.0, MS)
            }),
            (refresh, "fleet_refresh_ratio", &|what, value| {
                Check::at_least(what, value, 0.5, TIMES)
            }),
            (requests, "fleet_refresh_token_requests", &|what, value| {
                Check::exactly(what, value, 10_000.0, COUNT)
            }),
            (get, "store_get_ratio", &|what, value| {
                Check::at_most(what, value, 2.0, TIMES)
            }),
        ];
        for (what, key, check) in rows {
            checks.push(match figure(key) {
                Some(value) => check(what, value),
                None => Check::missing(what),
            });
        }
    }
    for (backend, what) in [
        ("redis", "fleet store operations per refresh, redis"),
        ("postgres", "fleet store operations per refresh, postgres"),
    ] {
        if let Some(operations) = summary
            .get(&format!(
                "fleet_refresh_store_operations_per_refresh_{backend}"
            ))
            .and_then(Value::as_f64)
        {
            checks.push(Check::info(what, format!("{operations:.1}"), "no target"));
        }
    }
    if let Some(polled) = summary
        .get("fleet_adopt_p99_ms_sqlite")
        .and_then(Value::as_f64)
    {
        checks.push(Check::info(
            "fleet adoption p99, sqlite",
            MS.show(polled),
            "polled",
        ));
    }
    checks
}

fn print_table(summary: &Map<String, Value>, checks: &[Check]) {
    println!();
    println!("{:<42} {:>18}", "figure", "value");
    for (key, value) in summary {
        let shown = value
            .as_f64()
            .map_or_else(|| value.to_string(), |v| format!("{v:.2}"));
        println!("{key:<42} {shown:>18}");
    }
    println!();
    println!("{:<42} {:>22}  {:<12} met", "target", "measured", "goal");
    for check in checks {
        let met = if check.met { "yes" } else { "NO" };
        println!(
            "{:<42} {:>22}  {:<12} {met}",
            check.what, check.value, check.goal
        );
    }
    let missed = checks.iter().filter(|check| !check.met).count();
    println!();
    println!(
        "bench: {} of {} targets met",
        checks.len() - missed,
        checks.len()
    );
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    /// The goals written by the constructors read as the table always showed them.
    #[test]
    fn the_table_of_targets() {
        let summary: Map<String, Value> = serde_json::from_value(json!({
            "cached_token_ns_1t": 12.34,
            "cached_token_ns_2t": 13.0,
            "handle_token_ns_1t": 2.5,
            "handle_token_ns_2t": 2.75,
            "yup_oauth2_token_ns_1t": 500.0,
            "mutex_baseline_ns_1t": 40.0,
            "coalesced_token_requests_10k_callers": 1.0,
            "bytes_per_tenant_100k": 900.4,
            "warm_start_100k_sqlite_s": 0.5,
            "warm_start_ratio_sqlite": 1.25,
            "middleware_overhead_pct_1": 1.5,
            "middleware_overhead_pct_64": 2.5,
            "middleware_relative_overhead_pct_1": 4.3,
            "floor_middleware_overhead_pct_64": 1.9,
            "fleet_adopt_p99_ms_redis": 3.456,
            "fleet_refresh_store_operations_per_refresh_redis": 5.1048,
            "fleet_refresh_ratio_redis": 0.42,
            "fleet_refresh_token_requests_redis": 10_000.0,
            "store_get_ratio_redis": 1.19,
            "fleet_adopt_p99_ms_sqlite": 57.3,
            "control_unshared_ns_1t": 1.0,
            "control_unshared_ns_2t": 1.1,
            "part_key_eq_ns": 2.0,
            "part_arcswap_load_ns_1t": 3.0,
            "cached_token_allocs_per_call": 0.0,
            "handle_token_allocs_per_call": 1.0,
        }))
        .unwrap();
        let rows: Vec<(&str, String, String, bool)> = super::checks(&summary)
            .unwrap()
            .into_iter()
            .map(|c| (c.what, c.value, c.goal, c.met))
            .collect();
        let want = [
            ("keyed access_token, median", "12.3 ns", "<= 30 ns", true),
            ("keyed: yup-oauth2 token() / ours", "40.52x", ">= 20x", true),
            (
                "keyed floor: key compare + ArcSwap load",
                "5.0 ns (<= 100.0x)",
                "(bound)",
                true,
            ),
            (
                "handle: yup-oauth2 token() / ours",
                "200.00x",
                ">= 20x",
                true,
            ),
            ("keyed: mutex baseline / ours", "3.24x", ">= 3x", true),
            (
                "keyed at 2 threads / 1 thread",
                "1.05x (13.0 ns)",
                "(no target)",
                true,
            ),
            ("handle access_token, median", "2.5 ns", "<= 5 ns", true),
            (
                "handle at 2 threads / 1 thread",
                "1.10x (2.8 ns)",
                "<= 1.2x",
                true,
            ),
            (
                "control, nothing shared: 2 threads / 1",
                "1.10x (1.1 ns)",
                "(machine)",
                true,
            ),
            ("token requests, 10k callers at expiry", "1", "== 1", true),
            (
                "bytes per tenant beyond tokens, 100k",
                "900 B",
                "<= 1024 B",
                true,
            ),
            (
                "warm start, 100k tenants from SQLite",
                "0.500 s",
                "<= 1 s",
                true,
            ),
            (
                "warm start / bare scan of the rows",
                "1.25x",
                "<= 1.5x",
                true,
            ),
            (
                "middleware throughput loss, 1 in flight",
                "1.5 %",
                "<= 2 %",
                true,
            ),
            (
                "middleware throughput loss, 64 in flight",
                "2.5 %",
                "<= 2 %",
                false,
            ),
            // Only the relative figure at 1 in flight and the floor at 64 are in this summary: a
            // row each.
            (
                "middleware, relative paths, 1 in flight",
                "4.3 %",
                "(resolves paths)",
                true,
            ),
            (
                "fixed-header middleware, 64 in flight",
                "1.9 %",
                "(the floor)",
                true,
            ),
            ("allocations per keyed call", "0", "== 0", true),
            ("allocations per handle call", "1", "== 0", false),
            ("fleet adoption p99, redis", "3.46 ms", "<= 10 ms", true),
            (
                "fleet refreshes / raw emulator, redis",
                "0.42x",
                ">= 0.5x",
                false,
            ),
            (
                "fleet token requests, 10k tenants, redis",
                "10000",
                "== 10000",
                true,
            ),
            ("store get / raw HMGET, redis", "1.19x", "<= 2x", true),
            // No PostgreSQL in this summary: its rows say so, and miss.
            (
                "fleet adoption p99, postgres",
                "missing",
                "(measured)",
                false,
            ),
            (
                "fleet refreshes / raw emulator, postgres",
                "missing",
                "(measured)",
                false,
            ),
            (
                "fleet token requests, 10k tenants, postgres",
                "missing",
                "(measured)",
                false,
            ),
            (
                "store get / raw SELECT, postgres",
                "missing",
                "(measured)",
                false,
            ),
            (
                "fleet store operations per refresh, redis",
                "5.1",
                "(no target)",
                true,
            ),
            ("fleet adoption p99, sqlite", "57.30 ms", "(polled)", true),
        ];
        assert_eq!(rows.len(), want.len());
        for (row, (what, value, goal, met)) in rows.iter().zip(want) {
            assert_eq!(
                (row.0, row.1.as_str(), row.2.as_str(), row.3),
                (what, value, goal, met)
            );
        }
    }
}
