//! Request parameters (query string plus form or multipart body) and client authentication.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, Uri, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Parameters of a request: body values win over query values; the first occurrence wins.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// A parameter, if present and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn add(&mut self, pairs: Vec<(String, String)>, overwrite: bool) {
        let mut seen = std::collections::HashSet::new();
        for (k, v) in pairs {
            if !seen.insert(k.clone()) {
                continue;
            }
            if overwrite || !self.0.contains_key(&k) {
                self.0.insert(k, v);
            }
        }
    }

    /// Reads the query string and, for form and multipart bodies, the body.
    pub(crate) async fn from_request(req: Request) -> (HeaderMap, Uri, Self) {
        let (parts, body) = req.into_parts();
        let mut params = Self::default();
        if let Some(q) = parts.uri.query() {
            params.add(serde_urlencoded::from_str(q).unwrap_or_default(), true);
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        // The middleware has already read the body within its size limit (`routes::observe`).
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        if content_type.starts_with("multipart/form-data") {
            let rebuilt = Request::builder()
                .header(header::CONTENT_TYPE, content_type.clone())
                .body(Body::from(bytes))
                .unwrap_or_default();
            if let Ok(mut multipart) = Multipart::from_request(rebuilt, &()).await {
                let mut pairs = Vec::new();
                while let Ok(Some(field)) = multipart.next_field().await {
                    let name = field.name().unwrap_or("").to_owned();
                    if let Ok(text) = field.text().await {
                        pairs.push((name, text));
                    }
                }
                params.add(pairs, true);
            }
        } else if !bytes.is_empty() && !content_type.starts_with("application/json") {
            // Salesforce reads form bodies even when clients forget the content type.
            params.add(
                serde_urlencoded::from_bytes(&bytes).unwrap_or_default(),
                true,
            );
        }
        (parts.headers, parts.uri, params)
    }
}

/// Client credentials from the body (`client_secret_post`) or an HTTP Basic header.
#[derive(Default, Clone)]
pub(crate) struct ClientAuth {
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    /// Both forms of a Basic-header id and secret: as sent, and form-urldecoded (RFC 6749 says to
    /// encode them first; many clients do not, and Salesforce accepts both).
    basic_decoded: Option<(String, String)>,
}

impl ClientAuth {
    pub(crate) fn from(headers: &HeaderMap, params: &Params) -> Self {
        let mut auth = Self {
            client_id: params.get("client_id").map(str::to_owned),
            client_secret: params.get("client_secret").map(str::to_owned),
            basic_decoded: None,
        };
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b64| STANDARD.decode(b64.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok());
        if let Some((id, secret)) = basic.as_deref().and_then(|s| s.split_once(':')) {
            let decode = |s: &str| -> String {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("x={s}"))
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .map_or_else(|| s.to_owned(), |(_, v)| v)
            };
            auth.basic_decoded = Some((decode(id), decode(secret)));
            if auth.client_id.is_none() {
                auth.client_id = Some(id.to_owned());
            }
            if auth.client_secret.is_none() {
                auth.client_secret = Some(secret.to_owned());
            }
        }
        auth
    }

    /// The client id, trying the urldecoded Basic form when the raw one is unknown.
    pub(crate) fn candidates(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.client_id.iter().cloned().collect();
        if let Some((id, _)) = &self.basic_decoded {
            ids.push(id.clone());
        }
        ids
    }

    /// Whether the presented secret matches.
    pub(crate) fn secret_matches(&self, secret: &str) -> bool {
        self.client_secret
            .as_deref()
            .is_some_and(|s| crate::crypto::secret_eq(s, secret))
            || self
                .basic_decoded
                .as_ref()
                .is_some_and(|(_, s)| crate::crypto::secret_eq(s, secret))
    }
}

/// A bearer token from `Authorization: Bearer`/`OAuth`, or the `oauth_token` parameter.
pub(crate) fn bearer(headers: &HeaderMap, params: Option<&Params>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
                .then(|| token.trim().to_owned())
        });
    from_header.or_else(|| params.and_then(|p| p.get("oauth_token")).map(str::to_owned))
}

/// The host name of the request, without port.
pub(crate) fn host(headers: &HeaderMap) -> String {
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let without_port = if raw.starts_with('[') {
        raw.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        raw.split(':').next().unwrap_or("").to_owned()
    };
    without_port.to_ascii_lowercase()
}
