//! Every grant of the token endpoint, its response fields and its errors.

use base64::Engine as _;
use serde_json::json;
use sfauth_emulator::{Flow, SEED_CLIENT_PRIVATE_KEY, assertions};

use crate::common::*;

#[tokio::test]
async fn password_flow_response_fields_and_signature() {
    let env = env().await;
    let r = env.password_login().await;
    let id = r.field("id");
    let issued_at = r.field("issued_at");
    assert!(
        r.field("access_token")
            .starts_with(&format!("{}!", &env.c.org_id[..15]))
    );
    assert_eq!(
        id,
        format!(
            "{}/id/{}/{}",
            env.emu.base_url(),
            env.c.org_id,
            env.c.user_id
        )
    );
    assert_eq!(r.field("instance_url"), env.emu.base_url());
    assert_eq!(r.field("token_type"), "Bearer");
    assert_eq!(issued_at.len(), 13, "issued_at is milliseconds");
    assert_eq!(issued_at, env.emu.clock().now_ms().to_string());
    assert_eq!(
        r.field("signature"),
        expected_signature(&env.c.client_secret, &id, &issued_at)
    );
    assert!(
        !r.has("refresh_token"),
        "no refresh token in the password flow"
    );
    assert!(!r.has("expires_in"), "Salesforce never sends expires_in");
    assert!(r.json()["issued_at"].is_string());
    assert_eq!(env.rest_status(&r.field("access_token")).await, 200);
}

