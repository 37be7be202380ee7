//! Token-endpoint grants that take their inputs directly: refresh token, username-password,
//! client credentials, token exchange and SAML bearer.

use crate::client::OAuthClient;
use crate::error::{Context, Error};
use crate::http::{HttpTransport, RetrySafety};
use crate::secret::{Password, RefreshToken, SecretValue};
use crate::token::TokenSet;

/// `subject_token_type` values of the token exchange grant, as Salesforce's
/// `Auth.OAuth2TokenExchangeType` spells them.
pub mod token_type {
    /// A Salesforce or third-party access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// A refresh token.
    pub const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
    /// An OpenID Connect ID token.
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// A JWT (capital `JWT` as in Salesforce's docs; RFC 8693 writes `jwt`).
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:JWT";
    /// A SAML 2.0 assertion.
    pub const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";
}

/// The inputs of a token exchange (RFC 8693-style, validated by an Apex
/// `Auth.Oauth2TokenExchangeHandler` in the org).
#[derive(Clone, Debug)]
pub struct TokenExchange {
    /// The token to exchange.
    pub subject_token: SecretValue,
    /// Its type, one of [`token_type`].
    pub subject_token_type: String,
    /// Scopes to request, space-separated.
    pub scope: Option<String>,
    /// An actor token and its type (the asset token flow sends a JWT describing the asset).
    pub actor: Option<(SecretValue, String)>,
    /// Further parameters a handler expects (for example `token_handler`).
    pub extra: Vec<(String, String)>,
}

impl TokenExchange {
    /// Exchange `subject_token` of type `subject_token_type`.
    pub fn new(subject_token: impl Into<SecretValue>, subject_token_type: &str) -> Self {
        Self {
            subject_token: subject_token.into(),
            subject_token_type: subject_token_type.to_owned(),
            scope: None,
            actor: None,
            extra: Vec::new(),
        }
    }
}

