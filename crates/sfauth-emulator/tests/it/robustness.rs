//! A server left running for days: idle and slow connections are closed, oversized and
//! malformed bodies are answered, and the clock cannot be pushed into overflow.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::{env, env_with};

/// The emulator's `host:port`.
fn addr(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; `None` if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut seen))
        .await
        .ok()
        .map(|_| seen)
}

#[tokio::test]
async fn idle_connections_are_closed_by_the_server() {
    let env = env_with(|b| b.header_read_timeout(Duration::from_millis(500))).await;
    let addr = addr(env.emu.base_url());
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            // One request, answered, then the connection is kept alive with nothing to do.
            stream
                .write_all(b"GET /services/data/ HTTP/1.1\r\nHost: emulator\r\n\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }
    // A head that never ends is cut off too.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /services/data/ HTTP/1.1\r\nHost: emu")
        .await
        .unwrap();
    idle.push(slow);
    let started = std::time::Instant::now();
    for (i, stream) in idle.iter_mut().enumerate() {
        let seen = read_until_closed(stream, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("connection {i} was never closed"));
        if i % 2 == 1 && i < 200 {
            let text = String::from_utf8_lossy(&seen);
            assert!(text.starts_with("HTTP/1.1 200"), "{i}: {text}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
    // The server still serves new connections afterwards.
    assert_eq!(env.get("/services/data/").await.status, 200);
}

#[tokio::test]
async fn a_slow_body_is_answered_408() {
    let env = env_with(|b| b.body_read_timeout(Duration::from_millis(300))).await;
    let mut stream = TcpStream::connect(addr(env.emu.base_url())).await.unwrap();
    stream
        .write_all(
            b"POST /services/oauth2/token HTTP/1.1\r\nHost: emulator\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
              grant_type",
        )
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the connection is closed after the 408");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn an_oversized_form_is_answered_413() {
    let env = env().await;
    let big = "x".repeat(1_100_000);
    let r = env
        .token(&[
            ("grant_type", "password"),
            ("client_id", &env.c.client_id),
            ("padding", &big),
        ])
        .await;
    assert_eq!(r.status, 413, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(r.json()["error"], "invalid_request");
    assert_eq!(r.json()["error_description"], "request entity too large");
    // The REST API says it in its own shape.
    let token = env.password_login().await.field("access_token");
    let rest = env
        .send(
            env.http
                .get(env.url("/services/data/v62.0/query?q=SELECT+Id+FROM+Account"))
                .bearer_auth(&token)
                .body(big.clone()),
        )
        .await;
    assert_eq!(rest.status, 413, "{}", rest.body);
    assert_eq!(rest.json()[0]["errorCode"], "JSON_PARSER_ERROR");
    // A smaller limit set through the builder applies.
    let small = env_with(|b| b.max_body_bytes(64)).await;
    let r = small
        .token(&[("grant_type", "password"), ("padding", &"y".repeat(100))])
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    // A body at the limit is read as usual.
    let r = small.token(&[("grant_type", "nope")]).await;
    r.expect_error(400, "unsupported_grant_type", "grant type not supported");
}

#[tokio::test]
async fn a_malformed_percent_escape_names_its_parameter() {
    let env = env().await;
    let send = |body: &'static str| {
        env.send(
            env.http
                .post(env.url("/services/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
    };
    let r = send("grant_type=password&client_id=abc&username=a%zzb&password=p").await;
    r.expect_error(400, "invalid_request", "malformed parameter: username");
    let r = send("grant_type=password&password=p%4").await;
    r.expect_error(400, "invalid_request", "malformed parameter: password");
    // Well-formed escapes, `+` for spaces and a lone `%25` are fine.
    let r = send("grant_type=nope&x=a%25b+c").await;
    r.expect_error(400, "unsupported_grant_type", "grant type not supported");
    let q = env.get("/services/oauth2/revoke?token=abc%G1").await;
    q.expect_error(400, "invalid_request", "malformed parameter: token");
}

#[tokio::test]
async fn the_clock_cannot_be_advanced_into_overflow() {
    let env = env_with(|b| b.admin_api(true)).await;
    let refresh_token = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let admin = env
        .post(
            &format!("/__emulator/clock/advance?seconds={}", u64::MAX),
            &[],
        )
        .await;
    assert_eq!(admin.status, 400, "{}", admin.body);
    env.emu.advance(Duration::MAX);
    env.emu.advance(Duration::from_secs(1));
    assert_eq!(env.emu.clock().now_ms(), i64::MAX);
    // The emulator keeps answering at the end of time, without panicking.
    let login = env.password_login_raw().await;
    assert!(login.status == 200 || login.status == 400, "{}", login.body);
    if login.status == 200 {
        let token = login.field("access_token");
        let status = env.rest_status(&token).await;
        assert!(status == 200 || status == 401, "{status}");
    }
    let r = env.refresh(&refresh_token).await;
    assert!(r.status == 200 || r.status == 400, "{}", r.body);
    assert_eq!(env.get("/services/data/").await.status, 200);
    assert_eq!(env.emu.requests_in_progress(), 0);
}