#[tokio::test]
async fn password_flow_errors() {
    let env = env().await;
    let c = &env.c;
    let form = |client_id: &str, secret: &str, user: &str, pw: &str| {
        vec![
            ("grant_type", "password".to_owned()),
            ("client_id", client_id.to_owned()),
            ("client_secret", secret.to_owned()),
            ("username", user.to_owned()),
            ("password", pw.to_owned()),
        ]
    };
    let good = c.password_with_token();
    check(
        &env,
        vec![
            Case {
                name: "ok",
                form: form(&c.client_id, &c.client_secret, &c.username, &good),
                error: None,
            },
            Case {
                name: "username is case-insensitive",
                form: form(
                    &c.client_id,
                    &c.client_secret,
                    &c.username.to_uppercase(),
                    &good,
                ),
                error: None,
            },
            Case {
                name: "security token missing",
                form: form(&c.client_id, &c.client_secret, &c.username, &c.password),
                error: Some(("invalid_grant", "authentication failure")),
            },
            Case {
                name: "unknown user",
                form: form(&c.client_id, &c.client_secret, "nobody@x.test", &good),
                error: Some(("invalid_grant", "authentication failure")),
            },
            Case {
                name: "bad secret",
                form: form(&c.client_id, "nope", &c.username, &good),
                error: Some(("invalid_client", "invalid client credentials")),
            },
            Case {
                name: "unknown client",
                form: form("3MVGnope", &c.client_secret, &c.username, &good),
                error: Some(("invalid_client_id", "client identifier invalid")),
            },
            Case {
                name: "unknown grant",
                form: vec![("grant_type", "magic".to_owned())],
                error: Some(("unsupported_grant_type", "grant type not supported")),
            },
        ],
    )
    .await;
    env.emu.freeze_user(&c.username).unwrap();
    check(
        &env,
        vec![Case {
            name: "frozen user",
            form: form(&c.client_id, &c.client_secret, &c.username, &good),
            error: Some(("inactive_user", "User is inactive")),
        }],
    )
    .await;
    env.emu
        .set_user_status(&c.username, sfauth_emulator::UserStatus::Active)
        .unwrap();
    // Blocking the flow (the default in new orgs) looks like a failed login; other flows
    // the app does not allow are unsupported grants.
    env.emu
        .update_app(&c.client_id, |a| {
            a.flows
                .retain(|f| !matches!(f, Flow::Password | Flow::ClientCredentials))
        })
        .unwrap();
    let cc = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", c.client_id.clone()),
        ("client_secret", c.client_secret.clone()),
    ];
    check(
        &env,
        vec![
            Case {
                name: "password flow blocked",
                form: form(&c.client_id, &c.client_secret, &c.username, &good),
                error: Some(("invalid_grant", "authentication failure")),
            },
            Case {
                name: "client credentials not allowed",
                form: cc,
                error: Some(("unsupported_grant_type", "grant type not supported")),
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn client_credentials_with_basic_auth_and_host_rules() {
    let env = env().await;
    let c = &env.c;
    let url = env.url("/services/oauth2/token");
    let r = env
        .send(
            env.http
                .post(&url)
                .basic_auth(&c.client_id, Some(&c.client_secret))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
    r.expect_ok();
    assert!(r.has("signature") && r.has("api_instance_url") && !r.has("refresh_token"));
    assert_eq!(
        r.field("id"),
        format!("{}/id/{}/{}", env.emu.base_url(), c.org_id, c.user_id)
    );

    let on_login = env
        .send(
            env.http
                .post(&url)
                .header("host", "login.salesforce.com")
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &c.client_id),
                    ("client_secret", &c.client_secret),
                ]),
        )
        .await;
    on_login.expect_error(400, "invalid_grant", "request not supported on this domain");

    let wrong = env
        .send(
            env.http
                .post(&url)
                .basic_auth(&c.client_id, Some("wrong"))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
    wrong.expect_error(400, "invalid_client", "invalid client credentials");

    env.emu
        .update_app(&c.client_id, |a| a.run_as = None)
        .unwrap();
    let no_user = env
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
        ])
        .await;
    no_user.expect_error(400, "invalid_grant", "no client credentials user enabled");
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    let env = env().await;
    let c = &env.c;
    let verifier = "v".repeat(50);
    let challenge = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()))
    };
    let authorize = || async {
        let r = env
            .send(env.http.get(env.url("/services/oauth2/authorize")).query(&[
                ("response_type", "code"),
                ("client_id", c.client_id.as_str()),
                ("redirect_uri", c.callback_url.as_str()),
                ("scope", "api refresh_token openid"),
                ("state", "xyz"),
                ("nonce", "n-1"),
                ("code_challenge", challenge.as_str()),
            ]))
            .await;
        assert_eq!(r.status, 302);
        assert!(
            r.header("location")
                .starts_with(&format!("{}?code=aPrx", c.callback_url))
        );
        let p = r.location_params();
        assert_eq!(p["state"], "xyz");
        p["code"].clone()
    };
    let exchange = |code: String, verifier: Option<String>, redirect: String| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("client_id", c.client_id.clone()),
            ("client_secret", c.client_secret.clone()),
            ("redirect_uri", redirect),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        form
    };
    let code = authorize().await;
    check(
        &env,
        vec![
            Case {
                name: "wrong verifier",
                form: exchange(code.clone(), Some("w".repeat(50)), c.callback_url.clone()),
                error: Some(("invalid_request", "invalid code verifier")),
            },
            Case {
                name: "missing verifier",
                form: exchange(code.clone(), None, c.callback_url.clone()),
                error: Some(("invalid_grant", "invalid code verifier")),
            },
            Case {
                name: "redirect mismatch",
                form: exchange(
                    code.clone(),
                    Some(verifier.clone()),
                    "http://localhost:1717/other".to_owned(),
                ),
                error: Some(("invalid_grant", "redirect_uri must match configuration")),
            },
            Case {
                name: "ok",
                form: exchange(code.clone(), Some(verifier.clone()), c.callback_url.clone()),
                error: None,
            },
            Case {
                name: "code reuse",
                form: exchange(code.clone(), Some(verifier.clone()), c.callback_url.clone()),
                error: Some(("invalid_grant", "expired authorization code")),
            },
            Case {
                name: "unknown code",
                form: exchange(
                    "aPrxnope".to_owned(),
                    Some(verifier.clone()),
                    c.callback_url.clone(),
                ),
                error: Some(("invalid_grant", "invalid authorization code")),
            },
        ],
    )
    .await;

    // A fresh code: full response with refresh and id tokens.
    let code = authorize().await;
    let form = exchange(code, Some(verifier.clone()), c.callback_url.clone());
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = env.token(&form).await;
    r.expect_ok();
    assert!(r.field("refresh_token").starts_with("5Aep"));
    assert_eq!(r.field("scope"), "api refresh_token openid");
    let id_token = r.field("id_token");
    let header = jwt_part(&id_token, 0);
    let claims = jwt_part(&id_token, 1);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["aud"], c.client_id);
    assert_eq!(claims["sub"], r.field("id"));
    assert_eq!(claims["nonce"], "n-1");
    let jwks = env.get("/id/keys").await.json();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);

    // Codes expire after 15 minutes.
    let code = authorize().await;
    env.emu.advance(std::time::Duration::from_secs(15 * 60));
    let form = exchange(code, Some(verifier), c.callback_url.clone());
    check(
        &env,
        vec![Case {
            name: "expired code",
            form,
            error: Some(("invalid_grant", "expired authorization code")),
        }],
    )
    .await;
}

