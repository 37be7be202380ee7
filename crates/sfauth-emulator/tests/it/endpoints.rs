//! Authorize pages, revoke, introspect, userinfo, identity, discovery, REST and the admin API.

use sfauth_emulator::RevokeErrorFormat;

use crate::common::*;

/// The value of a hidden input in an HTML page.
fn input_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn html_login_and_consent_submitted_as_a_browser_would() {
    let env = env_with(|b| b.auto_approve(false)).await;
    let c = &env.c;
    let query = [
        ("response_type", "code"),
        ("client_id", c.client_id.as_str()),
        ("redirect_uri", c.callback_url.as_str()),
        ("scope", "api refresh_token"),
        ("state", "st&ate"),
    ];
    let page = env
        .send(
            env.http
                .get(env.url("/services/oauth2/authorize"))
                .query(&query),
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<form method=\"post\""));
    assert_eq!(input_value(&page.body, "state"), "st&amp;ate");

    let mut form: Vec<(&str, &str)> = query.to_vec();
    form.extend([
        ("emulator_step", "login"),
        ("username", c.username.as_str()),
        ("pw", "wrong"),
    ]);
    let wrong = env.post("/services/oauth2/authorize", &form).await;
    assert_eq!(wrong.status, 200);
    assert!(
        wrong
            .body
            .contains("Please check your username and password")
    );

    form.pop();
    form.push(("pw", c.password.as_str()));
    let consent = env.post("/services/oauth2/authorize", &form).await;
    assert!(consent.body.contains("Allow Access?"), "{}", consent.body);
    let ticket = input_value(&consent.body, "ticket");

    let mut approve: Vec<(&str, &str)> = query.to_vec();
    approve.extend([
        ("emulator_step", "consent"),
        ("ticket", ticket.as_str()),
        ("decision", "allow"),
    ]);
    let done = env.post("/services/oauth2/authorize", &approve).await;
    assert_eq!(done.status, 302);
    let p = done.location_params();
    assert_eq!(p["state"], "st&ate");
    let code = p["code"].clone();
    env.token(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("client_id", &c.client_id),
        ("client_secret", &c.client_secret),
        ("redirect_uri", &c.callback_url),
    ])
    .await
    .expect_ok();

    // The ticket is single use; a denial redirects with access_denied.
    let reused = env.post("/services/oauth2/authorize", &approve).await;
    assert!(reused.body.contains("Log In"));
    let consent = env.post("/services/oauth2/authorize", &form).await;
    let ticket = input_value(&consent.body, "ticket");
    let mut deny: Vec<(&str, &str)> = query.to_vec();
    deny.extend([
        ("emulator_step", "consent"),
        ("ticket", ticket.as_str()),
        ("decision", "deny"),
    ]);
    let denied = env.post("/services/oauth2/authorize", &deny).await;
    assert_eq!(denied.location_params()["error"], "access_denied");
}

#[tokio::test]
async fn user_agent_flow_returns_a_fragment() {
    let env = env().await;
    let c = &env.c;
    let r = env
        .send(env.http.get(env.url("/services/oauth2/authorize")).query(&[
            ("response_type", "token"),
            ("client_id", c.client_id.as_str()),
            ("redirect_uri", c.callback_url.as_str()),
            ("scope", "api refresh_token"),
            ("state", "s"),
        ]))
        .await;
    assert_eq!(r.status, 302);
    let location = r.header("location");
    assert!(
        location.starts_with(&format!("{}#access_token=", c.callback_url)),
        "{location}"
    );
    let p = r.location_params();
    assert_eq!(
        p["signature"],
        expected_signature(&c.client_secret, &p["id"], &p["issued_at"])
    );
    assert!(p.contains_key("refresh_token") && p["token_type"] == "Bearer" && p["state"] == "s");
    assert_eq!(env.rest_status(&p["access_token"]).await, 200);
}

