//! The `sfauth` command-line tool: log in to Salesforce, keep OAuth tokens fresh, print them
//! for scripts.
//!
//! It sits on the `sfauth` facade (`TokenManager`, the stores, the flows) and adds what a
//! person at a terminal needs: `sfauth login ...` for every flow, `sfauth token` for scripts,
//! `status`/`list` tables, `refresh` with a progress bar, `revoke`, `introspect`, `whoami`,
//! encrypted `export`/`import`, shell completions, and `sfauth demo`, which runs the whole life
//! of a token against an emulator started in-process. `docs/cli.md` is the manual; `--help`
//! on every command teaches the same.
//!
//! Exit codes: 0 ok, 1 other failure, 2 usage, 3 re-authorization required, 4 network or
//! transient failure. Errors are one sentence on stderr ending with the fix.
//!
//! ```text
//! $ cargo run -p sfauth-cli -- demo
//! ```

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports to the terminal"
)]
// Numbers from outside (responses, stored records, the config file, flags, environment
// variables) reach arithmetic here; none of it may panic or wrap, so every operation is checked
// or saturating, and this lint keeps it so.
#![warn(clippy::arithmetic_side_effects)]

mod cli;
mod commands;
mod complete;
mod config;
mod error;
mod lazy_transport;
mod session;
mod store;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use crate::cli::{Cli, Command};
use crate::config::FileConfig;
use crate::error::Result;
use crate::session::Context;

fn main() -> ExitCode {
    // First, while the process has one thread: see `register_membarrier`.
    register_membarrier();
    // `COMPLETE=bash sfauth` and the shell's completion calls end here (aliases come from the store).
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    quiet_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    init_logging();
    let runtime = match runtime_for(&cli.command) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime ({error})");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run_until_signal(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Scrubbed once more: a driver's message could quote the store URL's password.
            eprintln!("error: {}", error::one_line(&error::scrub(&error.message)));
            error.exit_code()
        }
    }
}

/// The async runtime a command runs on.
///
/// `token` is one task from start to end: read the store, and at most one refresh. On a
/// multi-thread runtime its awaits hand work between the main thread and two workers it had to
/// start first, each hand-off a wake-up that a loaded machine delays; one thread does the same
/// work without them (SQLite still has its own thread and blocking work its pool). The other
/// commands keep two workers: `refresh --all`, `import` and the demo run many logins or an
/// in-process emulator at once.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        Command::Token(_) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    };
    builder.enable_all().build()
}

/// How long a refresh already waiting for Salesforce's answer may take to save it after Ctrl-C
/// or SIGTERM: a rotated refresh token must not be dropped on the floor, yet a person pressing
/// Ctrl-C expects the command to end.
const SIGNAL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the command; on SIGINT or SIGTERM stops it, lets a refresh in flight save its answer,
/// releases every refresh lease (so the next command does not wait for it to lapse), and ends
/// with 130 or 143 as shells expect.
async fn run_until_signal(cli: Cli) -> Result<()> {
    let signal = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => ("interrupted", 130),
                    _ = terminate.recv() => ("terminated", 143),
                },
                _ => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => ("interrupted", 130),
                Err(_) => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        result = run(cli) => result,
        (what, code) = signal => {
            session::shutdown_all(SIGNAL_GRACE).await;
            Err(error::CliError::signal(what, code))
        }
    }
}

/// Registers the process for private expedited `membarrier(2)` now, while it has one thread.
///
/// The token cache's reclaimer (papaya's, through seize) registers on its first map, which is
/// made after the runtime's and SQLite's threads exist; with more than one thread the kernel
/// then waits out an RCU grace period, measured at 4 to 8 ms of a `sfauth token` that otherwise
/// takes about 10. Registered single-threaded, the same call costs microseconds and the
/// reclaimer's own later call returns at once. A kernel without the call is not an error: the
/// reclaimer detects that too and falls back to fences.
fn register_membarrier() {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{MembarrierCommand, membarrier};
        let _ = membarrier(MembarrierCommand::RegisterPrivateExpedited);
    }
}

/// `sfauth status | head` closes stdout early: end quietly, as other Unix tools do, instead of
/// panicking with a backtrace.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Logs go to stderr, off unless `SFAUTH_LOG` sets a filter (such as `info` or `sfauth=debug`).
fn init_logging() {
    let Ok(filter) = std::env::var("SFAUTH_LOG") else {
        return;
    };
    let Ok(filter) = tracing_subscriber::EnvFilter::try_new(filter) else {
        eprintln!("warning: SFAUTH_LOG is not a valid filter; logging stays off");
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "sfauth", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Demo = cli.command {
        return commands::demo::run().await;
    }
    let file = FileConfig::load(cli.config.as_deref())?;
    let proxy = config::proxy(cli.proxy.as_deref(), cli.no_proxy.as_deref(), &file)?;
    let ctx = Context {
        file,
        store_url: cli.store,
        proxy,
    };
    let result = match cli.command {
        Command::Login(flow) => commands::login::run(flow, &ctx).await,
        Command::Token(args) => commands::manage::token(&args, &ctx).await,
        Command::Status(args) | Command::List(args) => commands::status::run(&args, &ctx).await,
        Command::Refresh(args) => commands::manage::refresh(&args, &ctx).await,
        Command::Revoke(args) => commands::manage::revoke(&args, &ctx).await,
        Command::Logout(args) => commands::manage::logout(&args, &ctx).await,
        Command::Introspect(args) => commands::manage::introspect(&args, &ctx).await,
        Command::Whoami(args) => commands::manage::whoami(&args, &ctx).await,
        Command::Export(args) => commands::transfer::export(&args, &ctx).await,
        Command::Import(args) => match (&args.sf.from_sf, args.file) {
            (Some(_), _) => commands::sf_import::run(&args.sf, args.force, &ctx).await,
            (None, Some(file)) => {
                let args = cli::ImportArgs {
                    file,
                    force: args.force,
                };
                commands::transfer::import(&args, &ctx).await
            }
            (None, None) => Err(error::CliError::usage(
                "import needs a FILE written by `sfauth export`, or --from-sf",
            )),
        },
        Command::Api(args) => commands::api::run(&args, &ctx).await,
        Command::Open(args) => commands::open::run(&args, &ctx).await,
        Command::Doctor(args) => commands::doctor::run(&args, &ctx).await,
        Command::Completions { .. } | Command::Demo => Ok(()),
    };
    // Whatever the command's outcome: a refresh it made may have found the new secret.
    session::keep_accepted_secrets(&ctx).await;
    result
}
