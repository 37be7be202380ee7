//! Egress through a proxy: an `https` request tunnels through a small `CONNECT` proxy on
//! loopback to a TLS server with a name no resolver knows, so a request that went direct could
//! not arrive. The proxy records what it was asked; the server says which host it served.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of a test fail the test by panicking"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sfauth_core::http::{HttpTransport, TransportErrorKind};
use sfauth_transport::{Proxy, ReqwestTransport};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The name the TLS server's certificate is for; nothing resolves it.
const HOST: &str = "login.sfauth-proxy.test";

/// A TLS server for [`HOST`] on loopback, with the PEM of the CA that signed its certificate.
struct TlsServer {
    addr: SocketAddr,
    ca_pem: String,
}

async fn tls_server() -> TlsServer {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sfauth proxy test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec![HOST.to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| {
                    let host = request
                        .headers()
                        .get(hyper::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "served {host}"
                        )))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        ca_pem: ca_cert.pem(),
    }
}

/// One request to the proxy: its request line and its `Proxy-Authorization`, if any.
type Asked = (String, Option<String>);

/// What the proxy was asked.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Asked>>>);

impl Seen {
    fn requests(&self) -> Vec<Asked> {
        self.0.lock().unwrap().clone()
    }
}

/// A `CONNECT` proxy on loopback that tunnels every request to `upstream`, whatever host it
/// names, and refuses with 407 when `credentials` are required and not given.
async fn connect_proxy(upstream: SocketAddr, credentials: Option<&str>) -> (SocketAddr, Seen) {
    let expected = credentials.map(|c| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let record = record.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut line = String::new();
                client.read_line(&mut line).await.unwrap();
                let mut authorization = None;
                loop {
                    let mut header = String::new();
                    if client.read_line(&mut header).await.unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("proxy-authorization")
                    {
                        authorization = Some(value.trim().to_owned());
                    }
                }
                record
                    .0
                    .lock()
                    .unwrap()
                    .push((line.trim().to_owned(), authorization.clone()));
                if expected.is_some() && authorization != expected {
                    let _ = client
                        .get_mut()
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"egress\"\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let mut server = TcpStream::connect(upstream).await.unwrap();
                client
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(client.get_mut(), &mut server).await;
            });
        }
    });
    (addr, seen)
}

fn get(url: &str) -> sfauth_core::http::HttpRequest {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

#[tokio::test]
async fn https_tunnels_through_the_configured_proxy() {
    let server = tls_server().await;
    let (proxy, seen) = connect_proxy(server.addr, None).await;
    let transport = ReqwestTransport::builder()
        .proxy(Proxy::url(&format!("http://{proxy}")).unwrap())
        .root_certificate(server.ca_pem.as_bytes())
        .build()
        .unwrap();
    let response = transport
        .send(get(&format!("https://{HOST}/services/oauth2/token")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.body().as_ref(),
        format!("served {HOST}").as_bytes()
    );
    let requests = seen.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, format!("CONNECT {HOST}:443 HTTP/1.1"));
    assert_eq!(requests[0].1, None);
}

#[tokio::test]
async fn proxy_credentials_go_to_the_proxy_and_never_into_errors() {
    let server = tls_server().await;
    let (proxy, seen) = connect_proxy(server.addr, Some("egress:p@ss word")).await;
    let with = |user_info: &str| {
        ReqwestTransport::builder()
            .proxy(Proxy::url(&format!("http://{user_info}@{proxy}")).unwrap())
            .root_certificate(server.ca_pem.as_bytes())
            .build()
            .unwrap()
    };
    // Percent-encoded in the URL, sent decoded (RFC 7617 Basic).
    let response = with("egress:p%40ss%20word")
        .send(get(&format!("https://{HOST}/id/keys")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A proxy that refuses: the request never reached Salesforce, so it is a connect failure
    // (a refresh token in it is unspent), and the password is nowhere in the error.
    let error = with("egress:hunter2")
        .send(get(&format!("https://{HOST}/id/keys")))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), TransportErrorKind::Connect, "{error:?}");
    assert!(error.kind().never_sent());
    let shown = format!("{error} {error:?} {:?}", std::error::Error::source(&error));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(seen.requests().len(), 2);
}

#[tokio::test]
async fn no_proxy_hosts_go_direct() {
    let server = tls_server().await;
    let (proxy, seen) = connect_proxy(server.addr, None).await;
    // A plain loopback server that the request must reach directly.
    let direct = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct_addr = direct.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = direct.accept().await {
            let service = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    b"direct",
                ))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    let transport = ReqwestTransport::builder()
        .proxy(
            Proxy::url(&format!("http://{proxy}"))
                .unwrap()
                .no_proxy("127.0.0.1,localhost"),
        )
        .build()
        .unwrap();
    let response = transport
        .send(get(&format!("http://{direct_addr}/")))
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"direct");
    assert!(seen.requests().is_empty(), "{:?}", seen.requests());
}

/// The environment's variables are read when the transport is built, so this runs in a child
/// process started with them (setting variables in a threaded test process is unsound).
#[tokio::test]
async fn the_environment_proxy_is_used_by_default() {
    const CHILD: &str = "SFAUTH_PROXY_TEST_CHILD";
    if let Ok(ca_pem) = std::env::var(CHILD) {
        let transport = ReqwestTransport::builder()
            .root_certificate(ca_pem.into_bytes())
            .build()
            .unwrap();
        let response = transport
            .send(get(&format!("https://{HOST}/")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        return;
    }
    let server = tls_server().await;
    let (proxy, seen) = connect_proxy(server.addr, None).await;
    let run = |extra: &[(&str, String)]| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "proxy::the_environment_proxy_is_used_by_default",
                "--test-threads=1",
            ])
            .env(CHILD, &server.ca_pem);
        for name in [
            "https_proxy",
            "HTTPS_PROXY",
            "http_proxy",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(name);
        }
        for (name, value) in extra {
            command.env(name, value);
        }
        command
    };
    // The proxy runs on this test's runtime: wait for the child off it.
    let wait = |mut command: std::process::Command| async move {
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    };
    // Upper case as many systems set it, and a bare host:port as curl accepts it.
    let output = wait(run(&[("HTTPS_PROXY", proxy.to_string())])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(seen.requests().len(), 1);
    // Excluded by NO_PROXY, it goes direct: the name resolves nowhere, so the child fails
    // without asking the proxy.
    let output = wait(run(&[
        ("https_proxy", format!("http://{proxy}")),
        ("NO_PROXY", ".sfauth-proxy.test".to_owned()),
    ]))
    .await;
    assert!(!output.status.success());
    assert_eq!(seen.requests().len(), 1);
}