#[tokio::test]
async fn authorize_errors() {
    let env = env().await;
    let c = &env.c;
    let env = &env;
    let get = |params: Vec<(&'static str, String)>| async move {
        env.send(
            env.http
                .get(env.url("/services/oauth2/authorize"))
                .query(&params),
        )
        .await
    };
    let base = |rt: &str| {
        vec![
            ("response_type", rt.to_owned()),
            ("client_id", c.client_id.clone()),
            ("redirect_uri", c.callback_url.clone()),
            ("state", "s".to_owned()),
        ]
    };
    // (params, expected Location prefix, error)
    let mut unknown_client = base("code");
    unknown_client[1].1 = "nope".to_owned();
    let mut bad_redirect = base("code");
    bad_redirect[2].1 = "http://evil.test/cb".to_owned();
    let mut plain = base("code");
    plain.extend([
        ("code_challenge", "x".repeat(43)),
        ("code_challenge_method", "plain".to_owned()),
    ]);
    let mut bad_scope = base("token");
    bad_scope.push(("scope", "api bogus".to_owned()));
    let error_page = format!(
        "{}/setup/secur/RemoteAccessErrorPage.apexp",
        env.emu.base_url()
    );
    let cases = [
        (unknown_client, error_page.clone(), "invalid_client_id"),
        (bad_redirect, error_page.clone(), "redirect_uri_mismatch"),
        (
            base("magic"),
            format!("{}?error=", c.callback_url),
            "unsupported_response_type",
        ),
        (
            plain,
            format!("{}?error=", c.callback_url),
            "invalid_request",
        ),
        (
            bad_scope,
            format!("{}#error=", c.callback_url),
            "invalid_scope",
        ),
    ];
    for (params, prefix, error) in cases {
        let r = get(params).await;
        assert_eq!(r.status, 302, "{error}");
        assert!(
            r.header("location").starts_with(&prefix),
            "{error}: {}",
            r.header("location")
        );
        assert_eq!(r.location_params()["error"], error);
    }
    let page = env.get("/setup/secur/RemoteAccessErrorPage.apexp?error=redirect_uri_mismatch&error_description=x").await;
    assert!(page.body.contains("redirect_uri_mismatch"));

    env.emu
        .update_app(&c.client_id, |a| a.pkce_required = true)
        .unwrap();
    let r = get(base("code")).await;
    assert_eq!(
        r.location_params()["error_description"],
        "missing required code challenge"
    );
}

#[tokio::test]
async fn revoke_cascades_and_its_forms() {
    let env = env().await;
    let login = env.code_login("api refresh_token").await;
    let rt = login.field("refresh_token");
    let refreshed = env.refresh(&rt).await.field("access_token");
    let first = login.field("access_token");

    // An access token alone, by POST with nothing but token= (as clients do).
    let other = env.password_login().await.field("access_token");
    assert_eq!(
        env.post("/services/oauth2/revoke", &[("token", &other)])
            .await
            .status,
        200
    );
    assert_eq!(env.rest_status(&other).await, 401);
    assert_eq!(env.rest_status(&first).await, 200);

    // A refresh token by GET: every access token from it dies.
    assert_eq!(
        env.get(&format!("/services/oauth2/revoke?token={rt}"))
            .await
            .status,
        200
    );
    assert_eq!(env.rest_status(&first).await, 401);
    assert_eq!(env.rest_status(&refreshed).await, 401);
    env.refresh(&rt)
        .await
        .expect_error(400, "invalid_grant", "expired access/refresh token");

    env.post("/services/oauth2/revoke", &[("token", "nonsense")])
        .await
        .expect_error(400, "invalid_token", "Token was invalid");
    env.post("/services/oauth2/revoke", &[]).await.expect_error(
        400,
        "unsupported_token_type",
        "Token type not supported",
    );
    let jsonp = env
        .get("/services/oauth2/revoke?token=nonsense&callback=cb")
        .await;
    assert_eq!(jsonp.body, "cb({\"error\":\"invalid_token\"});");
    env.emu
        .update_settings(|s| s.revoke_error_format = RevokeErrorFormat::Urlencoded);
    let r = env
        .post("/services/oauth2/revoke", &[("token", "nonsense")])
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            400,
            "error=invalid_token&error_description=Token+was+invalid"
        )
    );
}

