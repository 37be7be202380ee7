//! Hostile numbers: claims, assertion dates, admin calls, settings and configuration at the
//! ends of their ranges get a clean answer. A handler that panics answers 500 (its task dies),
//! so every reply here is checked for the exact status a well-formed request of its kind gets.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sfauth_emulator::{EmulatorConfig, ErrorKind, SEED_CLIENT_PRIVATE_KEY, assertions};

use crate::common::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SAML_BEARER: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";
const LOGIN: &str = "https://login.salesforce.com";
const EXPIRED: Option<(&str, &str)> = Some(("invalid_grant", "expired authorization code"));

/// A JWT bearer case for the seeded user whose claims are `claims` over a valid base.
fn jwt_case<'a>(
    env: &Env,
    name: &'a str,
    claims: &[(&str, Value)],
    error: Option<(&'a str, &'a str)>,
) -> Case<'a> {
    let mut all = json!({
        "iss": env.c.client_id,
        "sub": env.c.username,
        "aud": LOGIN,
        "exp": env.emu.clock().now_secs() + 180,
    });
    for (claim, value) in claims {
        all[*claim] = value.clone();
    }
    Case {
        name,
        form: vec![
            ("grant_type", JWT_BEARER.to_owned()),
            (
                "assertion",
                assertions::jwt(SEED_CLIENT_PRIVATE_KEY, &all).unwrap(),
            ),
        ],
        error,
    }
}

#[tokio::test]
async fn jwt_bearer_claims_at_the_ends_of_their_range() {
    let env = env().await;
    let valid_exp = json!(env.emu.clock().now_secs() + 180);
    check(
        &env,
        vec![
            // A number beyond i64 is read as the far future, as any future `exp` is accepted.
            jwt_case(&env, "exp u64::MAX", &[("exp", json!(u64::MAX))], None),
            jwt_case(&env, "exp i64::MAX", &[("exp", json!(i64::MAX))], None),
            jwt_case(&env, "exp 1e308", &[("exp", json!(1e308))], None),
            jwt_case(&env, "exp i64::MIN", &[("exp", json!(i64::MIN))], EXPIRED),
            jwt_case(&env, "exp -1e308", &[("exp", json!(-1e308))], EXPIRED),
            jwt_case(
                &env,
                "exp u64::MAX as a string",
                &[("exp", json!(u64::MAX.to_string()))],
                EXPIRED,
            ),
            jwt_case(
                &env,
                "iat and nbf u64::MAX",
                &[
                    ("exp", valid_exp.clone()),
                    ("iat", json!(u64::MAX)),
                    ("nbf", json!(u64::MAX)),
                ],
                None,
            ),
            jwt_case(
                &env,
                "iat and nbf i64::MIN",
                &[
                    ("exp", valid_exp.clone()),
                    ("iat", json!(i64::MIN)),
                    ("nbf", json!(i64::MIN)),
                ],
                None,
            ),
        ],
    )
    .await;

    // A far-future grant gives a working token.
    let far = jwt_case(&env, "far", &[("exp", json!(u64::MAX))], None);
    let form: Vec<(&str, &str)> = far.form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let token = env.token(&form).await.expect_ok().field("access_token");
    assert_eq!(env.rest_status(&token).await, 200);

    // A bound on `exp` meets numbers beyond it, and a bound beyond any time.
    env.emu.update_settings(|s| s.jwt_max_exp_secs = Some(300));
    check(
        &env,
        vec![
            jwt_case(
                &env,
                "max 300, exp u64::MAX",
                &[("exp", json!(u64::MAX))],
                EXPIRED,
            ),
            jwt_case(
                &env,
                "max 300, exp i64::MAX",
                &[("exp", json!(i64::MAX))],
                EXPIRED,
            ),
        ],
    )
    .await;
    env.emu
        .update_settings(|s| s.jwt_max_exp_secs = Some(u64::MAX));
    check(
        &env,
        vec![jwt_case(
            &env,
            "max u64::MAX, exp i64::MAX",
            &[("exp", json!(i64::MAX))],
            None,
        )],
    )
    .await;
}

