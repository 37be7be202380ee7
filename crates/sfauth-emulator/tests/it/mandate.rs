//! The 2025–2027 platform rules (issue #15), over TCP: the partner-app mandate, the
//! refresh-token IP allowlist, external client apps and uninstalled apps, staged secret
//! rotation, the login rate limit, sandbox refreshes and My Domain changes. Each is set once
//! through the builder or the handle and once through the admin API or the configuration file.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sfauth_emulator::{
    AppKind, EmulatorConfig, ErrorBody, RefreshTokenStatus, SEED_CLIENT_PRIVATE_KEY, UserConfig,
    assertions,
};
use sha2::Sha256;

use crate::common::*;

const VERIFIER: &str = "mandate-verifier-long-enough-for-rfc-7636-0123456789-abcdefghijk";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn challenge() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<Sha256 as sha2::Digest>::digest(VERIFIER.as_bytes()))
}

/// `/services/oauth2/authorize` (auto-approved) with the given PKCE parameters.
async fn authorize(env: &Env, challenge: Option<&str>, method: Option<&str>) -> Reply {
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", env.c.client_id.as_str()),
        ("redirect_uri", env.c.callback_url.as_str()),
        ("scope", "api refresh_token"),
    ];
    if let Some(c) = challenge {
        query.push(("code_challenge", c));
    }
    if let Some(m) = method {
        query.push(("code_challenge_method", m));
    }
    let r = env
        .send(
            env.http
                .get(env.url("/services/oauth2/authorize"))
                .query(&query),
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    r
}

/// The code exchange; `secret` and `verifier` are sent when given.
async fn exchange(env: &Env, code: &str, secret: bool, verifier: bool) -> Reply {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", env.c.client_id.as_str()),
        ("redirect_uri", env.c.callback_url.as_str()),
    ];
    if secret {
        form.push(("client_secret", env.c.client_secret.as_str()));
    }
    if verifier {
        form.push(("code_verifier", VERIFIER));
    }
    env.token(&form).await
}

async fn admin(env: &Env, path: &str, body: Value) -> Reply {
    env.send(env.http.post(env.url(path)).json(&body)).await
}

fn jwt_login_form(env: &Env) -> Vec<(&'static str, String)> {
    let claims = json!({
        "iss": env.c.client_id,
        "sub": env.c.username,
        "aud": "https://login.salesforce.com",
        "exp": env.emu.clock().now_secs() + 120,
    });
    vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
        ),
        (
            "assertion",
            assertions::jwt(SEED_CLIENT_PRIVATE_KEY, &claims).unwrap(),
        ),
    ]
}

async fn jwt_login(env: &Env) -> Reply {
    let form = jwt_login_form(env);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.token(&form).await
}

#[tokio::test]
async fn partner_mandate_requires_s256_pkce_and_the_secret() {
    let env = env_with(|b| {
        b.app_policy(|p| p.partner_mandate = true)
            .settings(|s| s.accept_plain_pkce = true)
    })
    .await;
    let missing = authorize(&env, None, None).await.location_params();
    assert_eq!(missing["error"], "invalid_request");
    assert_eq!(
        missing["error_description"],
        "missing required code challenge"
    );
    // `plain` is refused under the mandate even where the emulator would otherwise take it.
    let plain = authorize(&env, Some(VERIFIER), Some("plain"))
        .await
        .location_params();
    assert_eq!(
        plain["error_description"], "unsupported code challenge method",
        "{plain:?}"
    );

    let code = authorize(&env, Some(&challenge()), Some("S256"))
        .await
        .location_params()["code"]
        .clone();
    // A confidential client sends both; either alone is refused, and the code survives that.
    exchange(&env, &code, false, true).await.expect_error(
        400,
        "invalid_client",
        "invalid client credentials",
    );
    exchange(&env, &code, true, false).await.expect_error(
        400,
        "invalid_grant",
        "invalid code verifier",
    );
    let login = exchange(&env, &code, true, true).await;
    login.expect_ok();

    // Rotation is forced on although the app's own switch is off.
    let rt1 = login.field("refresh_token");
    let r = env.refresh(&rt1).await;
    r.expect_ok();
    assert_ne!(r.field("refresh_token"), rt1);
    assert_eq!(
        env.emu.refresh_token_status(&rt1),
        RefreshTokenStatus::RotatedOut
    );

    // A PKCE-required app has no client credentials flow.
    env.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", &env.c.client_id),
        ("client_secret", &env.c.client_secret),
    ])
    .await
    .expect_error(400, "invalid_grant", "no client credentials user enabled");

    // Without the mandate the same app takes a code without PKCE again.
    env.emu
        .set_policy(&env.c.client_id, |p| p.partner_mandate = false)
        .unwrap();
    let code = authorize(&env, None, None).await.location_params()["code"].clone();
    exchange(&env, &code, true, false).await.expect_ok();
}