#[tokio::test]
async fn introspection() {
    let env = env().await;
    let c = &env.c;
    let login = env.code_login("api refresh_token").await;
    let introspect = |token: String, secret: String| {
        let env = &env;
        async move {
            env.post(
                "/services/oauth2/introspect",
                &[
                    ("token", &token),
                    ("client_id", &c.client_id),
                    ("client_secret", &secret),
                ],
            )
            .await
        }
    };
    let r = introspect(login.field("access_token"), c.client_secret.clone()).await;
    let j = r.json();
    assert_eq!(j["active"], true);
    assert_eq!(j["token_type"], "access_token");
    assert_eq!(j["username"], c.username);
    assert_eq!(j["sub"], login.field("id"));
    assert_eq!(
        j["exp"].as_i64().unwrap(),
        env.emu.clock().now_secs() + 7200
    );
    let r = introspect(login.field("refresh_token"), c.client_secret.clone()).await;
    assert_eq!(r.json()["token_type"], "refresh_token");
    assert_eq!(
        introspect("nonsense".into(), c.client_secret.clone())
            .await
            .json(),
        serde_json::json!({"active": false})
    );
    introspect(login.field("access_token"), "wrong".into())
        .await
        .expect_error(400, "invalid_client", "invalid client credentials");
    // Basic auth works too.
    let basic = env
        .send(
            env.http
                .post(env.url("/services/oauth2/introspect"))
                .basic_auth(&c.client_id, Some(&c.client_secret))
                .form(&[("token", login.field("access_token"))]),
        )
        .await;
    assert_eq!(basic.json()["active"], true);
    env.emu.expire_access_tokens();
    assert_eq!(
        introspect(login.field("access_token"), c.client_secret.clone())
            .await
            .json()["active"],
        false
    );
}

/// The XML and urlencoded userinfo and identity answers carry every field of the JSON one (they
/// were once filtered through a hand-kept list of names that missed some).
#[tokio::test]
async fn userinfo_and_identity_in_xml_and_urlencoded_keep_every_field() {
    let env = env().await;
    let c = &env.c;
    let token = env.password_login().await.field("access_token");
    let xml = env
        .get_bearer("/services/oauth2/userinfo?format=xml", &token)
        .await;
    for field in [
        "<is_salesforce_integration_user>false</is_salesforce_integration_user>",
        "<utcOffset>-28800000</utcOffset>",
        "<updated_at>2026-01-01T00:00:00Z</updated_at>",
    ] {
        assert!(xml.body.contains(field), "{field} missing: {}", xml.body);
    }
    let id_path = format!("/id/{}/{}", c.org_id, c.user_id);
    for path in ["/services/oauth2/userinfo".to_owned(), id_path] {
        let json = env.get_bearer(&path, &token).await.json();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        let xml = env.get_bearer(&format!("{path}?format=xml"), &token).await;
        let form = env
            .get_bearer(&format!("{path}?format=urlencoded"), &token)
            .await;
        let form_keys: Vec<String> = url::form_urlencoded::parse(form.body.as_bytes())
            .map(|(k, _)| k.into_owned())
            .collect();
        for key in &keys {
            assert!(
                xml.body.contains(&format!("<{key}>")),
                "{path}: {key} missing from XML: {}",
                xml.body
            );
            assert!(
                form_keys.contains(key),
                "{path}: {key} missing from urlencoded: {}",
                form.body
            );
        }
        assert_eq!(form_keys.len(), keys.len(), "{path}: {}", form.body);
    }
    let id = env
        .get_bearer(
            &format!("/id/{}/{}?format=xml", c.org_id, c.user_id),
            &token,
        )
        .await;
    for field in [
        "<timezone>America/Los_Angeles</timezone>",
        "<last_modified_date>2026-01-01T00:00:00.000+0000</last_modified_date>",
    ] {
        assert!(id.body.contains(field), "{field} missing: {}", id.body);
    }
}

