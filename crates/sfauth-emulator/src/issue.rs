//! Issuing: the fields of a successful grant (tokens, signature, id token, instance URL) built
//! in one place, for the token endpoint and for the user-agent flow's redirect fragment.

use serde_json::{Value, json};

use crate::context::Shared;
use crate::crypto;
use crate::format::Fields;
use crate::model::Flow;
use crate::state::{Issued, State, User};

/// `sfdc_community_id` of the Experience Cloud-style site.
pub(crate) const COMMUNITY_ID: &str = "0DB5e000000EMU1GAO";

/// What the response of a grant carries besides the tokens.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    pub(crate) signature: bool,
    /// `Some(nonce)` adds an id token when the scopes include `openid`.
    pub(crate) id_token_nonce: Option<Option<String>>,
    /// The request asked for an id token by itself (the user-agent flow's `token id_token`), so
    /// one is added even without the `openid` scope.
    pub(crate) id_token_asked: bool,
    pub(crate) extra: Fields,
    /// The consumer secret the `signature` is made with: the one the client authenticated with
    /// (during a staged rotation, the staged one if that is what it sent); the app's current
    /// secret when `None`.
    pub(crate) signing_secret: Option<String>,
}

/// Whether a grant for `scopes` also issues a refresh token (shared with the user-agent flow in
/// `authorize.rs`, which must answer the same way).
pub(crate) fn wants_refresh(st: &State, client_id: &str, scopes: &[String]) -> bool {
    scopes
        .iter()
        .any(|s| s == "refresh_token" || s == "offline_access")
        && st
            .app(client_id)
            .is_some_and(|a| a.config.flows.contains(&Flow::RefreshToken))
}

/// Builds the response fields, swapping in a JWT access token when the app asks for them.
///
/// Takes the server and the site flag rather than a token request's context so the user-agent
/// flow's fragment (`authorize.rs`) is built by the same code and cannot drift from it.
/// Returns no fields when the app or the user is gone.
pub(crate) fn finish(
    shared: &Shared,
    via_site: bool,
    st: &mut State,
    mut issued: Issued,
    shape: Shape,
) -> Fields {
    let Some(app) = st.app(&issued.client_id).cloned() else {
        return Vec::new();
    };
    let Some(user) = st.user(&issued.user_id).cloned() else {
        return Vec::new();
    };
    let instance_url = st.instance_url(&user.org_id);
    let id = st.identity_url(&user);
    let now_s = issued.issued_ms.div_euclid(1000);
    if app.config.jwt_access_tokens {
        // The same lifetime as the token's record (`State::mint_access`): a timeout too large
        // for the clock means "never", not an overflow.
        let timeout_s = i64::try_from(app.config.policy.session_timeout_secs).unwrap_or(i64::MAX);
        let exp = now_s.saturating_add(timeout_s);
        let claims = json!({
            "scp": issued.scopes.join(" "),
            "aud": [instance_url],
            "sub": format!("uid:{}", user.id),
            "nbf": now_s, "iat": now_s, "exp": exp,
            "mty": "oauth",
            "sfi": st.random(32),
            "roles": [],
            "iss": instance_url,
            "hsc": false,
            "client_id": app.config.client_id,
        });
        let header = [
            ("tty", Value::from("sfdc-core-token")),
            ("tnk", Value::from(format!("core/emulator/{}", user.org_id))),
            ("ver", Value::from("1.0")),
        ];
        let jwt = shared.keys.sign_jwt(&header, &claims);
        st.replace_access_token(&issued.access_token, jwt.clone());
        issued.access_token = jwt;
    }
    let issued_at = issued.issued_ms.to_string();
    let mut fields: Fields = vec![("access_token", Value::from(issued.access_token.clone()))];
    if let Some(rt) = &issued.refresh_token {
        fields.push(("refresh_token", Value::from(rt.clone())));
    }
    if shape.signature {
        fields.push((
            "signature",
            Value::from(crypto::token_signature(
                shape
                    .signing_secret
                    .as_deref()
                    .unwrap_or(&app.config.client_secret),
                &id,
                &issued_at,
            )),
        ));
    }
    fields.push(("scope", Value::from(issued.scopes.join(" "))));
    let openid = issued.scopes.iter().any(|s| s == "openid");
    if let Some(nonce) = shape
        .id_token_nonce
        .filter(|_| openid || shape.id_token_asked)
    {
        let token = id_token(
            shared,
            st,
            &app.config.client_id,
            &user,
            &issued,
            nonce,
            via_site,
        );
        fields.push(("id_token", Value::from(token)));
    }
    fields.push(("instance_url", Value::from(instance_url)));
    fields.push(("id", Value::from(id)));
    fields.push(("token_type", Value::from("Bearer")));
    if shape.signature {
        fields.push(("issued_at", Value::from(issued_at)));
    }
    fields.extend(shape.extra);
    fields
}

/// An RS256 id token for `issued` (claims as observed: `at_hash`, `sub` = identity URL, `aud` =
/// client id, `iss`, `exp`, `iat`, `nonce`, plus standard profile claims).
///
/// `iss` is the host the user signed in through, as the discovery document served there says:
/// the site URL for a request that came through the Experience Cloud-style site, the base URL
/// otherwise (OpenID Connect requires the two to match).
pub(crate) fn id_token(
    shared: &Shared,
    st: &State,
    client_id: &str,
    user: &User,
    issued: &Issued,
    nonce: Option<String>,
    via_site: bool,
) -> String {
    let issuer = if via_site {
        shared.site_url()
    } else {
        shared.base_url.clone()
    };
    let now_s = issued.issued_ms.div_euclid(1000);
    let lifetime_s = i64::try_from(st.settings.id_token_lifetime_secs).unwrap_or(i64::MAX);
    let exp = now_s.saturating_add(lifetime_s);
    let mut claims = json!({
        "at_hash": crypto::at_hash(&issued.access_token),
        "sub": st.identity_url(user),
        "aud": client_id,
        "iss": issuer,
        "exp": exp,
        "iat": now_s,
        "name": format!("{} {}", user.config.first_name, user.config.last_name),
        "preferred_username": user.config.username,
        "given_name": user.config.first_name,
        "family_name": user.config.last_name,
        "email": user.config.email,
        "user_id": user.id,
        "organization_id": user.org_id,
    });
    if let (Some(n), Some(map)) = (nonce, claims.as_object_mut()) {
        map.insert("nonce".to_owned(), Value::from(n));
    }
    shared.keys.sign_jwt(&[], &claims)
}

pub(crate) fn full_shape() -> Shape {
    Shape {
        signature: true,
        id_token_nonce: Some(None),
        id_token_asked: false,
        extra: Vec::new(),
        signing_secret: None,
    }
}

/// The Experience Cloud-style site's fields, for a request that came through the site.
pub(crate) fn site_fields(shared: &Shared, via_site: bool) -> Fields {
    if via_site {
        vec![
            ("sfdc_community_url", Value::from(shared.site_url())),
            ("sfdc_community_id", Value::from(COMMUNITY_ID)),
        ]
    } else {
        Vec::new()
    }
}
