//! Response formats and the one parser every endpoint's answer goes through.
//!
//! Salesforce's token endpoint answers in JSON, `application/x-www-form-urlencoded` or XML,
//! chosen by the `format` parameter or the `Accept` header ([`ResponseFormat`]). Whatever the
//! format, the body is read into the same flat field map, so a token response becomes the same
//! [`TokenSet`](crate::TokenSet) and an error response the same
//! [`ServerError`]. The format is taken from the `Content-Type`
//! header, or sniffed from the first byte when the header is missing or generic.
//!
//! XML responses are read as one flat element per field under a single root element, whatever
//! its name (`<OAuth><access_token>…</access_token>…</OAuth>`); Salesforce documents the XML
//! format but publishes no sample (see the crate docs' UNCONFIRMED section).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::error::{Context, Error, RejectedTokens, ServerError};
use crate::http::{BodyTruncated, HttpResponse};
use crate::secret::RefreshToken;

/// Largest response body core parses (256 KiB). Token responses are a few kilobytes; anything
/// larger is refused with a [`Error::Parse`] rather than buffered into a parser.
pub const MAX_BODY_LEN: usize = 256 * 1024;

/// The response format requested from Salesforce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseFormat {
    /// `format=json`, `Accept: application/json`. The default, and what Salesforce's own SDKs
    /// send.
    #[default]
    Json,
    /// `format=urlencoded`, `Accept: application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `format=xml`, `Accept: application/xml`.
    Xml,
}

impl ResponseFormat {
    /// The value of the `format` parameter.
    pub fn param(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::UrlEncoded => "urlencoded",
            Self::Xml => "xml",
        }
    }

    /// The value of the `Accept` header.
    pub fn accept(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::UrlEncoded => "application/x-www-form-urlencoded",
            Self::Xml => "application/xml",
        }
    }
}

/// A flat map of a response's fields; JSON numbers and booleans are kept as their text, nested
/// JSON values as JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields(BTreeMap<String, String>);

impl Fields {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        self.0.remove(key).filter(|v| !v.is_empty())
    }
}

/// Reads `body` into fields, detecting its format from `content_type` or its first byte.
/// The error is a reason that contains no value from the body.
pub(crate) fn parse_fields(content_type: Option<&str>, body: &[u8]) -> Result<Fields, String> {
    if body.len() > MAX_BODY_LEN {
        return Err(format!(
            "body of {} bytes exceeds the {MAX_BODY_LEN} byte limit",
            body.len()
        ));
    }
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if content_type.contains("json") || (first == Some(b'{') && !content_type.contains("xml")) {
        parse_json(body)
    } else if content_type.contains("xml") || first == Some(b'<') {
        parse_xml(body)
    } else if content_type.contains("x-www-form-urlencoded") || body.contains(&b'=') {
        parse_urlencoded(body)
    } else if first.is_none() {
        Err("empty body".to_owned())
    } else {
        Err("body is neither json, urlencoded nor xml".to_owned())
    }
}

fn parse_json(body: &[u8]) -> Result<Fields, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("invalid json at line {} column {}", e.line(), e.column()))?;
    let serde_json::Value::Object(object) = value else {
        return Err("json body is not an object".to_owned());
    };
    let fields = object
        .into_iter()
        .filter_map(|(key, value)| {
            let text = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            Some((key, text))
        })
        .collect();
    Ok(Fields(fields))
}

fn parse_urlencoded(body: &[u8]) -> Result<Fields, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| "invalid urlencoded body".to_owned())?;
    if pairs.is_empty() {
        return Err("empty urlencoded body".to_owned());
    }
    let mut fields = BTreeMap::new();
    for (key, value) in pairs {
        fields.entry(key).or_insert(value);
    }
    Ok(Fields(fields))
}