#[tokio::test]
async fn userinfo_identity_discovery_and_keys() {
    let env = env().await;
    let c = &env.c;
    let r = env.password_login().await;
    let token = r.field("access_token");
    let info = env
        .get_bearer("/services/oauth2/userinfo", &token)
        .await
        .json();
    assert_eq!(info["preferred_username"], c.username);
    assert_eq!(info["user_id"], c.user_id);
    assert_eq!(info["sub"], r.field("id"));
    let by_param = env
        .get(&format!("/services/oauth2/userinfo?oauth_token={token}"))
        .await;
    assert_eq!(by_param.json()["organization_id"], c.org_id);
    let bad = env.get_bearer("/services/oauth2/userinfo", "nope").await;
    assert_eq!((bad.status, bad.body.as_str()), (403, "Bad_OAuth_Token"));

    let id_path = format!("/id/{}/{}", c.org_id, c.user_id);
    let id = env
        .get_bearer(&format!("{id_path}?version=62.0"), &token)
        .await
        .json();
    assert_eq!(id["username"], c.username);
    assert_eq!(
        id["urls"]["rest"],
        format!("{}/services/data/v62.0/", env.emu.base_url())
    );
    let templated = env.get_bearer(&id_path, &token).await.json();
    assert!(
        templated["urls"]["rest"]
            .as_str()
            .unwrap()
            .contains("{version}")
    );
    let xml = env
        .get_bearer(&format!("{id_path}?format=xml"), &token)
        .await;
    assert!(
        xml.body
            .contains(&format!("<username>{}</username>", c.username)),
        "{}",
        xml.body
    );
    assert_eq!(
        env.get_bearer(&format!("/id/{}/0055e000000XXXXAAA", c.org_id), &token)
            .await
            .status,
        404
    );

    let discovery = env.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.header("access-control-allow-origin"), "*");
    let d = discovery.json();
    assert_eq!(d["issuer"], env.emu.base_url());
    assert_eq!(d["jwks_uri"], format!("{}/id/keys", env.emu.base_url()));
    assert_eq!(
        d["response_types_supported"],
        serde_json::json!(["code", "token", "token id_token"])
    );
    assert!(d.get("grant_types_supported").is_none());
    let keys = env.get("/id/keys").await.json();
    assert_eq!(keys["keys"][0]["alg"], "RS256");
    assert_eq!(keys["keys"][0]["kty"], "RSA");
}

#[tokio::test]
async fn rest_slice() {
    let env = env().await;
    let token = env.password_login().await.field("access_token");
    let versions = env.get("/services/data/").await.json();
    assert!(
        versions
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == "62.0")
    );
    let q = env
        .get_bearer(
            "/services/data/v50.0/query?q=SELECT+Id,+Name+FROM+Account+LIMIT+1",
            &token,
        )
        .await;
    assert_eq!(q.json()["totalSize"], 1);
    assert_eq!(q.json()["records"][0]["attributes"]["type"], "Account");
    let id = q.json()["records"][0]["Id"].as_str().unwrap().to_owned();
    let record = env
        .get_bearer(
            &format!("/services/data/v62.0/sobjects/Account/{id}"),
            &token,
        )
        .await;
    assert_eq!(record.json()["Id"], id);
    let missing = env
        .get_bearer(
            "/services/data/v62.0/sobjects/Account/001000000000000AAA",
            &token,
        )
        .await;
    assert_eq!(missing.status, 404);
    let bad_type = env
        .get_bearer("/services/data/v62.0/query?q=SELECT+Id+FROM+Nope", &token)
        .await;
    assert_eq!(bad_type.json()[0]["errorCode"], "INVALID_TYPE");
    let me = env
        .get_bearer("/services/data/v62.0/query?q=SELECT+Id+FROM+User", &token)
        .await;
    assert_eq!(me.json()["records"][0]["Id"], env.c.user_id);

    for bad in ["", "Bearer nope"] {
        let mut req = env
            .http
            .get(env.url("/services/data/v62.0/query?q=SELECT+Id+FROM+Account"));
        if !bad.is_empty() {
            req = req.header("authorization", bad);
        }
        let r = env.send(req).await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.body,
            r#"[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]"#
        );
        assert!(r.header("www-authenticate").is_empty());
        assert_eq!(
            r.json(),
            serde_json::json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        );
    }
    let oauth_scheme = env
        .send(
            env.http
                .get(env.url("/services/data/v62.0/"))
                .header("authorization", format!("OAuth {token}")),
        )
        .await;
    assert_eq!(oauth_scheme.status, 200);
}