#[tokio::test]
async fn partner_mandate_caps_idle_refresh_tokens_at_thirty_days() {
    let env = env_with(|b| b.app_policy(|p| p.partner_mandate = true)).await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.emu.advance(DAY * 30 - Duration::from_secs(1));
    let r = env.refresh(&rt).await;
    r.expect_ok();
    // Each use restarts the idle window.
    let rt = r.field("refresh_token");
    env.emu.advance(DAY * 30 - Duration::from_secs(1));
    let rt = env.refresh(&rt).await.field("refresh_token");
    env.emu.advance(DAY * 30);
    assert_eq!(
        env.emu.refresh_token_status(&rt),
        RefreshTokenStatus::Expired
    );
    env.refresh(&rt)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
}

#[tokio::test]
async fn refresh_token_ip_allowlist_checks_the_socket_address() {
    let env = env_with(|b| {
        b.admin_api(true)
            .app_policy(|p| p.refresh_token_ip_allowlist = vec!["127.0.0.1".parse().unwrap()])
    })
    .await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.refresh(&rt).await.expect_ok();

    // 127.0.0.1 is outside the list now: refused, and the token is not spent.
    env.emu
        .set_policy(&env.c.client_id, |p| {
            p.refresh_token_ip_allowlist = vec!["10.0.0.0/8".parse().unwrap()];
        })
        .unwrap();
    // A header naming an allowed address changes nothing: the socket's address counts.
    let spoofed = env
        .send(
            env.http
                .post(env.url("/services/oauth2/token"))
                .header("x-forwarded-for", "10.1.2.3")
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.as_str()),
                    ("client_id", env.c.client_id.as_str()),
                    ("client_secret", env.c.client_secret.as_str()),
                ]),
        )
        .await;
    spoofed.expect_error(400, "invalid_grant", "ip restricted");
    assert_eq!(
        env.emu.refresh_token_status(&rt),
        RefreshTokenStatus::Active
    );
    // The web server flow's code exchange is covered too.
    let code = authorize(&env, Some(&challenge()), None)
        .await
        .location_params()["code"]
        .clone();
    exchange(&env, &code, true, true)
        .await
        .expect_error(400, "invalid_grant", "ip restricted");
    // The password flow is not.
    env.password_login().await;

    // The error is configurable, since Salesforce's is unconfirmed.
    env.emu.update_settings(|s| {
        s.ip_blocked_error =
            ErrorBody::new("invalid_grant", "IP restricted or invalid login hours");
    });
    env.refresh(&rt).await.expect_error(
        400,
        "invalid_grant",
        "IP restricted or invalid login hours",
    );

    // Allowed again through the admin API (the policy replaced whole), with the same token.
    let r = admin(
        &env,
        &format!("/__emulator/apps/{}/policy", env.c.client_id),
        json!({"refresh_token_ip_allowlist": ["127.0.0.0/24", "::1"]}),
    )
    .await;
    r.expect_ok();
    env.refresh(&rt).await.expect_ok();
    let bad = admin(
        &env,
        &format!("/__emulator/apps/{}/policy", env.c.client_id),
        json!({"refresh_token_ip_allowlist": ["not-an-address"]}),
    )
    .await;
    assert!(bad.status >= 400, "{}", bad.body);
}