fn parse_xml(body: &[u8]) -> Result<Fields, String> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut fields = BTreeMap::new();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|_| format!("invalid xml at byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(start) => {
                depth = depth.saturating_add(1);
                if depth == 1 {
                    if saw_root {
                        return Err("xml body has more than one root element".to_owned());
                    }
                    saw_root = true;
                } else if depth == 2 {
                    let name = std::str::from_utf8(start.local_name().as_ref())
                        .map_err(|_| "xml element name is not utf-8".to_owned())?
                        .to_owned();
                    current = Some(name);
                }
                if depth > 8 {
                    return Err("xml body is nested too deeply".to_owned());
                }
            }
            Event::Empty(_) if depth == 0 => {
                saw_root = true;
            }
            Event::Text(text) if depth == 2 => {
                let value = text
                    .unescape()
                    .map_err(|_| "invalid xml escape".to_owned())?;
                if let Some(name) = &current {
                    fields
                        .entry(name.clone())
                        .or_insert_with(|| value.into_owned());
                }
            }
            Event::CData(data) if depth == 2 => {
                let value = String::from_utf8(data.into_inner().into_owned())
                    .map_err(|_| "xml cdata is not utf-8".to_owned())?;
                if let Some(name) = &current {
                    fields.entry(name.clone()).or_insert(value);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth < 2 {
                    current = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth != 0 {
        return Err("xml body is truncated".to_owned());
    }
    if !saw_root {
        return Err("xml body has no root element".to_owned());
    }
    Ok(Fields(fields))
}

/// The `Retry-After` of `response` as of now, in either of its forms.
fn retry_after(response: &HttpResponse) -> Option<Duration> {
    crate::http::retry_after(response.headers(), SystemTime::now())
}

fn content_type(response: &HttpResponse) -> Option<&str> {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// Reads any OAuth endpoint's response: the fields of a 2xx answer, or the error it stands for.
///
/// A 2xx body carrying an `error` field is an error too ([`Error::TokensRejected`] when it
/// also carries a refresh token). A non-2xx body that is not an OAuth
/// error becomes [`Error::Status`]; redirects are not followed and end up there as well. A body
/// the transport cut at its cap ([`BodyTruncated`]) is never parsed: a non-2xx one is
/// [`Error::Status`], classified by its status alone, and a 2xx one (which a transport should
/// not hand back) is [`Error::Parse`].
pub(crate) fn read_response(response: &HttpResponse, context: Context) -> Result<Fields, Error> {
    let status = response.status().as_u16();
    let body = response.body();
    if let Some(cut) = BodyTruncated::of(response) {
        return Err(if response.status().is_success() {
            Error::parse(
                status,
                format!("body was cut at the transport's {} byte limit", cut.limit()),
                body,
            )
        } else {
            Error::Status {
                status,
                retry_after: retry_after(response),
                excerpt: crate::redact::excerpt(body),
            }
        });
    }
    let parsed = parse_fields(content_type(response), body);
    let server_error = |fields: &Fields| {
        fields.get("error").map(|error| {
            Error::from(
                ServerError::classify(status, error, fields.get("error_description"), context)
                    .with_uri(fields.get("error_uri"))
                    .with_retry_after(retry_after(response)),
            )
        })
    };
    if response.status().is_success() {
        let fields = parsed.map_err(|reason| Error::parse(status, reason, body))?;
        match server_error(&fields) {
            // A success that says both "error" and "here is a refresh token" is contradictory,
            // but the token may be the only live one: the error keeps it.
            Some(error) => Err(match fields.get("refresh_token") {
                Some(refresh_token) => Error::TokensRejected(Box::new(RejectedTokens::new(
                    error,
                    None,
                    Some(RefreshToken::new(refresh_token)),
                ))),
                None => error,
            }),
            None => Ok(fields),
        }
    } else {
        match parsed.as_ref().ok().and_then(server_error) {
            Some(error) => Err(error),
            None => Err(Error::Status {
                status,
                retry_after: retry_after(response),
                excerpt: crate::redact::excerpt(body),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_formats_read_alike() {
        let json = parse_fields(
            Some("application/json;charset=UTF-8"),
            br#"{"a":"1","b":2,"c":true,"d":null}"#,
        )
        .unwrap();
        let form =
            parse_fields(Some("application/x-www-form-urlencoded"), b"a=1&b=2&c=true").unwrap();
        let xml = parse_fields(
            Some("application/xml"),
            b"<?xml version=\"1.0\"?><OAuth><a>1</a><b>2</b><c>true</c><d/></OAuth>",
        )
        .unwrap();
        assert_eq!(json, form);
        assert_eq!(json, xml);
        let sniffed = parse_fields(None, b"  <OAuth><a>1</a><b>2</b><c>true</c></OAuth>").unwrap();
        assert_eq!(sniffed, json);
    }

    #[test]
    fn broken_bodies_are_reasons_not_panics() {
        for (content_type, body) in [
            (Some("application/json"), &b"{\"a\":"[..]),
            (Some("application/json"), b"[1,2]"),
            (Some("application/xml"), b"<OAuth><a>1</a>"),
            (Some("application/xml"), b"<OAuth><a>1</b></OAuth>"),
            (None, b""),
            (None, b"just text"),
            (Some("text/html"), b"<html><body>down</body>"),
        ] {
            assert!(parse_fields(content_type, body).is_err(), "{body:?}");
        }
        let huge = vec![b'a'; MAX_BODY_LEN + 1];
        assert!(parse_fields(None, &huge).unwrap_err().contains("exceeds"));
    }
}
