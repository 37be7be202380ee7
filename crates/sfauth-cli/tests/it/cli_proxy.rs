//! `--proxy`: the CLI's requests to Salesforce leave through an egress proxy (an IP allowlist
//! names the proxy's address), chosen by flag, `SFAUTH_PROXY`, the config file or the
//! environment as curl reads it, and a proxy's password never shows.
//!
//! The proxy is a small one on loopback that the test runs: `CONNECT` tunnels (`https`) and
//! absolute-form requests (`http`, as the emulator is served) are both relayed, each request is
//! recorded with its `Proxy-Authorization`, and a proxy with credentials answers 407 without
//! them. Every relayed request is sent with `Connection: close`, so each one reaches the proxy on
//! a connection of its own and is recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail on any error"
)]

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::{Cli, Run};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request the proxy was asked: its request line and `Proxy-Authorization`, if any.
type Asked = (String, Option<String>);

/// A forward proxy on loopback.
struct TestProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Asked>>>,
}

impl TestProxy {
    /// Starts a proxy; with `credentials` (`user:password`), requests without them get 407.
    async fn start(credentials: Option<&str>) -> Self {
        let expected = credentials.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = record.clone();
                let expected = expected.clone();
                tokio::spawn(async move {
                    let _ = relay(client, &record, expected.as_deref()).await;
                });
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Asked> {
        self.seen.lock().unwrap().clone()
    }

    /// The request lines asked of the proxy that `contain` a text.
    fn lines_with(&self, text: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|(line, _)| line)
            .filter(|line| line.contains(text))
            .collect()
    }
}

/// Relays one connection: a `CONNECT` tunnel, or one absolute-form request sent on in origin
/// form with `Connection: close`.
async fn relay(
    client: TcpStream,
    record: &Mutex<Vec<Asked>>,
    expected: Option<&str>,
) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut line = String::new();
    client.read_line(&mut line).await?;
    let mut headers = Vec::new();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if client.read_line(&mut header).await? == 0 || header == "\r\n" {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("proxy-authorization") {
            authorization = Some(value.trim().to_owned());
        } else if !name.eq_ignore_ascii_case("proxy-connection")
            && !name.eq_ignore_ascii_case("connection")
        {
            headers.push(header);
        }
    }
    let line = line.trim().to_owned();
    record
        .lock()
        .unwrap()
        .push((line.clone(), authorization.clone()));
    if expected.is_some() && authorization.as_deref() != expected {
        client
            .get_mut()
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"egress\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method == "CONNECT" {
        let mut server = TcpStream::connect(target).await?;
        client
            .get_mut()
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(client.get_mut(), &mut server).await?;
        return Ok(());
    }
    let url = url::Url::parse(target).unwrap();
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut server = TcpStream::connect(authority).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for header in headers {
        head.push_str(&header);
    }
    head.push_str("Connection: close\r\n\r\n");
    server.write_all(head.as_bytes()).await?;
    // What the client already sent of its body sits in the reader's buffer.
    server.write_all(client.buffer()).await?;
    let mut client = client.into_inner();
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The emulator's token endpoint, as a proxy sees it asked for.
fn token_endpoint(cli: &Cli) -> String {
    format!("POST {}/services/oauth2/token", cli.emulator.base_url())
}

