//! Response encodings (`format` parameter and `Accept` header) and OAuth error bodies.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A response body encoding the token endpoint can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Urlencoded,
    Xml,
}

impl Format {
    /// The `format` parameter wins over `Accept` (as on the identity URL; UNCONFIRMED for the
    /// token endpoint); an unknown or absent value means JSON.
    pub(crate) fn negotiate(format_param: Option<&str>, headers: &HeaderMap) -> Self {
        if let Some(f) = format_param {
            match f.to_ascii_lowercase().as_str() {
                "urlencoded" => return Self::Urlencoded,
                "xml" => return Self::Xml,
                "json" => return Self::Json,
                _ => {}
            }
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Left to right: the first media type we know decides.
        for part in accept.split(',') {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "application/json" | "*/*" => return Self::Json,
                "application/x-www-form-urlencoded" => return Self::Urlencoded,
                "application/xml" | "text/xml" => return Self::Xml,
                _ => {}
            }
        }
        Self::Json
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json;charset=UTF-8",
            Self::Urlencoded => "application/x-www-form-urlencoded;charset=UTF-8",
            Self::Xml => "application/xml;charset=UTF-8",
        }
    }
}

/// An ordered list of response fields. The encoders take any string keys (see [`encode`]); this
/// alias is the common case of names written in the code.
pub(crate) type Fields = Vec<(&'static str, Value)>;

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Escapes text for an XML element body.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Encodes fields as a body in `format`.
///
/// XML is `<OAuth><field>value</field>...</OAuth>`: the root name is a guess (UNCONFIRMED).
///
/// Keys are any strings, not just `&'static str`, so a body built as a JSON object (userinfo,
/// identity) is encoded key by key with nothing left out.
pub(crate) fn encode<K: AsRef<str>>(format: Format, fields: &[(K, Value)]) -> String {
    match format {
        Format::Json => {
            let map: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.clone()))
                .collect();
            Value::Object(map).to_string()
        }
        Format::Urlencoded => {
            let pairs: Vec<(&str, String)> = fields
                .iter()
                .map(|(k, v)| (k.as_ref(), value_text(v)))
                .collect();
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        }
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><OAuth>");
            for (k, v) in fields {
                let k = k.as_ref();
                out.push_str(&format!("<{k}>{}</{k}>", xml_escape(&value_text(v))));
            }
            out.push_str("</OAuth>");
            out
        }
    }
}

/// A response with `fields` encoded in `format`.
pub(crate) fn respond<K: AsRef<str>>(
    status: StatusCode,
    format: Format,
    fields: &[(K, Value)],
) -> Response {
    let mut response = (status, encode(format, fields)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,must-revalidate,max-age=0,no-store,private"),
    );
    response
}

/// An OAuth error as the token, revoke and introspect endpoints send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: std::borrow::Cow<'static, str>,
    pub(crate) description: String,
}

impl OAuthError {
    /// A 400 error with Salesforce's `error` and `error_description` strings.
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: std::borrow::Cow::Borrowed(error),
            description: description.into(),
        }
    }

    /// A 400 error whose strings come from the configuration.
    pub(crate) fn configured(body: &crate::model::ErrorBody) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: std::borrow::Cow::Owned(body.error.clone()),
            description: body.error_description.clone(),
        }
    }

    /// An uninstalled app's answer to a new authorization or the device flow (seen on the wire
    /// since September 2025).
    pub(crate) fn app_not_installed() -> Self {
        Self::new("invalid_client", "app must be installed into org")
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    pub(crate) fn expired_token() -> Self {
        Self::invalid_grant("expired access/refresh token")
    }

    pub(crate) fn invalid_client_id() -> Self {
        Self::new("invalid_client_id", "client identifier invalid")
    }

    pub(crate) fn invalid_client() -> Self {
        Self::new("invalid_client", "invalid client credentials")
    }

    pub(crate) fn inactive_user() -> Self {
        Self::new("inactive_user", "User is inactive")
    }

    pub(crate) fn inactive_org() -> Self {
        Self::new("inactive_org", "Org is locked, closed, or suspended")
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub(crate) fn invalid_scope() -> Self {
        Self::new(
            "invalid_scope",
            "Requested scope is invalid, unknown, or malformed",
        )
    }

    /// The body fields.
    pub(crate) fn fields(&self) -> Fields {
        vec![
            ("error", Value::from(self.error.as_ref())),
            ("error_description", Value::from(self.description.clone())),
        ]
    }

    /// The error as a response in `format`.
    pub(crate) fn respond(&self, format: Format) -> Response {
        respond(self.status, format, &self.fields())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn negotiation() {
        for (param, accept, want) in [
            (None, "", Format::Json),
            (None, "application/xml", Format::Xml),
            (
                None,
                "text/html, application/x-www-form-urlencoded;q=0.9",
                Format::Urlencoded,
            ),
            (Some("json"), "application/xml", Format::Json),
            (Some("urlencoded"), "", Format::Urlencoded),
            (Some("XML"), "", Format::Xml),
            (Some("bogus"), "application/xml", Format::Xml),
        ] {
            assert_eq!(
                Format::negotiate(param, &headers(accept)),
                want,
                "{param:?} {accept}"
            );
        }
    }

    #[test]
    fn encodings() {
        let fields: Fields = vec![("a", Value::from("x y&z")), ("n", Value::from(5))];
        assert_eq!(encode(Format::Json, &fields), r#"{"a":"x y&z","n":5}"#);
        assert_eq!(encode(Format::Urlencoded, &fields), "a=x+y%26z&n=5");
        assert_eq!(
            encode(Format::Xml, &fields),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OAuth><a>x y&amp;z</a><n>5</n></OAuth>"
        );
    }
}