impl OAuthClient {
    /// Refresh token flow: `grant_type=refresh_token`.
    ///
    /// The request is [`RetrySafety::SingleUse`]: with rotation on, a refresh token is good for
    /// one request, and presenting it twice revokes the token family. When the response carries
    /// no `refresh_token` (rotation off), the returned set keeps `refresh_token` as the one
    /// passed in, so callers can always persist what they get. Persist `instance_url` and the
    /// identity URL from the result too: they can change.
    ///
    /// A concurrent refresh of the same token fails with [`ErrorKind::RefreshInProgress`](crate::ErrorKind::RefreshInProgress):
    /// wait and re-read the stored tokens rather than sending this one again.
    ///
    /// A 2xx answer that issued tokens but then failed a check (its signature, a missing `id`)
    /// is [`Error::TokensRejected`]: take [`Error::issued_refresh_token`] from it and store it,
    /// since the token passed in is spent when the app rotates.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use sfauth_core::http::{HttpRequest, HttpResponse, TransportError};
    /// use sfauth_core::{ConnectedApp, LoginHost, OAuthClient, RefreshToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sfauth_core::Error> {
    /// # let transport = |_request: HttpRequest| async {
    /// #     Ok::<_, TransportError>(HttpResponse::new(Bytes::from_static(
    /// #         br#"{"access_token":"00D5e000000Abcd!AQ4AQ","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK","issued_at":"1700000000000","token_type":"Bearer"}"#,
    /// #     )))
    /// # };
    /// let client = OAuthClient::new(LoginHost::Production, ConnectedApp::new("3MVG9.key"));
    /// let tokens = client.refresh(&transport, &RefreshToken::new("5Aep861")).await?;
    /// assert_eq!(tokens.instance_url.as_str(), "https://acme.my.salesforce.com/");
    /// assert_eq!(tokens.refresh_token.unwrap().expose_secret(), "5Aep861");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh(
        &self,
        transport: &dyn HttpTransport,
        refresh_token: &RefreshToken,
    ) -> Result<TokenSet, Error> {
        let params = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        let result = self
            .token_grant(
                transport,
                params,
                true,
                RetrySafety::SingleUse,
                Context::Refresh,
            )
            .await;
        match result {
            Ok(mut tokens) => {
                tokens
                    .refresh_token
                    .get_or_insert_with(|| refresh_token.clone());
                Ok(tokens)
            }
            Err(Error::TokensRejected(mut rejected)) => {
                rejected.keep_sent_refresh_token(refresh_token);
                Err(Error::TokensRejected(rejected))
            }
            Err(error) => Err(error),
        }
    }

    /// Username-password flow: `grant_type=password`. `password` is the user's password with
    /// the security token appended. Blocked by default in orgs created since Summer '23; a
    /// blocked flow answers `authentication failure`. Issues no refresh token.
    pub async fn password(
        &self,
        transport: &dyn HttpTransport,
        username: &str,
        password: &Password,
    ) -> Result<TokenSet, Error> {
        let params = vec![
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose_secret()),
        ];
        self.token_grant(
            transport,
            params,
            true,
            RetrySafety::CallerRetries,
            Context::Other,
        )
        .await
    }

    /// Client credentials flow: `grant_type=client_credentials`, tokens for the app's Run As
    /// user. Salesforce accepts it only on a My Domain, so a login-pool host is refused here as
    /// [`Error::Config`] before anything is sent. Needs a client secret.
    pub async fn client_credentials(
        &self,
        transport: &dyn HttpTransport,
    ) -> Result<TokenSet, Error> {
        if self.host().is_login_pool() {
            return Err(Error::config(
                "the client credentials flow needs a my domain host, not login or test",
            ));
        }
        if self.app().client_secret().is_none() {
            return Err(Error::config(
                "the client credentials flow needs a client secret",
            ));
        }
        let params = vec![("grant_type", "client_credentials")];
        self.token_grant(
            transport,
            params,
            true,
            RetrySafety::CallerRetries,
            Context::Other,
        )
        .await
    }

    /// Token exchange: `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`. Marked
    /// [`RetrySafety::SingleUse`], since a handler may treat the subject token as spent.
    pub async fn token_exchange(
        &self,
        transport: &dyn HttpTransport,
        exchange: &TokenExchange,
    ) -> Result<TokenSet, Error> {
        let mut params = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", exchange.subject_token.expose_secret()),
            ("subject_token_type", exchange.subject_token_type.as_str()),
        ];
        if let Some((actor_token, actor_token_type)) = &exchange.actor {
            params.push(("actor_token", actor_token.expose_secret()));
            params.push(("actor_token_type", actor_token_type.as_str()));
        }
        if let Some(scope) = &exchange.scope {
            params.push(("scope", scope.as_str()));
        }
        params.extend(exchange.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.token_grant(
            transport,
            params,
            true,
            RetrySafety::SingleUse,
            Context::Other,
        )
        .await
    }

    /// SAML bearer assertion flow: `grant_type=urn:ietf:params:oauth:grant-type:saml2-bearer`
    /// with a base64url-encoded SAML 2.0 assertion. The assertion authenticates the request, so
    /// no client credentials are sent. Marked [`RetrySafety::SingleUse`]: assertion ids are
    /// commonly accepted once. Issues no refresh token.
    pub async fn saml_bearer(
        &self,
        transport: &dyn HttpTransport,
        assertion: &SecretValue,
    ) -> Result<TokenSet, Error> {
        self.assertion_grant(
            transport,
            "urn:ietf:params:oauth:grant-type:saml2-bearer",
            assertion.expose_secret(),
            RetrySafety::SingleUse,
        )
        .await
    }

    /// A bearer assertion grant (JWT or SAML): `grant_type` and `assertion` only. The assertion
    /// authenticates the request, so no client credentials are sent.
    pub(crate) async fn assertion_grant(
        &self,
        transport: &dyn HttpTransport,
        grant_type: &str,
        assertion: &str,
        safety: RetrySafety,
    ) -> Result<TokenSet, Error> {
        let params = vec![("grant_type", grant_type), ("assertion", assertion)];
        self.token_grant(transport, params, false, safety, Context::Other)
            .await
    }
}