#[tokio::test]
async fn refresh_with_body_or_basic_auth() {
    let env = env().await;
    let login = env.code_login("api refresh_token").await;
    let rt = login.field("refresh_token");
    let r = env.refresh(&rt).await;
    r.expect_ok();
    assert!(!r.has("refresh_token"), "no rotation: no new refresh token");
    assert_ne!(r.field("access_token"), login.field("access_token"));
    assert_eq!(
        r.field("signature"),
        expected_signature(&env.c.client_secret, &r.field("id"), &r.field("issued_at"))
    );
    let basic = env
        .send(
            env.http
                .post(env.url("/services/oauth2/token"))
                .basic_auth(&env.c.client_id, Some(&env.c.client_secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
        )
        .await;
    basic.expect_ok();
    // A public client (no secret) may refresh unless the app requires the secret.
    env.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &rt),
        ("client_id", &env.c.client_id),
    ])
    .await
    .expect_ok();
    env.emu
        .update_app(&env.c.client_id, |a| a.require_secret_for_refresh = true)
        .unwrap();
    env.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &rt),
        ("client_id", &env.c.client_id),
    ])
    .await
    .expect_error(400, "invalid_client", "invalid client credentials");
    env.refresh("5Aepnonsense").await.expect_error(
        400,
        "invalid_grant",
        "expired access/refresh token",
    );
}

fn jwt_claims(env: &Env, aud: &str, exp_offset: i64) -> serde_json::Value {
    json!({
        "iss": env.c.client_id,
        "sub": env.c.username,
        "aud": aud,
        "exp": env.emu.clock().now_secs() + exp_offset,
    })
}