#[tokio::test]
async fn ip_allowlist_from_the_configuration_file() {
    let text = r#"
        [settings]
        auto_approve = true
        ip_blocked_error = { error = "invalid_grant", error_description = "blocked here" }
        [[orgs]]
        name = "Partner"
        [[orgs.users]]
        username = "isv@partner.test"
        password = "pw"
        security_token = "tok"
        [[orgs.apps]]
        client_id = "partner-app"
        client_secret = "partner-secret"
        callback_urls = ["http://localhost:1717/OauthRedirect"]
        [orgs.apps.policy]
        partner_mandate = true
        refresh_token_ip_allowlist = ["192.0.2.0/24"]
    "#;
    let config = EmulatorConfig::from_toml(text).unwrap();
    let app = &config.orgs[0].apps[0];
    assert!(app.policy.partner_mandate);
    let env = env_with(|b| b.config(config)).await;
    let code = authorize(&env, Some(&challenge()), Some("S256"))
        .await
        .location_params()["code"]
        .clone();
    exchange(&env, &code, true, true)
        .await
        .expect_error(400, "invalid_grant", "blocked here");
    assert!(EmulatorConfig::from_toml(&text.replace("192.0.2.0/24", "192.0.2.0/99")).is_err());
}

#[tokio::test]
async fn external_client_apps_and_orgs_block_the_password_flow() {
    let env = env_with(|b| b.admin_api(true)).await;
    env.password_login().await;
    env.emu
        .update_app(&env.c.client_id, |a| a.kind = AppKind::ExternalClientApp)
        .unwrap();
    env.password_login_raw()
        .await
        .expect_error(400, "invalid_grant", "authentication failure");
    // Other flows of the external client app work.
    env.code_login("api refresh_token").await;

    let r = admin(
        &env,
        &format!("/__emulator/apps/{}/config", env.c.client_id),
        json!({"kind": "connected_app"}),
    )
    .await;
    r.expect_ok();
    env.password_login().await;

    // The org-level switch blocks it for a connected app too, through the admin API ...
    let settings = format!("/__emulator/orgs/{}/settings", env.c.org_id);
    admin(
        &env,
        &settings,
        json!({"block_username_password_flow": true}),
    )
    .await
    .expect_ok();
    env.password_login_raw()
        .await
        .expect_error(400, "invalid_grant", "authentication failure");
    // ... with the configurable error ...
    env.emu.update_settings(|s| {
        s.password_flow_blocked_error = ErrorBody::new("invalid_grant", "flow blocked");
    });
    env.password_login_raw()
        .await
        .expect_error(400, "invalid_grant", "flow blocked");
    // ... and through the handle.
    env.emu
        .update_org(&env.c.org_id, |o| o.block_username_password_flow = false)
        .unwrap();
    env.password_login().await;
    let unknown = admin(&env, &settings, json!({"no_such_setting": 1})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
}

#[tokio::test]
async fn uninstalled_apps_refuse_new_authorizations_and_the_device_flow() {
    let env = env_with(|b| b.admin_api(true)).await;
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    let r = admin(
        &env,
        &format!("/__emulator/apps/{}/config", env.c.client_id),
        json!({"installed": false}),
    )
    .await;
    r.expect_ok();

    let denied = authorize(&env, Some(&challenge()), None)
        .await
        .location_params();
    assert_eq!(denied["error"], "invalid_client");
    assert_eq!(
        denied["error_description"],
        "app must be installed into org"
    );
    env.token(&[
        ("response_type", "device_code"),
        ("client_id", &env.c.client_id),
        ("scope", "api refresh_token"),
    ])
    .await
    .expect_error(400, "invalid_client", "app must be installed into org");
    // Tokens issued before keep working.
    env.refresh(&rt).await.expect_ok();

    // A user with "Approve Uninstalled Connected Apps" may still authorize it.
    env.emu
        .add_user(
            &env.c.org_id,
            UserConfig {
                username: "approver@emulator.sfauth.test".to_owned(),
                password: "pw".to_owned(),
                approve_uninstalled_apps: true,
                ..UserConfig::default()
            },
        )
        .unwrap();
    let r = env
        .send(env.http.get(env.url("/services/oauth2/authorize")).query(&[
            ("response_type", "code"),
            ("client_id", env.c.client_id.as_str()),
            ("redirect_uri", env.c.callback_url.as_str()),
            ("login_hint", "approver@emulator.sfauth.test"),
        ]))
        .await;
    assert!(r.location_params().contains_key("code"), "{r:?}");

    env.emu
        .update_app(&env.c.client_id, |a| a.installed = true)
        .unwrap();
    env.token(&[
        ("response_type", "device_code"),
        ("client_id", &env.c.client_id),
    ])
    .await
    .expect_ok();
}

#[tokio::test]
async fn staged_secret_rotation() {
    let env = env_with(|b| b.admin_api(true)).await;
    let old = env.c.client_secret.clone();
    let new = "EMU0NEW0STAGED0SECRET0000000000000000000000000000000000000002";
    let login = |secret: String| {
        let env = &env;
        async move {
            let pw = env.c.password_with_token();
            env.token(&[
                ("grant_type", "password"),
                ("client_id", &env.c.client_id),
                ("client_secret", &secret),
                ("username", &env.c.username),
                ("password", &pw),
            ])
            .await
        }
    };
    login(new.to_owned())
        .await
        .expect_error(400, "invalid_client", "invalid client credentials");
    let stage = format!("/__emulator/apps/{}/secret/stage", env.c.client_id);
    admin(&env, &stage, json!({"client_secret": new}))
        .await
        .expect_ok();
    // Both work while staged, and each response is signed with the secret that was sent.
    for secret in [old.as_str(), new] {
        let r = login(secret.to_owned()).await;
        r.expect_ok();
        assert_eq!(
            r.field("signature"),
            expected_signature(secret, &r.field("id"), &r.field("issued_at"))
        );
    }
    let apply = format!("/__emulator/apps/{}/secret/apply", env.c.client_id);
    admin(&env, &apply, json!({})).await.expect_ok();
    login(old.clone())
        .await
        .expect_error(400, "invalid_client", "invalid client credentials");
    login(new.to_owned()).await.expect_ok();
    // Nothing staged any more: applying again is refused.
    assert_eq!(admin(&env, &apply, json!({})).await.status, 400);

    // The handle does the same.
    env.emu.stage_client_secret(&env.c.client_id, &old).unwrap();
    login(old.clone()).await.expect_ok();
    login(new.to_owned()).await.expect_ok();
    env.emu
        .apply_staged_client_secret(&env.c.client_id)
        .unwrap();
    login(new.to_owned())
        .await
        .expect_error(400, "invalid_client", "invalid client credentials");
    assert!(env.emu.stage_client_secret(&env.c.client_id, "").is_err());
}

#[tokio::test]
async fn login_rate_limit_per_user_and_hour() {
    let env = env_with(|b| b.orgs(|o| o.login_rate_limit_per_hour = Some(3))).await;
    env.password_login().await;
    jwt_login(&env).await.expect_ok();
    // Client credentials log in as the run-as user: the same user here.
    env.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", &env.c.client_id),
        ("client_secret", &env.c.client_secret),
    ])
    .await
    .expect_ok();
    env.password_login_raw().await.expect_error(
        400,
        "rate_limit_exceeded",
        "Number of logins exceeded",
    );
    jwt_login(&env)
        .await
        .expect_error(400, "rate_limit_exceeded", "Number of logins exceeded");
    // A refresh is not a login.
    let rt = env
        .code_login("api refresh_token")
        .await
        .field("refresh_token");
    env.refresh(&rt).await.expect_ok();
    // The window rolls: an hour after the first login one slot is free again.
    env.emu.advance(Duration::from_secs(3600));
    env.password_login().await;
    env.emu
        .update_org(&env.c.org_id, |o| o.login_rate_limit_per_hour = None)
        .unwrap();
    for _ in 0..5 {
        env.password_login().await;
    }
}

