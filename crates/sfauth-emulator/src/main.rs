//! The `sfauth-emulator` binary: serves the emulator until interrupted.
#![allow(
    clippy::print_stdout,
    reason = "the binary prints the seeded credentials for the user to copy"
)]
// Flags and the configuration file are outside input: no arithmetic on them may panic.
#![warn(clippy::arithmetic_side_effects)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use sfauth_emulator::{Emulator, EmulatorConfig};

/// A local emulator of Salesforce's OAuth endpoints.
#[derive(Debug, Parser)]
#[command(name = "sfauth-emulator", version, about)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// TOML configuration (orgs, users, connected apps, policies, settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve the `/__emulator/...` admin API.
    #[arg(long)]
    admin_api: bool,
    /// Approve authorization requests without the login form.
    #[arg(long)]
    auto_approve: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to stderr so that stdout carries only the credentials banner.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            tracing::error!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> sfauth_emulator::Result<()> {
    let configured = args.config.is_some();
    let config = match &args.config {
        Some(path) => EmulatorConfig::from_file(path)?,
        None => EmulatorConfig::seeded(),
    };
    let mut builder = Emulator::builder()
        .config(config)
        .bind(SocketAddr::new(args.bind, args.port));
    if args.admin_api {
        builder = builder.admin_api(true);
    }
    if args.auto_approve {
        builder = builder.auto_approve(true);
    }
    let emulator = builder.start().await?;
    let c = emulator.credentials();
    println!("sfauth-emulator listening on {}", emulator.base_url());
    println!("  login URL        {}", c.login_url);
    println!("  site URL         {}", emulator.site_url());
    if configured {
        println!("  (configured from file; first org, user and app shown)");
    }
    println!("  org id           {}", c.org_id);
    println!("  user id          {}", c.user_id);
    println!("  username         {}", c.username);
    println!("  password         {}", c.password);
    println!("  security token   {}", c.security_token);
    println!("  client id        {}", c.client_id);
    println!("  client secret    {}", c.client_secret);
    println!("  callback URL     {}", c.callback_url);
    println!();
    println!(
        "Try: curl -s {}/services/oauth2/token -d grant_type=password -d client_id={} -d client_secret={} --data-urlencode username={} --data-urlencode password={}",
        c.login_url,
        c.client_id,
        c.client_secret,
        c.username,
        c.password_with_token()
    );
    let _ = tokio::signal::ctrl_c().await;
    emulator.shutdown().await;
    Ok(())
}