/// A login `dev`, made directly (`refresh` then spends its refresh token each time).
async fn logged_in() -> Cli {
    let cli = Cli::start().await;
    cli.login_web("dev").await.ok();
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_goes_through_the_proxy_that_each_setting_names() {
    let proxy = TestProxy::start(None).await;
    let cli = logged_in().await;
    let endpoint = token_endpoint(&cli);

    // --proxy URL: the refresh asks the proxy, which relays it.
    let before = cli.token("dev").await;
    cli.run(&["--proxy", &proxy.url(), "refresh", "dev"])
        .await
        .ok();
    assert_ne!(cli.token("dev").await, before, "refreshed");
    assert_eq!(
        proxy.lines_with(&endpoint).len(),
        1,
        "{:?}",
        proxy.requests()
    );

    // The environment, as curl reads it (lower-case http_proxy for an http URL), is the default.
    cli.run_env(&["refresh", "dev"], &[("http_proxy", &proxy.url())])
        .await
        .ok();
    assert_eq!(proxy.lines_with(&endpoint).len(), 2);

    // --proxy none ignores the environment; so does `proxy = "none"` in the config file.
    cli.run_env(
        &["--proxy", "none", "refresh", "dev"],
        &[("http_proxy", &proxy.url()), ("ALL_PROXY", &proxy.url())],
    )
    .await
    .ok();
    assert_eq!(proxy.lines_with(&endpoint).len(), 2, "went direct");
    let config = cli.dir.path().join("none.toml");
    std::fs::write(&config, "proxy = \"none\"\n").unwrap();
    cli.run_env(
        &["--config", config.to_str().unwrap(), "refresh", "dev"],
        &[("http_proxy", &proxy.url())],
    )
    .await
    .ok();
    assert_eq!(proxy.lines_with(&endpoint).len(), 2, "went direct");

    // The config file's proxy, and SFAUTH_PROXY over it.
    let config = cli.dir.path().join("proxy.toml");
    std::fs::write(&config, format!("proxy = \"{}\"\n", proxy.url())).unwrap();
    cli.run(&["--config", config.to_str().unwrap(), "refresh", "dev"])
        .await
        .ok();
    assert_eq!(proxy.lines_with(&endpoint).len(), 3);
    cli.run_env(
        &["--config", config.to_str().unwrap(), "refresh", "dev"],
        &[("SFAUTH_PROXY", "none")],
    )
    .await
    .ok();
    assert_eq!(proxy.lines_with(&endpoint).len(), 3, "SFAUTH_PROXY wins");

    // A host in --no-proxy (or NO_PROXY) goes direct even with --proxy.
    for (args, env) in [
        (vec!["--no-proxy", "127.0.0.1"], vec![]),
        (vec![], vec![("NO_PROXY", "localhost,127.0.0.1")]),
    ] {
        let url = proxy.url();
        let mut all = vec!["--proxy", url.as_str()];
        all.extend(args);
        all.extend(["refresh", "dev"]);
        cli.run_env(&all, &env).await.ok();
        assert_eq!(proxy.lines_with(&endpoint).len(), 3, "went direct: {all:?}");
    }

    // Every command's requests go the same way: whoami's userinfo, and api's REST call.
    cli.run(&["--proxy", &proxy.url(), "whoami", "dev"])
        .await
        .ok();
    assert_eq!(proxy.lines_with("/services/oauth2/userinfo").len(), 1);
    cli.run(&[
        "--proxy",
        &proxy.url(),
        "api",
        "dev",
        "GET",
        "/services/data/v62.0/limits",
    ])
    .await
    .ok();
    assert_eq!(proxy.lines_with("/services/data/v62.0/limits").len(), 1);
    assert!(proxy.requests().iter().all(|(_, auth)| auth.is_none()));
}

/// No trace of `password` anywhere in what a run printed.
#[track_caller]
fn shows_no(run: &Run, password: &str) {
    assert!(
        !run.stdout.contains(password) && !run.stderr.contains(password),
        "the proxy password was printed: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_password_goes_to_the_proxy_and_is_never_printed() {
    const PASSWORD: &str = "hunter2-egress";
    let proxy = TestProxy::start(Some(&format!("egress:{PASSWORD}"))).await;
    let cli = logged_in().await;
    let endpoint = token_endpoint(&cli);
    let with_password = format!("http://egress:{PASSWORD}@{}", proxy.addr);

    // From SFAUTH_PROXY, with every log on: the proxy gets the credentials, the output has none.
    let run = cli
        .run_env(
            &["refresh", "dev"],
            &[("SFAUTH_PROXY", &with_password), ("SFAUTH_LOG", "trace")],
        )
        .await;
    run.ok();
    shows_no(&run, PASSWORD);
    let asked = proxy.requests();
    let (_, authorization) = asked
        .iter()
        .find(|(line, _)| line.contains(&endpoint))
        .unwrap();
    assert_eq!(
        authorization.as_deref(),
        Some(
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("egress:{PASSWORD}"))
            )
            .as_str()
        )
    );

    // The wrong password: the proxy refuses, the command fails, and neither password shows
    // (percent-encoded in the URL, or decoded).
    for wrong in ["wrong-pass%2Fword", "wrong-pass!word"] {
        let run = cli
            .run_env(
                &["refresh", "dev"],
                &[
                    (
                        "SFAUTH_PROXY",
                        &format!("http://egress:{wrong}@{}", proxy.addr),
                    ),
                    ("SFAUTH_LOG", "debug"),
                ],
            )
            .await;
        // Over plain http (the emulator) the proxy's 407 is the answer; through a CONNECT
        // tunnel (https) it is a connection failure.
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains("407"), "{run:?}");
        shows_no(&run, "wrong-pass");
    }
    // The refused refreshes spent nothing: through the proxy with the right password the login refreshes.
    cli.run_env(&["refresh", "dev"], &[("SFAUTH_PROXY", &with_password)])
        .await
        .ok();

    // A password on the command line or in the config file, where others can read it, is
    // refused before anything is sent, without quoting it.
    let run = cli
        .run(&["--proxy", &with_password, "refresh", "dev"])
        .await;
    run.fails(2, "--proxy holds a proxy URL with a password");
    assert!(run.stderr.contains("set SFAUTH_PROXY to the URL instead"));
    shows_no(&run, PASSWORD);
    let config = cli.dir.path().join("proxy.toml");
    std::fs::write(&config, format!("proxy = \"{with_password}\"\n")).unwrap();
    let run = cli
        .run(&["--config", config.to_str().unwrap(), "refresh", "dev"])
        .await;
    run.fails(
        2,
        "`proxy` in the config file holds a proxy URL with a password",
    );
    shows_no(&run, PASSWORD);
    // A proxy that is not usable is named by where it came from, never quoted.
    for bad in [
        format!("socks5://egress:{PASSWORD}@{}", proxy.addr),
        format!("http://egress:{PASSWORD}@"),
    ] {
        let run = cli
            .run_env(&["refresh", "dev"], &[("SFAUTH_PROXY", &bad)])
            .await;
        run.fails(2, "SFAUTH_PROXY is not a usable proxy");
        shows_no(&run, PASSWORD);
    }
}
