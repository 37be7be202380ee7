//! Browser flows: the web server flow (authorization code with PKCE) and the user-agent flow.
//!
//! The authorization URL, the `state` value and the PKCE S256 pair come from the `oauth2`
//! crate; the callback parsing, the code exchange and the fragment parsing are Salesforce's.

use std::time::SystemTime;

use oauth2::{AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, ResponseType, Scope};
use subtle::ConstantTimeEq as _;
use url::Url;

use crate::client::OAuthClient;
use crate::error::{Context, Error, ServerError};
use crate::format::{Fields, parse_fields};
use crate::http::{HttpTransport, RetrySafety};
use crate::secret::{AuthorizationCode, PkceVerifier};
use crate::token::TokenSet;

/// Optional parameters of an authorization URL. Build it with struct update syntax from
/// [`AuthorizeParams::scopes`] or `Default::default()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizeParams {
    /// Scopes to request (`api`, `refresh_token`, `openid`, …). A refresh token is issued only
    /// when `refresh_token` (or `offline_access`) is requested and allowed by the app.
    pub scopes: Vec<String>,
    /// `prompt`: `login`, `consent`, `select_account`, space-separated.
    pub prompt: Option<String>,
    /// `login_hint`: a username to pre-fill.
    pub login_hint: Option<String>,
    /// `nonce`, echoed in the ID token.
    pub nonce: Option<String>,
    /// `display`: `page`, `popup`, `touch`.
    pub display: Option<String>,
    /// Any further parameters.
    pub extra: Vec<(String, String)>,
}

impl AuthorizeParams {
    /// Parameters requesting `scopes`.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self {
            scopes: scopes.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// An authorization URL to send the user to, and what to keep until the callback arrives.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// Where to send the user's browser.
    pub url: Url,
    /// The `state` value; the callback must carry it back.
    pub state: String,
    /// The PKCE verifier for the code exchange (web server flow only).
    pub pkce_verifier: Option<PkceVerifier>,
}