#[tokio::test]
async fn a_sandbox_refresh_kills_every_old_token_for_good() {
    let env = env_with(|b| b.admin_api(true).orgs(|o| o.sandbox = true)).await;
    let login = env.code_login("api refresh_token").await;
    let (access, rt) = (login.field("access_token"), login.field("refresh_token"));
    assert_eq!(env.rest_status(&access).await, 200);

    let r = admin(
        &env,
        &format!("/__emulator/orgs/{}/sandbox-refresh", env.c.org_id),
        json!({}),
    )
    .await;
    r.expect_ok();
    let new_org = r.json()["result"].as_str().unwrap().to_owned();
    assert_ne!(new_org, env.c.org_id);
    assert!(new_org.starts_with("00D") && new_org.len() == 18);

    env.refresh(&rt)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");
    assert_eq!(env.rest_status(&access).await, 401);
    // The same credentials log in to the new org, with new ids.
    let fresh = env.password_login().await;
    let id = fresh.field("id");
    assert!(id.contains(&new_org), "{id}");
    assert!(!id.contains(&env.c.user_id), "{id}");
    assert!(fresh.field("access_token").starts_with(&new_org[..15]));
    // The old org is gone from the admin API; the new one refreshes again.
    let again = admin(
        &env,
        &format!("/__emulator/orgs/{}/sandbox-refresh", env.c.org_id),
        json!({}),
    )
    .await;
    assert_eq!(again.status, 404, "{}", again.body);
    let newer = env.emu.refresh_sandbox(&new_org).unwrap();
    assert_ne!(newer, new_org);
    assert_eq!(env.rest_status(&fresh.field("access_token")).await, 401);
}