/// A SAML bearer assertion for the seeded user whose `NotOnOrAfter` reads `date`.
fn saml_with_date(env: &Env, date: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // 1_000_000_000 s is 2001-09-09T01:46:40Z: written where the assertion's expiry goes.
    let template = assertions::saml(&env.c.client_id, &env.c.username, LOGIN, 1_000_000_000);
    let xml = String::from_utf8(b64.decode(template).unwrap()).unwrap();
    assert!(
        xml.contains("NotOnOrAfter=\"2001-09-09T01:46:40Z\""),
        "{xml}"
    );
    b64.encode(xml.replace("2001-09-09T01:46:40Z", date))
}

#[tokio::test]
async fn saml_not_on_or_after_at_the_ends_of_time() {
    let env = env().await;
    let c = &env.c;
    let case = |name: &'static str, assertion: String, error| Case {
        name,
        form: vec![
            ("grant_type", SAML_BEARER.to_owned()),
            ("assertion", assertion),
        ],
        error,
    };
    let huge = i64::MAX.to_string();
    check(
        &env,
        vec![
            case(
                "year 9999",
                saml_with_date(&env, "9999-12-31T23:59:59Z"),
                None,
            ),
            case(
                "the last second of i64",
                assertions::saml(&c.client_id, &c.username, LOGIN, i64::MAX),
                None,
            ),
            case(
                "the first second of i64",
                assertions::saml(&c.client_id, &c.username, LOGIN, i64::MIN),
                EXPIRED,
            ),
            // Past what i64 seconds hold: no date, so no expiry the assertion can meet.
            case(
                "one second past i64",
                saml_with_date(&env, "292277026596-12-04T15:30:08Z"),
                EXPIRED,
            ),
            case(
                "year i64::MAX",
                saml_with_date(&env, &format!("{huge}-12-31T23:59:59Z")),
                EXPIRED,
            ),
            case(
                "year beyond i64",
                saml_with_date(&env, "99999999999999999999-01-01T00:00:00Z"),
                EXPIRED,
            ),
            case(
                "month i64::MAX",
                saml_with_date(&env, &format!("2026-{huge}-01T00:00:00Z")),
                EXPIRED,
            ),
            case(
                "seconds i64::MAX",
                saml_with_date(&env, &format!("2999-01-01T00:00:{huge}Z")),
                EXPIRED,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn admin_advance_past_the_end_of_time_is_refused() {
    let env = env_with(|b| b.admin_api(true)).await;
    let before = env.emu.clock().now_ms();
    let room_s = u64::try_from((i64::MAX - before) / 1000).unwrap();
    for seconds in [u64::MAX.to_string(), (room_s + 1).to_string()] {
        let r = env
            .post(&format!("/__emulator/clock/advance?seconds={seconds}"), &[])
            .await;
        assert_eq!(r.status, 400, "{seconds}: {}", r.body);
        assert!(r.field("error").contains("past the end"), "{}", r.body);
    }
    for garbage in ["18446744073709551616", "-1", "1e9"] {
        let r = env
            .post(&format!("/__emulator/clock/advance?seconds={garbage}"), &[])
            .await;
        assert_eq!(r.status, 400, "{garbage}: {}", r.body);
    }
    assert_eq!(
        env.emu.clock().now_ms(),
        before,
        "refused advances move nothing"
    );

    // Right up to the end: every kind of request still gets its ordinary answer.
    let r = env
        .post(
            &format!("/__emulator/clock/advance?seconds={}", room_s - 1),
            &[],
        )
        .await;
    r.expect_ok();
    assert!(env.emu.clock().now_ms() > i64::MAX - 2_000, "{}", r.body);
    let refresh_token = lives_to_the_end_of_time(&env).await;

    // The handle saturates instead: the clock stops at its end, and requests still answer.
    env.emu.advance(Duration::MAX);
    env.emu.advance(Duration::MAX);
    assert_eq!(env.emu.clock().now_ms(), i64::MAX);
    let r = env.post("/__emulator/clock/advance?seconds=1", &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Every lifetime ends where the clock now stands: tokens are born dead, codes expired.
    let refreshed = env.refresh(&refresh_token).await;
    refreshed.expect_ok();
    assert_eq!(env.rest_status(&refreshed.field("access_token")).await, 401);
    let login = env.password_login().await;
    assert_eq!(env.rest_status(&login.field("access_token")).await, 401);
}

/// A login, a refresh, introspection, userinfo and the HTML login form, with the clock a second
/// from its end.
/// Returns a live refresh token.
async fn lives_to_the_end_of_time(env: &Env) -> String {
    let c = &env.c;
    let login = env.code_login("api refresh_token openid").await;
    let token = login.field("access_token");
    assert_eq!(env.rest_status(&token).await, 200);
    let id_token = jwt_part(&login.field("id_token"), 1);
    assert!(
        id_token["exp"].as_i64().unwrap() >= id_token["iat"].as_i64().unwrap(),
        "the id token's lifetime did not wrap: {id_token}"
    );
    let refreshed = env.refresh(&login.field("refresh_token")).await;
    refreshed.expect_ok();
    let introspected = env
        .post(
            "/services/oauth2/introspect",
            &[
                ("token", &refreshed.field("access_token")),
                ("client_id", &c.client_id),
                ("client_secret", &c.client_secret),
            ],
        )
        .await;
    introspected.expect_ok();
    assert_eq!(introspected.json()["active"], true, "{}", introspected.body);
    assert_eq!(
        env.get_bearer("/services/oauth2/userinfo", &token)
            .await
            .status,
        200
    );

    // The login form's ticket is where the old arithmetic overflowed.
    let query = [
        ("response_type", "code"),
        ("client_id", c.client_id.as_str()),
        ("redirect_uri", c.callback_url.as_str()),
        ("scope", "api refresh_token openid"),
        ("state", "s"),
    ];
    let mut form: Vec<(&str, &str)> = query.to_vec();
    form.extend([
        ("emulator_step", "login"),
        ("username", c.username.as_str()),
        ("pw", c.password.as_str()),
    ]);
    let consent = env.post("/services/oauth2/authorize", &form).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Allow Access?"), "{}", consent.body);
    // No rotation in this emulator: the login's refresh token stays live.
    login.field("refresh_token")
}

#[tokio::test]
async fn a_huge_device_interval_means_slow_down_not_never() {
    let env = env_with(|b| {
        b.settings(|s| {
            s.device_slow_down = true;
            s.device_interval_secs = u64::MAX;
            s.device_code_lifetime_secs = u64::MAX;
        })
    })
    .await;
    let c = &env.c;
    let start = env
        .token(&[
            ("response_type", "device_code"),
            ("client_id", c.client_id.as_str()),
        ])
        .await;
    start.expect_ok();
    assert_eq!(start.json()["interval"], json!(u64::MAX), "{}", start.body);
    let code = start.field("device_code");
    let poll = || async {
        env.token(&[
            ("grant_type", "device"),
            ("client_id", &c.client_id),
            ("code", &code),
        ])
        .await
    };
    poll()
        .await
        .expect_error(400, "authorization_pending", "authorization pending");
    env.emu.advance(Duration::from_secs(365 * 24 * 60 * 60));
    poll()
        .await
        .expect_error(400, "slow_down", "polling too frequently");
    env.emu
        .approve_device(&start.field("user_code"), &c.username)
        .unwrap();
    poll().await.expect_ok();
}

/// Every number of the configuration at `{N}`.
const HUGE_CONFIG: &str = r#"
seed = {N}
[settings]
code_lifetime_secs = {N}
device_code_lifetime_secs = {N}
device_interval_secs = {N}
id_token_lifetime_secs = {N}
jwt_max_exp_secs = {N}
auto_approve = true
[[orgs]]
name = "Huge"
[[orgs.users]]
username = "huge@huge.test"
password = "pw"
security_token = "TOK"
[[orgs.apps]]
client_id = "3MVG9huge"
client_secret = "secret"
callback_urls = ["http://localhost:1717/OauthRedirect"]
flows = ["authorization_code", "refresh_token", "password", "device"]
require_secret_for_web_server_flow = false
jwt_access_tokens = JWT
[orgs.apps.policy]
session_timeout_secs = {N}
rotation = true
max_approvals_per_user = {N}
refresh_latency_ms = 0
refresh_token_policy = { kind = "POLICY", secs = {N} }
"#;

#[tokio::test]
async fn a_configuration_of_huge_numbers_serves_every_flow() {
    let cases = [
        (i64::MAX.to_string(), "true", "expire_after"),
        (u64::MAX.to_string(), "true", "expire_if_unused"),
        (i64::MAX.to_string(), "false", "expire_if_unused"),
        (u64::MAX.to_string(), "false", "expire_after"),
    ];
    for (n, jwt, policy) in cases {
        let text = HUGE_CONFIG
            .replace("JWT", jwt)
            .replace("POLICY", policy)
            .replace("{N}", &n);
        let config = EmulatorConfig::from_toml(&text).unwrap();
        let env = env_with(|b| b.config(config)).await;
        let login = env.code_login("api refresh_token openid").await;
        let access = login.field("access_token");
        assert_eq!(env.rest_status(&access).await, 200, "jwt {jwt}");
        let id_token = jwt_part(&login.field("id_token"), 1);
        assert!(
            id_token["exp"].as_i64().unwrap() > id_token["iat"].as_i64().unwrap(),
            "the id token's lifetime did not wrap: {id_token}"
        );
        if jwt == "true" {
            let claims = jwt_part(&access, 1);
            assert!(
                claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap(),
                "the access token's lifetime did not wrap: {claims}"
            );
        }
        env.emu
            .advance(Duration::from_secs(10 * 365 * 24 * 60 * 60));
        let refreshed = env.refresh(&login.field("refresh_token")).await;
        refreshed.expect_ok();
        assert_eq!(env.rest_status(&refreshed.field("access_token")).await, 200);
        env.password_login().await;
    }
}

#[tokio::test]
async fn numbers_beyond_their_type_are_a_config_error() {
    for line in [
        "[settings]\ndevice_interval_secs = 18446744073709551616",
        "[settings]\njwt_max_exp_secs = 1e30",
        "[settings]\nid_token_lifetime_secs = -1",
        "seed = 99999999999999999999999",
    ] {
        let err = EmulatorConfig::from_toml(line).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{line}: {err}");
    }
}

#[tokio::test]
async fn rest_query_keywords_at_the_end_and_huge_limits() {
    let env = env().await;
    let token = env.password_login().await.field("access_token");
    let query = |q: &str| {
        env.send(
            env.http
                .get(env.url("/services/data/v62.0/query"))
                .query(&[("q", q)])
                .bearer_auth(&token),
        )
    };
    let r = query("SELECT Id FROM").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("MALFORMED_QUERY"), "{}", r.body);
    let all = query("SELECT Id FROM Account").await;
    assert_eq!(all.status, 200, "{}", all.body);
    for limit in ["LIMIT", "LIMIT 18446744073709551616", "LIMIT -1"] {
        let r = query(&format!("SELECT Id FROM Account {limit}")).await;
        assert_eq!(r.status, 200, "{limit}: {}", r.body);
        assert_eq!(r.json()["totalSize"], all.json()["totalSize"], "{limit}");
    }
    let r = query(&format!("SELECT Id FROM Account LIMIT {}", u64::MAX)).await;
    assert_eq!(r.json()["totalSize"], all.json()["totalSize"]);
    let r = query("select Id from Account limit 0").await;
    assert_eq!(r.json()["totalSize"], 0, "{}", r.body);
}
