//! SOAP `login()`, `getUserInfo()` and `logout()` at `/services/Soap/u/{version}`, with the
//! faults Salesforce sends, over TCP.

use std::time::Duration;

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::json;
use sfauth_emulator::UserConfig;

use crate::common::*;

/// The text of the first element named `name` (local name), if any.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == name.as_bytes() => inside = true,
            Event::Text(t) if inside => return Some(t.unescape().ok()?.into_owned()),
            Event::End(_) if inside => return Some(String::new()),
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

fn login_envelope(username: &str, password: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><env:Envelope xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:env=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:urn=\"urn:partner.soap.sforce.com\"><env:Header><urn:CallOptions><urn:client>test</urn:client>\
         </urn:CallOptions></env:Header><env:Body><n1:login xmlns:n1=\"urn:partner.soap.sforce.com\">\
         <n1:username>{}</n1:username><n1:password>{}</n1:password></n1:login></env:Body></env:Envelope>",
        escape(username),
        escape(password)
    )
}

fn session_envelope(session_id: &str, operation: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:urn=\"urn:partner.soap.sforce.com\">\
         <soapenv:Header><urn:SessionHeader><urn:sessionId>{}</urn:sessionId></urn:SessionHeader></soapenv:Header>\
         <soapenv:Body><urn:{operation}/></soapenv:Body></soapenv:Envelope>",
        escape(session_id)
    )
}

async fn soap(env: &Env, url: &str, envelope: String, action: &str) -> Reply {
    env.send(
        env.http
            .post(url)
            .header("content-type", "text/xml; charset=UTF-8")
            .header("soapaction", action)
            .body(envelope),
    )
    .await
}

async fn soap_login(env: &Env, version: &str, username: &str, password: &str) -> Reply {
    let url = env.url(&format!("/services/Soap/u/{version}"));
    soap(env, &url, login_envelope(username, password), "login").await
}