#[tokio::test]
async fn jwt_bearer_flow() {
    let env = env().await;
    let other_key = include_str!("../fixtures/other-key.pem");
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let case = |name: &'static str,
                key: &str,
                claims: serde_json::Value,
                error: Option<(&'static str, &'static str)>| Case {
        name,
        form: vec![
            ("grant_type", grant.to_owned()),
            ("assertion", assertions::jwt(key, &claims).unwrap()),
        ],
        error,
    };
    let login = "https://login.salesforce.com";
    let mut prn_wins = jwt_claims(&env, login, 180);
    prn_wins["sub"] = json!("nobody@x.test");
    prn_wins["prn"] = json!(env.c.username);
    let mut exp_string = jwt_claims(&env, login, 180);
    exp_string["exp"] = json!((env.emu.clock().now_secs() + 180).to_string());
    let mut unknown_iss = jwt_claims(&env, login, 180);
    unknown_iss["iss"] = json!("3MVGunknown");
    let mut unknown_sub = jwt_claims(&env, login, 180);
    unknown_sub["sub"] = json!("nobody@x.test");
    check(
        &env,
        vec![
            case(
                "login audience",
                SEED_CLIENT_PRIVATE_KEY,
                jwt_claims(&env, login, 180),
                None,
            ),
            case(
                "test audience",
                SEED_CLIENT_PRIVATE_KEY,
                jwt_claims(&env, "https://test.salesforce.com", 180),
                None,
            ),
            case(
                "emulator audience",
                SEED_CLIENT_PRIVATE_KEY,
                jwt_claims(&env, env.emu.base_url(), 180),
                None,
            ),
            case("prn wins over sub", SEED_CLIENT_PRIVATE_KEY, prn_wins, None),
            case("exp as a string", SEED_CLIENT_PRIVATE_KEY, exp_string, None),
            case(
                "wrong audience",
                SEED_CLIENT_PRIVATE_KEY,
                jwt_claims(&env, "https://example.com", 180),
                Some(("invalid_grant", "audience is invalid")),
            ),
            case(
                "expired",
                SEED_CLIENT_PRIVATE_KEY,
                jwt_claims(&env, login, -1),
                Some(("invalid_grant", "expired authorization code")),
            ),
            case(
                "wrong key",
                other_key,
                jwt_claims(&env, login, 180),
                Some(("invalid_grant", "invalid assertion")),
            ),
            case(
                "unknown issuer",
                SEED_CLIENT_PRIVATE_KEY,
                unknown_iss,
                Some(("invalid_client_id", "client identifier invalid")),
            ),
            case(
                "unknown subject",
                SEED_CLIENT_PRIVATE_KEY,
                unknown_sub,
                Some(("invalid_grant", "user hasn't approved this consumer")),
            ),
            Case {
                name: "garbage",
                form: vec![
                    ("grant_type", grant.to_owned()),
                    ("assertion", "not.a.jwt".to_owned()),
                ],
                error: Some(("invalid_grant", "invalid assertion")),
            },
        ],
    )
    .await;
    let assertion =
        assertions::jwt(SEED_CLIENT_PRIVATE_KEY, &jwt_claims(&env, login, 180)).unwrap();
    let r = env
        .token(&[("grant_type", grant), ("assertion", &assertion)])
        .await;
    r.expect_ok();
    assert!(!r.has("refresh_token") && !r.has("signature") && !r.has("issued_at"));
    assert!(r.has("instance_url") && r.has("id"));

    env.emu
        .update_app(&env.c.client_id, |a| a.preauthorized_users = Some(vec![]))
        .unwrap();
    env.token(&[("grant_type", grant), ("assertion", &assertion)])
        .await
        .expect_error(400, "invalid_grant", "user hasn't approved this consumer");
}

#[tokio::test]
async fn device_flow() {
    let env = &env_with(|b| b.settings(|s| s.device_slow_down = true)).await;
    let c = &env.c;
    let start_device = |scope: Option<&'static str>| async move {
        let mut form = vec![
            ("response_type", "device_code"),
            ("client_id", c.client_id.as_str()),
        ];
        form.extend(scope.map(|scope| ("scope", scope)));
        env.token(&form).await
    };
    let poll_device = |code: String| async move {
        env.token(&[
            ("grant_type", "device"),
            ("client_id", &c.client_id),
            ("code", &code),
        ])
        .await
    };
    let start = start_device(Some("refresh_token web api")).await;
    start.expect_ok();
    let device_code = start.field("device_code");
    let user_code = start.field("user_code");
    assert_eq!(start.json()["interval"], 5);
    assert!(start.field("verification_uri").ends_with("/setup/connect"));
    let poll = || poll_device(device_code.clone());
    poll()
        .await
        .expect_error(400, "authorization_pending", "authorization pending");
    poll()
        .await
        .expect_error(400, "slow_down", "polling too frequently");
    env.emu.advance(std::time::Duration::from_secs(5));
    poll()
        .await
        .expect_error(400, "authorization_pending", "authorization pending");
    env.emu.approve_device(&user_code, &c.username).unwrap();
    env.emu.advance(std::time::Duration::from_secs(5));
    let r = poll().await;
    r.expect_ok();
    assert!(r.has("refresh_token") && r.has("signature") && r.has("issued_at"));
    poll()
        .await
        .expect_error(400, "invalid_grant", "invalid device code");

    // Expiry and denial.
    let start = start_device(None).await;
    env.emu.advance(std::time::Duration::from_secs(600));
    poll_device(start.field("device_code")).await.expect_error(
        400,
        "expired_token",
        "device code expired",
    );
    let start = start_device(None).await;
    env.emu.deny_device(&start.field("user_code")).unwrap();
    poll_device(start.field("device_code")).await.expect_error(
        400,
        "access_denied",
        "end-user denied authorization",
    );

    // Approval through the HTML page, and a multipart start as sfdx sends it.
    let form = reqwest::multipart::Form::new()
        .text("response_type", "device_code")
        .text("client_id", c.client_id.clone());
    let start = env
        .send(
            env.http
                .post(env.url("/services/oauth2/token"))
                .multipart(form),
        )
        .await;
    start.expect_ok();
    let page = env
        .post(
            "/setup/connect",
            &[
                ("user_code", &start.field("user_code")),
                ("username", &c.username),
                ("pw", &c.password),
                ("decision", "allow"),
            ],
        )
        .await;
    assert!(page.body.contains("You're connected"), "{}", page.body);
    env.emu.advance(std::time::Duration::from_secs(5));
    poll_device(start.field("device_code")).await.expect_ok();
}