#[tokio::test]
async fn a_my_domain_change_moves_the_login_host_and_instance_url() {
    let env = env_with(|b| {
        b.admin_api(true)
            .orgs(|o| o.my_domain = Some("acme.my.salesforce.test".to_owned()))
    })
    .await;
    let port = env.emu.base_url().rsplit(':').next().unwrap().to_owned();
    let login = env.password_login().await;
    assert_eq!(
        login.field("instance_url"),
        format!("http://acme.my.salesforce.test:{port}")
    );

    let r = env
        .send(env.http.post(env.url(&format!(
            "/__emulator/orgs/{}/my-domain?host=acme-new.my.salesforce.test",
            env.c.org_id
        ))))
        .await;
    r.expect_ok();
    let login = env.password_login().await;
    assert_eq!(
        login.field("instance_url"),
        format!("http://acme-new.my.salesforce.test:{port}")
    );

    // The old host redirects every request to the same path on the new one.
    let old_host = |path: &str| {
        env.http
            .post(env.url(path))
            .header("host", format!("acme.my.salesforce.test:{port}"))
    };
    let pw = env.c.password_with_token();
    let form = [
        ("grant_type", "password"),
        ("client_id", env.c.client_id.as_str()),
        ("client_secret", env.c.client_secret.as_str()),
        ("username", env.c.username.as_str()),
        ("password", pw.as_str()),
    ];
    let moved = env
        .send(old_host("/services/oauth2/token?format=json").form(&form))
        .await;
    assert_eq!(moved.status, 302, "{}", moved.body);
    assert_eq!(
        moved.header("location"),
        format!("http://acme-new.my.salesforce.test:{port}/services/oauth2/token?format=json")
    );
    // The new host and any other host are served.
    env.send(
        env.http
            .post(env.url("/services/oauth2/token"))
            .header("host", format!("acme-new.my.salesforce.test:{port}"))
            .form(&form),
    )
    .await
    .expect_ok();

    // Without the redirect the old host is simply gone.
    env.emu
        .update_org(&env.c.org_id, |o| o.redirect_previous_my_domain = false)
        .unwrap();
    let gone = env
        .send(old_host("/services/oauth2/token").form(&form))
        .await;
    assert_eq!(gone.status, 404);
    assert!(gone.body.contains("URL No Longer Exists"), "{}", gone.body);
    assert!(
        env.emu
            .change_my_domain(&env.c.org_id, "acme.my.salesforce.test")
            .is_err(),
        "a previous host cannot be taken again"
    );
    assert!(
        env.emu
            .change_my_domain(&env.c.org_id, "not a host")
            .is_err()
    );
}
