//! `/services/oauth2/singleaccess` (what `sf org open --url-only` calls) and the frontdoor URL
//! it hands out, over TCP.

use std::time::Duration;

use crate::common::*;

async fn singleaccess(env: &Env, token: &str, form: &[(&str, &str)]) -> Reply {
    env.send(
        env.http
            .post(env.url("/services/oauth2/singleaccess"))
            .bearer_auth(token)
            .form(form),
    )
    .await
}

/// The path and query of a URL on the emulator.
fn local(env: &Env, url: &str) -> String {
    url.strip_prefix(env.emu.base_url())
        .unwrap_or_else(|| panic!("{url} is not on the emulator"))
        .to_owned()
}

#[tokio::test]
async fn single_access_answers_a_one_time_frontdoor_url() {
    let env = env().await;
    let token = env.password_login().await.field("access_token");
    let r = singleaccess(&env, &token, &[]).await;
    r.expect_ok();
    let uri = r.field("frontdoor_uri");
    let prefix = format!("{}/secur/frontdoor.jsp?otp=", env.c.instance_url);
    assert!(uri.starts_with(&prefix), "{uri}");

    let opened = env.get(&local(&env, &uri)).await;
    assert_eq!(opened.status, 302);
    assert_eq!(opened.header("location"), "/lightning/page/home");
    assert_eq!(
        opened.header("set-cookie"),
        format!("sid={token}; Path=/; HttpOnly; SameSite=None")
    );
    // Single use: the second visit lands on the login page, without a session.
    let again = env.get(&local(&env, &uri)).await;
    assert_eq!(again.status, 302);
    assert!(
        again.header("location").starts_with("/?ec=302"),
        "{again:?}"
    );
    assert_eq!(again.header("set-cookie"), "");

    // With a redirect path, which the page honours.
    let path = "/lightning/r/Account/001000000000001AAA/view";
    let uri = singleaccess(&env, &token, &[("redirect_uri", path)])
        .await
        .field("frontdoor_uri");
    let query = url_params(uri.split_once('?').unwrap().1);
    assert_eq!(query["startURL"], path);
    assert_eq!(env.get(&local(&env, &uri)).await.header("location"), path);

    // A URL not opened within a minute is dead.
    let uri = singleaccess(&env, &token, &[]).await.field("frontdoor_uri");
    env.emu.advance(Duration::from_secs(61));
    let late = env.get(&local(&env, &uri)).await;
    assert!(late.header("location").starts_with("/?ec=302"), "{late:?}");
}

#[tokio::test]
async fn single_access_refuses_what_cannot_open_a_ui_session() {
    let env = env().await;
    let token = env.password_login().await.field("access_token");
    let away = singleaccess(&env, &token, &[("redirect_uri", "https://evil.test/")]).await;
    assert_eq!(away.status, 400, "{}", away.body);
    let api_only = env
        .code_login("api refresh_token")
        .await
        .field("access_token");
    let r = singleaccess(&env, &api_only, &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()[0]["errorCode"], "INSUFFICIENT_ACCESS");
    env.emu.expire_access_tokens();
    let dead = singleaccess(&env, &token, &[]).await;
    assert_eq!(dead.status, 401);
    assert_eq!(dead.json()[0]["errorCode"], "INVALID_SESSION_ID");
    // The older `sid` form of the page needs a live session too.
    let page = env
        .get(&format!("/secur/frontdoor.jsp?sid={token}&retURL=/home"))
        .await;
    assert_eq!(page.header("location"), "/?ec=302&startURL=%2Fhome");
}