impl OAuthClient {
    /// The web server flow's authorization URL: `response_type=code`, a random `state` and a
    /// PKCE S256 challenge. Keep the returned `state` and `pkce_verifier` for
    /// [`parse_callback`](Self::parse_callback) and [`exchange_code`](Self::exchange_code).
    ///
    /// ```
    /// use sfauth_core::{ConnectedApp, LoginHost, OAuthClient};
    /// use sfauth_core::flows::AuthorizeParams;
    ///
    /// let app = ConnectedApp::new("3MVG9.key").with_redirect_uri("http://localhost:1717/callback")?;
    /// let client = OAuthClient::new(LoginHost::Production, app);
    /// let request = client.authorize_url(&AuthorizeParams::scopes(["api", "refresh_token"]))?;
    /// let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
    /// assert!(query.contains(&("response_type".into(), "code".into())));
    /// assert!(query.contains(&("code_challenge_method".into(), "S256".into())));
    /// assert!(query.contains(&("scope".into(), "api refresh_token".into())));
    /// assert!(query.contains(&("state".into(), request.state.clone())));
    /// # Ok::<(), sfauth_core::Error>(())
    /// ```
    pub fn authorize_url(&self, params: &AuthorizeParams) -> Result<AuthorizationRequest, Error> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self.build_authorize_url(params, "code", Some(challenge))?;
        Ok(AuthorizationRequest {
            url,
            state,
            pkce_verifier: Some(PkceVerifier::new(verifier.secret())),
        })
    }

    /// The user-agent flow's authorization URL: `response_type=token` (or `token id_token` when
    /// `openid` is among the scopes and a nonce is set). Salesforce recommends the web server
    /// flow with PKCE instead.
    pub fn user_agent_url(&self, params: &AuthorizeParams) -> Result<AuthorizationRequest, Error> {
        let response_type = if params.nonce.is_some() && params.scopes.iter().any(|s| s == "openid")
        {
            "token id_token"
        } else {
            "token"
        };
        let (url, state) = self.build_authorize_url(params, response_type, None)?;
        Ok(AuthorizationRequest {
            url,
            state,
            pkce_verifier: None,
        })
    }

    fn build_authorize_url(
        &self,
        params: &AuthorizeParams,
        response_type: &str,
        challenge: Option<PkceCodeChallenge>,
    ) -> Result<(Url, String), Error> {
        let redirect = self.app().require_redirect_uri()?;
        let client =
            oauth2::basic::BasicClient::new(ClientId::new(self.app().client_id().to_owned()))
                .set_auth_uri(AuthUrl::from_url(self.endpoints().authorize.clone()))
                .set_redirect_uri(RedirectUrl::from_url(redirect.clone()));
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(params.scopes.iter().cloned().map(Scope::new));
        if response_type != "code" {
            request = request.set_response_type(&ResponseType::new(response_type.to_owned()));
        }
        if let Some(challenge) = challenge {
            request = request.set_pkce_challenge(challenge);
        }
        for (name, value) in [
            ("prompt", &params.prompt),
            ("login_hint", &params.login_hint),
            ("nonce", &params.nonce),
            ("display", &params.display),
        ] {
            if let Some(value) = value {
                request = request.add_extra_param(name, value.clone());
            }
        }
        for (name, value) in &params.extra {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, state) = request.url();
        Ok((url, state.secret().clone()))
    }

    /// Reads the web server flow's callback URL: checks `state` against `expected_state` (in
    /// constant time), then returns the code, or the error the authorization server redirected
    /// with (as [`Error::Server`] with status 0).
    ///
    /// ```
    /// use sfauth_core::{ConnectedApp, Error, LoginHost, OAuthClient};
    ///
    /// let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
    /// let callback = url::Url::parse("http://localhost:1717/callback?code=aPrx.code&state=abc").unwrap();
    /// assert_eq!(client.parse_callback(&callback, "abc")?.expose_secret(), "aPrx.code");
    /// assert!(matches!(client.parse_callback(&callback, "xyz"), Err(Error::StateMismatch)));
    /// # Ok::<(), sfauth_core::Error>(())
    /// ```
    pub fn parse_callback(
        &self,
        callback: &Url,
        expected_state: &str,
    ) -> Result<AuthorizationCode, Error> {
        let fields = redirect_fields(callback.query().unwrap_or_default())?;
        check_redirect(&fields, expected_state)?;
        fields
            .get("code")
            .map(AuthorizationCode::new)
            .ok_or_else(|| {
                Error::parse(0, "authorization callback has neither code nor error", b"")
            })
    }

    /// Exchanges an authorization code: `grant_type=authorization_code` with the app's
    /// `redirect_uri` and, when PKCE was used, the `code_verifier`. Single use.
    pub async fn exchange_code(
        &self,
        transport: &dyn HttpTransport,
        code: &AuthorizationCode,
        pkce_verifier: Option<&PkceVerifier>,
    ) -> Result<TokenSet, Error> {
        let redirect = self.app().require_redirect_uri()?;
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose_secret()),
            ("redirect_uri", redirect.as_str()),
        ];
        if let Some(verifier) = pkce_verifier {
            params.push(("code_verifier", verifier.expose_secret()));
        }
        self.token_grant(
            transport,
            params,
            true,
            RetrySafety::SingleUse,
            Context::Other,
        )
        .await
    }

    /// Reads the user-agent flow's redirect: the tokens are in the URL fragment. Checks
    /// `state`, and the signature when the app has a secret.
    pub fn parse_fragment(&self, redirect: &Url, expected_state: &str) -> Result<TokenSet, Error> {
        let fields = redirect_fields(redirect.fragment().unwrap_or_default())?;
        check_redirect(&fields, expected_state)?;
        let app = self.app();
        let secrets = [
            self.secret_in_use().and_then(|slot| app.secret(slot)),
            self.secret_in_use()
                .and_then(|slot| app.secret(slot.other())),
        ];
        self.token_set_from_fields(fields, 0, b"", SystemTime::now(), &secrets)
    }
}

fn redirect_fields(encoded: &str) -> Result<Fields, Error> {
    parse_fields(
        Some("application/x-www-form-urlencoded"),
        encoded.as_bytes(),
    )
    .map_err(|reason| Error::parse(0, format!("authorization redirect: {reason}"), b""))
}

fn check_redirect(fields: &Fields, expected_state: &str) -> Result<(), Error> {
    let state = fields.get("state").unwrap_or_default();
    if expected_state.is_empty() || !bool::from(state.as_bytes().ct_eq(expected_state.as_bytes())) {
        return Err(Error::StateMismatch);
    }
    match fields.get("error") {
        Some(error) => {
            Err(
                ServerError::classify(0, error, fields.get("error_description"), Context::Other)
                    .into(),
            )
        }
        None => Ok(()),
    }
}
