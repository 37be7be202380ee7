//! The test harness: start an emulator with a manual clock, send requests, check replies.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sfauth_emulator::{Clock, Credentials, Emulator, EmulatorBuilder};
use sha2::Sha256;

pub(crate) struct Env {
    pub(crate) emu: Emulator,
    pub(crate) http: reqwest::Client,
    pub(crate) c: Credentials,
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A field of a JSON body, as a string.
    pub(crate) fn field(&self, name: &str) -> String {
        match self.json().get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => panic!("no field {name} in {}", self.body),
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.json().get(name).is_some()
    }

    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// Asserts a Salesforce OAuth error.
    #[track_caller]
    pub(crate) fn expect_error(&self, status: u16, error: &str, description: &str) {
        assert_eq!(self.status, status, "status of {}", self.body);
        let json = self.json();
        assert_eq!(json["error"], error, "error in {}", self.body);
        assert_eq!(
            json["error_description"], description,
            "description in {}",
            self.body
        );
    }

    #[track_caller]
    pub(crate) fn expect_ok(&self) -> &Self {
        assert_eq!(self.status, 200, "body: {}", self.body);
        self
    }

    /// The query or fragment parameters of a redirect's Location.
    pub(crate) fn location_params(&self) -> HashMap<String, String> {
        let location = self.header("location");
        let tail = location
            .split_once(['#', '?'])
            .map(|(_, t)| t)
            .unwrap_or("");
        url_params(tail)
    }
}

pub(crate) fn url_params(encoded: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(encoded.as_bytes())
        .into_owned()
        .collect()
}

pub(crate) async fn env() -> Env {
    env_with(|b| b).await
}

pub(crate) async fn env_with(f: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder) -> Env {
    let builder = Emulator::builder()
        .clock(Clock::manual_now())
        .seed(42)
        .auto_approve(true);
    let emu = f(builder).start().await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let c = emu.credentials().clone();
    Env { emu, http, c }
}

async fn reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

impl Env {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url())
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        reply(
            self.http
                .post(self.url(path))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn token(&self, form: &[(&str, &str)]) -> Reply {
        self.post("/services/oauth2/token", form).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        reply(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub(crate) async fn get_bearer(&self, path: &str, token: &str) -> Reply {
        reply(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        reply(req.send().await.unwrap()).await
    }

    /// A password-flow login of the seeded user, which must succeed.
    pub(crate) async fn password_login(&self) -> Reply {
        let r = self.password_login_raw().await;
        r.expect_ok();
        r
    }

    /// A password-flow login of the seeded user, whatever the answer.
    pub(crate) async fn password_login_raw(&self) -> Reply {
        let pw = self.c.password_with_token();
        self.token(&[
            ("grant_type", "password"),
            ("client_id", &self.c.client_id),
            ("client_secret", &self.c.client_secret),
            ("username", &self.c.username),
            ("password", &pw),
        ])
        .await
    }

    /// Auto-approved web server flow with PKCE; returns the token response.
    pub(crate) async fn code_login(&self, scope: &str) -> Reply {
        let verifier = "a-verifier-that-is-long-enough-for-rfc-7636-requirements-0123456789";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(<Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
        let auth = self
            .send(
                self.http
                    .get(self.url("/services/oauth2/authorize"))
                    .query(&[
                        ("response_type", "code"),
                        ("client_id", &self.c.client_id),
                        ("redirect_uri", &self.c.callback_url),
                        ("scope", scope),
                        ("state", "s1"),
                        ("code_challenge", &challenge),
                    ]),
            )
            .await;
        assert_eq!(auth.status, 302, "{}", auth.body);
        let code = auth.location_params()["code"].clone();
        let r = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &self.c.client_id),
                ("client_secret", &self.c.client_secret),
                ("redirect_uri", &self.c.callback_url),
                ("code_verifier", verifier),
            ])
            .await;
        r.expect_ok();
        r
    }

    pub(crate) async fn refresh(&self, refresh_token: &str) -> Reply {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &self.c.client_id),
            ("client_secret", &self.c.client_secret),
        ])
        .await
    }

    /// Status of a REST call with the token.
    pub(crate) async fn rest_status(&self, token: &str) -> u16 {
        self.get_bearer("/services/data/v62.0/query?q=SELECT+Id+FROM+Account", token)
            .await
            .status
    }
}

/// The token response `signature`, computed independently from §5 of the protocol reference.
pub(crate) fn expected_signature(secret: &str, id: &str, issued_at: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{id}{issued_at}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The payload of a JWT, undecoded signature aside.
pub(crate) fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A data-driven case for the token endpoint: form fields and the expected error (or success).
pub(crate) struct Case<'a> {
    pub(crate) name: &'a str,
    pub(crate) form: Vec<(&'a str, String)>,
    /// `None`: expect 200.
    pub(crate) error: Option<(&'a str, &'a str)>,
}

pub(crate) async fn check(env: &Env, cases: Vec<Case<'_>>) {
    for case in cases {
        let form: Vec<(&str, &str)> = case.form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = env.token(&form).await;
        match case.error {
            None => assert_eq!(r.status, 200, "{}: {}", case.name, r.body),
            Some((error, description)) => {
                assert_eq!(r.status, 400, "{}: {}", case.name, r.body);
                assert_eq!(r.json()["error"], error, "{}: {}", case.name, r.body);
                assert_eq!(
                    r.json()["error_description"],
                    description,
                    "{}: {}",
                    case.name,
                    r.body
                );
            }
        }
    }
}