#[track_caller]
fn expect_fault(r: &Reply, code: &str, message: &str) {
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.header("content-type").starts_with("text/xml"), "{r:?}");
    assert_eq!(
        xml_field(&r.body, "faultcode").as_deref(),
        Some(code),
        "{}",
        r.body
    );
    assert_eq!(
        xml_field(&r.body, "faultstring").as_deref(),
        Some(message),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn login_returns_a_login_result_whose_session_works() {
    let env = env().await;
    let r = soap_login(&env, "64.0", &env.c.username, &env.c.password_with_token()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").starts_with("text/xml"));
    let org15 = &env.c.org_id[..15];
    let field = |name: &str| xml_field(&r.body, name).unwrap_or_default();
    assert_eq!(
        field("serverUrl"),
        format!("{}/services/Soap/u/64.0/{org15}", env.c.instance_url)
    );
    assert_eq!(
        field("metadataServerUrl"),
        format!("{}/services/Soap/m/64.0/{org15}", env.c.instance_url)
    );
    assert_eq!(field("userId"), env.c.user_id);
    assert_eq!(field("passwordExpired"), "false");
    assert_eq!(field("sandbox"), "false");
    assert_eq!(field("organizationId"), env.c.org_id);
    assert_eq!(field("userName"), env.c.username);
    assert_eq!(field("sessionSecondsValid"), "7200");
    let session = field("sessionId");
    assert!(session.starts_with(&format!("{org15}!")), "{session}");
    // The session id is an access token to the REST API too.
    assert_eq!(env.rest_status(&session).await, 200);

    // getUserInfo at the serverUrl, then logout, after which the session is dead.
    let server_url = field("serverUrl");
    let info = soap(
        &env,
        &server_url,
        session_envelope(&session, "getUserInfo"),
        "getUserInfo",
    )
    .await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(
        xml_field(&info.body, "userId").as_deref(),
        Some(env.c.user_id.as_str())
    );
    let out = soap(
        &env,
        &server_url,
        session_envelope(&session, "logout"),
        "logout",
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let dead = soap(
        &env,
        &server_url,
        session_envelope(&session, "getUserInfo"),
        "getUserInfo",
    )
    .await;
    expect_fault(
        &dead,
        "sf:INVALID_SESSION_ID",
        "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: Illegal Session",
    );
    assert_eq!(env.rest_status(&session).await, 401);
}

#[tokio::test]
async fn login_faults() {
    let env = env_with(|b| b.admin_api(true)).await;
    let invalid = "INVALID_LOGIN: Invalid username, password, security token; or user locked out.";
    expect_fault(
        &soap_login(&env, "64.0", &env.c.username, "wrong").await,
        "sf:INVALID_LOGIN",
        invalid,
    );
    expect_fault(
        &soap_login(&env, "64.0", "nobody@nowhere.test", "x").await,
        "sf:INVALID_LOGIN",
        invalid,
    );
    let no_token = soap_login(&env, "64.0", &env.c.username, &env.c.password).await;
    assert_eq!(
        xml_field(&no_token.body, "faultcode").as_deref(),
        Some("sf:LOGIN_MUST_USE_SECURITY_TOKEN"),
        "{}",
        no_token.body
    );
    assert_eq!(
        xml_field(&no_token.body, "exceptionCode").as_deref(),
        Some("LOGIN_MUST_USE_SECURITY_TOKEN")
    );
    env.emu.freeze_user(&env.c.username).unwrap();
    expect_fault(
        &soap_login(&env, "64.0", &env.c.username, &env.c.password_with_token()).await,
        "sf:INVALID_LOGIN",
        invalid,
    );

    // Retired after 64.0, unknown before 31.0, and not SOAP at all.
    let user = UserConfig {
        username: "soap@emulator.sfauth.test".to_owned(),
        password: "p<&>\"'w".to_owned(),
        ..UserConfig::default()
    };
    env.emu.add_user(&env.c.org_id, user).unwrap();
    let (name, pw) = ("soap@emulator.sfauth.test", "p<&>\"'w");
    assert_eq!(soap_login(&env, "64.0", name, pw).await.status, 200);
    assert_eq!(soap_login(&env, "50.0", name, pw).await.status, 200);
    expect_fault(
        &soap_login(&env, "65.0", name, pw).await,
        "soapenv:Client",
        "No operation available for request {urn:partner.soap.sforce.com}login, please check the WSDL for the service.",
    );
    for version in ["30.0", "v64.0", "sixty"] {
        expect_fault(
            &soap_login(&env, version, name, pw).await,
            "sf:UNSUPPORTED_API_VERSION",
            "UNSUPPORTED_API_VERSION: Invalid Api version specified on URL",
        );
    }
    let garbage = soap(
        &env,
        &env.url("/services/Soap/u/64.0"),
        "<not-soap".to_owned(),
        "login",
    )
    .await;
    assert_eq!(garbage.status, 500);
    assert_eq!(
        xml_field(&garbage.body, "faultcode").as_deref(),
        Some("soapenv:Client")
    );

    // The org setting turns login() off (admin API), and back on (handle).
    let settings = format!("/__emulator/orgs/{}/settings", env.c.org_id);
    env.send(
        env.http
            .post(env.url(&settings))
            .json(&json!({"soap_login_enabled": false})),
    )
    .await
    .expect_ok();
    expect_fault(
        &soap_login(&env, "64.0", name, pw).await,
        "sf:INVALID_OPERATION",
        "INVALID_OPERATION: SOAP API login() is disabled in this org; use OAuth",
    );
    env.emu
        .update_org(&env.c.org_id, |o| o.soap_login_enabled = true)
        .unwrap();
    assert_eq!(soap_login(&env, "64.0", name, pw).await.status, 200);
}

#[tokio::test]
async fn sessions_die_and_count_as_logins() {
    let env = env_with(|b| {
        b.orgs(|o| {
            o.login_rate_limit_per_hour = Some(2);
            o.sandbox = true;
        })
    })
    .await;
    let pw = env.c.password_with_token();
    let r = soap_login(&env, "62.0", &env.c.username, &pw).await;
    assert_eq!(xml_field(&r.body, "sandbox").as_deref(), Some("true"));
    let session = xml_field(&r.body, "sessionId").unwrap();
    // Two logins an hour: the password flow and SOAP share the count.
    env.password_login().await;
    expect_fault(
        &soap_login(&env, "62.0", &env.c.username, &pw).await,
        "sf:LOGIN_RATE_EXCEEDED",
        "LOGIN_RATE_EXCEEDED: Login rate exceeded",
    );
    let url = env.url("/services/Soap/u/62.0");
    // An operation the emulator does not serve, with a live session.
    let unknown = soap(
        &env,
        &url,
        session_envelope(&session, "describeGlobal"),
        "describeGlobal",
    )
    .await;
    assert_eq!(
        xml_field(&unknown.body, "faultcode").as_deref(),
        Some("soapenv:Client")
    );
    // The session expires like any other: two hours.
    env.emu.advance(Duration::from_secs(2 * 60 * 60));
    let expired = soap(
        &env,
        &url,
        session_envelope(&session, "getUserInfo"),
        "getUserInfo",
    )
    .await;
    assert_eq!(
        xml_field(&expired.body, "faultcode").as_deref(),
        Some("sf:INVALID_SESSION_ID")
    );
    let missing = soap(
        &env,
        &url,
        session_envelope("", "getUserInfo"),
        "getUserInfo",
    )
    .await;
    assert_eq!(
        xml_field(&missing.body, "faultcode").as_deref(),
        Some("sf:INVALID_SESSION_ID")
    );
}

#[tokio::test]
async fn the_identity_documents_partner_url_answers() {
    let env = env().await;
    let token = env.password_login().await.field("access_token");
    let path = format!("/id/{}/{}?version=64.0", env.c.org_id, env.c.user_id);
    let id = env.get_bearer(&path, &token).await;
    let partner = id.json()["urls"]["partner"].as_str().unwrap().to_owned();
    let info = soap(
        &env,
        &partner,
        session_envelope(&token, "getUserInfo"),
        "getUserInfo",
    )
    .await;
    assert_eq!(info.status, 200, "{partner}: {}", info.body);
    assert_eq!(
        xml_field(&info.body, "userName").as_deref(),
        Some(env.c.username.as_str())
    );
}