#[tokio::test]
async fn admin_api() {
    let off = env().await;
    assert_eq!(
        off.post("/__emulator/access-tokens/expire", &[])
            .await
            .status,
        404
    );

    let env = env_with(|b| b.admin_api(true)).await;
    let token = env.password_login().await.field("access_token");
    env.post("/__emulator/clock/advance?seconds=7200", &[])
        .await
        .expect_ok();
    assert_eq!(env.rest_status(&token).await, 401);

    let fault =
        serde_json::json!({"endpoint": "token", "kind": "status", "status": 500, "times": 1});
    env.send(env.http.post(env.url("/__emulator/faults")).json(&fault))
        .await
        .expect_ok();
    assert_eq!(env.password_login_raw().await.status, 500);
    let counters = env.get("/__emulator/counters").await.json();
    assert_eq!(counters["grants"]["password"], 1);
    assert_eq!(counters["requests"]["token"], 2);

    let status = format!("/__emulator/users/{}/status?status=frozen", env.c.username);
    env.post(&status, &[]).await.expect_ok();
    env.password_login_raw()
        .await
        .expect_error(400, "inactive_user", "User is inactive");
    let policy = serde_json::json!({"rotation": true});
    let url = env.url(&format!("/__emulator/apps/{}/policy", env.c.client_id));
    env.send(env.http.post(url).json(&policy)).await.expect_ok();
    assert_eq!(
        env.post("/__emulator/users/nobody/status?status=active", &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn user_agent_id_token_through_the_site() {
    let env = env().await;
    let c = &env.c;
    let r = env
        .send(
            env.http
                .get(env.url("/community/services/oauth2/authorize"))
                .query(&[
                    ("response_type", "token id_token"),
                    ("client_id", c.client_id.as_str()),
                    ("redirect_uri", c.callback_url.as_str()),
                    ("scope", "openid api"),
                    ("nonce", "abc"),
                ]),
        )
        .await;
    let p = r.location_params();
    assert_eq!(p["sfdc_community_url"], env.emu.site_url());
    assert!(p.contains_key("sfdc_community_id"), "{p:?}");
    let claims = jwt_part(&p["id_token"], 1);
    assert_eq!(claims["nonce"], "abc");
    assert_eq!(claims["sub"], p["id"]);
    // The issuer is the site's, as its discovery document says.
    assert_eq!(claims["iss"], env.emu.site_url());
}

#[tokio::test]
async fn admin_api_creates_orgs_users_and_apps() {
    let env = env_with(|b| b.admin_api(true)).await;
    let org = env
        .send(
            env.http
                .post(env.url("/__emulator/orgs"))
                .json(&serde_json::json!({"name": "Globex"})),
        )
        .await;
    let org_id = org.json()["result"].as_str().unwrap().to_owned();
    assert!(org_id.starts_with("00D"));
    let user = serde_json::json!({"org_id": org_id, "username": "g@globex.test", "password": "pw", "security_token": "T"});
    env.send(env.http.post(env.url("/__emulator/users")).json(&user))
        .await
        .expect_ok();
    let app = serde_json::json!({"org_id": org_id, "client_id": "3MVGglobex", "client_secret": "s", "flows": ["password"]});
    env.send(env.http.post(env.url("/__emulator/apps")).json(&app))
        .await
        .expect_ok();
    let r = env
        .token(&[
            ("grant_type", "password"),
            ("client_id", "3MVGglobex"),
            ("client_secret", "s"),
            ("username", "g@globex.test"),
            ("password", "pwT"),
        ])
        .await;
    r.expect_ok();
    assert!(r.field("id").contains(&org_id));
    let dup = env
        .send(env.http.post(env.url("/__emulator/apps")).json(&app))
        .await;
    assert_eq!(dup.status, 400, "{}", dup.body);
}

#[tokio::test]
async fn rest_refuses_sessions_without_api_scope() {
    let env = env().await;
    let c = &env.c;
    let pw = c.password_with_token();
    let r = env
        .token(&[
            ("grant_type", "password"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
            ("username", &c.username),
            ("password", &pw),
            ("scope", "id"),
        ])
        .await;
    let token = r.field("access_token");
    let rest = env
        .get_bearer(
            "/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
            &token,
        )
        .await;
    assert_eq!(rest.status, 401);
    assert_eq!(
        rest.json(),
        serde_json::json!([{"message": "This session is not valid for use with the REST API", "errorCode": "INVALID_SESSION_ID"}])
    );
    // The identity URL accepts the id scope.
    let id = env
        .get_bearer(&format!("/id/{}/{}", c.org_id, c.user_id), &token)
        .await;
    assert_eq!(id.status, 200);
}