#[tokio::test]
async fn token_exchange() {
    let env = env().await;
    let c = &env.c;
    let grant = "urn:ietf:params:oauth:grant-type:token-exchange";
    let login = env.code_login("api openid").await;
    let access = login.field("access_token");
    let id_token = login.field("id_token");
    let form = |token: &str, kind: &str| {
        vec![
            ("grant_type", grant.to_owned()),
            ("subject_token", token.to_owned()),
            ("subject_token_type", kind.to_owned()),
            ("client_id", c.client_id.clone()),
            ("client_secret", c.client_secret.clone()),
        ]
    };
    check(
        &env,
        vec![
            Case {
                name: "access token",
                form: form(&access, "urn:ietf:params:oauth:token-type:access_token"),
                error: None,
            },
            Case {
                name: "id token",
                form: form(&id_token, "urn:ietf:params:oauth:token-type:id_token"),
                error: None,
            },
            Case {
                name: "JWT capital",
                form: form(&id_token, "urn:ietf:params:oauth:token-type:JWT"),
                error: None,
            },
            Case {
                name: "dead token",
                form: form(
                    "00Dxx!nope",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                error: Some(("invalid_grant", "invalid subject token")),
            },
            Case {
                name: "unknown type",
                form: form(&access, "urn:example:other"),
                error: Some(("invalid_request", "unsupported subject_token_type")),
            },
        ],
    )
    .await;
    let f = form(&access, "urn:ietf:params:oauth:token-type:access_token");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = env.token(&f).await;
    assert_eq!(
        r.field("issued_token_type"),
        "urn:ietf:params:oauth:token-type:access_token"
    );
}

#[tokio::test]
async fn saml_bearer() {
    let env = env().await;
    let c = &env.c;
    let grant = "urn:ietf:params:oauth:grant-type:saml2-bearer";
    let now = env.emu.clock().now_secs();
    let login = "https://login.salesforce.com";
    let case =
        |name: &'static str, assertion: String, error: Option<(&'static str, &'static str)>| Case {
            name,
            form: vec![("grant_type", grant.to_owned()), ("assertion", assertion)],
            error,
        };
    check(
        &env,
        vec![
            case(
                "ok",
                assertions::saml(&c.client_id, &c.username, login, now + 300),
                None,
            ),
            case(
                "wrong audience",
                assertions::saml(&c.client_id, &c.username, "https://x.test", now + 300),
                Some(("invalid_grant", "audience is invalid")),
            ),
            case(
                "expired",
                assertions::saml(&c.client_id, &c.username, login, now - 1),
                Some(("invalid_grant", "expired authorization code")),
            ),
            case(
                "unknown issuer",
                assertions::saml("someone", &c.username, login, now + 300),
                Some(("invalid_client_id", "client identifier invalid")),
            ),
            case(
                "not xml",
                "bm90IHhtbA".to_owned(),
                Some(("invalid_grant", "invalid assertion")),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn response_formats() {
    let env = env().await;
    let c = &env.c;
    let pw = c.password_with_token();
    let base = [
        ("grant_type", "password"),
        ("client_id", c.client_id.as_str()),
        ("client_secret", c.client_secret.as_str()),
        ("username", c.username.as_str()),
        ("password", pw.as_str()),
    ];
    let url = env.url("/services/oauth2/token");
    // (format param, Accept header, expected content type prefix, body check)
    let cases: [(Option<&str>, Option<&str>, &str, &str); 6] = [
        (None, None, "application/json", "{\""),
        (
            Some("json"),
            Some("application/xml"),
            "application/json",
            "{\"",
        ),
        (
            Some("urlencoded"),
            None,
            "application/x-www-form-urlencoded",
            "access_token=",
        ),
        (
            None,
            Some("application/x-www-form-urlencoded"),
            "application/x-www-form-urlencoded",
            "access_token=",
        ),
        (
            Some("xml"),
            None,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OAuth><access_token>",
        ),
        (None, Some("application/xml"), "application/xml", "<?xml"),
    ];
    for (format, accept, content_type, prefix) in cases {
        let mut form: Vec<(&str, &str)> = base.to_vec();
        if let Some(f) = format {
            form.push(("format", f));
        }
        let mut req = env.http.post(&url).form(&form);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = env.send(req).await;
        r.expect_ok();
        assert!(
            r.header("content-type").starts_with(content_type),
            "{format:?} {accept:?}: {}",
            r.header("content-type")
        );
        assert!(
            r.body.starts_with(prefix),
            "{format:?} {accept:?}: {}",
            r.body
        );
        if content_type.contains("urlencoded") {
            let p = url_params(&r.body);
            assert_eq!(
                p["signature"],
                expected_signature(&c.client_secret, &p["id"], &p["issued_at"])
            );
        }
    }
    let xml_error = env
        .send(
            env.http
                .post(&url)
                .form(&[("grant_type", "password"), ("format", "xml")]),
        )
        .await;
    assert_eq!(xml_error.status, 400);
    assert!(
        xml_error.body.contains("<error>invalid_client_id</error>"),
        "{}",
        xml_error.body
    );
    let form_error = env
        .send(
            env.http
                .post(&url)
                .form(&[("grant_type", "password"), ("format", "urlencoded")]),
        )
        .await;
    assert_eq!(
        form_error.body,
        "error=invalid_client_id&error_description=client+identifier+invalid"
    );
}

#[tokio::test]
async fn experience_cloud_site_prefix() {
    let env = &env().await;
    let c = &env.c;
    let pw = c.password_with_token();
    let site_password_login = |extra: &'static [(&'static str, &'static str)]| {
        let mut form = vec![
            ("grant_type", "password"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("username", c.username.as_str()),
            ("password", pw.as_str()),
        ];
        form.extend_from_slice(extra);
        async move { env.post("/community/services/oauth2/token", &form).await }
    };
    let r = site_password_login(&[]).await;
    r.expect_ok();
    assert_eq!(r.field("sfdc_community_url"), env.emu.site_url());
    let discovery = env
        .get("/community/.well-known/openid-configuration")
        .await
        .json();
    assert_eq!(discovery["issuer"], env.emu.site_url());
    // An id token issued through the site names the site as its issuer.
    let r = site_password_login(&[("scope", "api openid")]).await;
    r.expect_ok();
    let id_token = r.field("id_token");
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], env.emu.site_url());
    let token = r.field("access_token");
    assert_eq!(
        env.get_bearer(
            "/community/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
            &token
        )
        .await
        .status,
        200
    );
    // A JWT audience may be the site URL.
    let claims = json!({"iss": c.client_id, "sub": c.username, "aud": env.emu.site_url(), "exp": env.emu.clock().now_secs() + 60});
    let assertion = assertions::jwt(SEED_CLIENT_PRIVATE_KEY, &claims).unwrap();
    env.post(
        "/community/services/oauth2/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ],
    )
    .await
    .expect_ok();
}

#[tokio::test]
async fn a_site_prefix_given_with_slashes_is_served_and_named_once() {
    let env = &env_with(|b| b.settings(|s| s.site_prefix = "/customers/".to_owned())).await;
    let site = env.emu.site_url();
    assert_eq!(site, format!("{}/customers", env.emu.base_url()));
    let discovery = env
        .get("/customers/.well-known/openid-configuration")
        .await
        .json();
    assert_eq!(discovery["issuer"], site);
}
