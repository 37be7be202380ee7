//! The `sfauth-emulator` binary: serves the emulator until interrupted.
// Flags and the configuration file are outside input: no arithmetic on them may panic.
#![warn(clippy::arithmetic_side_effects)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Seconds a connection may take to send a request head; idle keep-alive connections are
    /// closed after as long.
    #[arg(long, default_value_t = sfauth_emulator::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_read_timeout_secs: u64,
    /// Seconds a request body may take to arrive whole (slower: 408).
    #[arg(long, default_value_t = sfauth_emulator::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    body_read_timeout_secs: u64,
    /// The largest request body read (larger: 413).
    #[arg(long, default_value_t = sfauth_emulator::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
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
        .bind(SocketAddr::new(args.bind, args.port))
        .header_read_timeout(Duration::from_secs(args.header_read_timeout_secs))
        .body_read_timeout(Duration::from_secs(args.body_read_timeout_secs))
        .max_body_bytes(args.max_body_bytes);
    if args.admin_api {
        builder = builder.admin_api(true);
    }
    if args.auto_approve {
        builder = builder.auto_approve(true);
    }
    let emulator = builder.start().await?;
    print_banner(&banner(&emulator, configured));
    let _ = tokio::signal::ctrl_c().await;
    emulator.shutdown().await;
    Ok(())
}

/// The seeded (or first configured) credentials, for the user to copy.
fn banner(emulator: &Emulator, configured: bool) -> String {
    let c = emulator.credentials();
    let mut text = format!(
        "sfauth-emulator listening on {}\n  login URL        {}\n  site URL         {}\n",
        emulator.base_url(),
        c.login_url,
        emulator.site_url()
    );
    if configured {
        text.push_str("  (configured from file; first org, user and app shown)\n");
    }
    text.push_str(&format!(
        "  org id           {}\n  user id          {}\n  username         {}\n  password         {}\n  security token   {}\n  client id        {}\n  client secret    {}\n  callback URL     {}\n\n",
        c.org_id,
        c.user_id,
        c.username,
        c.password,
        c.security_token,
        c.client_id,
        c.client_secret,
        c.callback_url
    ));
    text.push_str(&format!(
        "Try: curl -s {}/services/oauth2/token -d grant_type=password -d client_id={} -d client_secret={} --data-urlencode username={} --data-urlencode password={}\n",
        c.login_url,
        c.client_id,
        c.client_secret,
        c.username,
        c.password_with_token()
    ));
    text
}

/// Writes the banner in one piece and ignores a closed stdout: a reader that took the lines it
/// wanted and went away (a test, `| head`) must not take the server down with a broken pipe,
/// as `println!` would by panicking.
fn print_banner(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
