//! Reading a Salesforce REST API response for what it says about the access token.
//!
//! A dead session shows up as HTTP 401 with the body
//! `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]` and no
//! `WWW-Authenticate` header; refreshing the token and retrying once fixes it. Some 401s carry the
//! same `errorCode` but cannot be fixed by a refresh (`This session is not valid for use with the
//! REST API`, `Connected app is not attached to Agent`), and retrying them after a refresh would
//! loop. The Bulk API v1 reports an expired session as HTTP 400 with an `InvalidSessionId`
//! exception code.
//!
//! ```
//! use sfauth_core::rest::{classify, RestAuth};
//!
//! let body = br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
//! assert_eq!(classify(401, body), RestAuth::SessionExpired);
//! assert_eq!(classify(200, b"{}"), RestAuth::Ok);
//! ```

use serde::Deserialize;

/// What a REST response says about the access token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestAuth {
    /// Not an authentication failure (any non-401 status, other than Bulk's expired session).
    Ok,
    /// The access token is dead: refresh it, then retry the request once, rebuilt from the new
    /// `instance_url`.
    SessionExpired,
    /// A 401 that a refresh will not fix; `message` is Salesforce's message, clipped to 200
    /// characters and scrubbed ([`crate::redact`]).
    NotRefreshable {
        /// The `message` of the error.
        message: String,
    },
}

/// 401 messages that a refresh does not fix (jsforce keeps the same list).
const NOT_REFRESHABLE: &[&str] = &[
    "this session is not valid for use with the rest api",
    "connected app is not attached to agent",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_code: String,
}

/// Classifies a REST API response by its status and body.
pub fn classify(status: u16, body: &[u8]) -> RestAuth {
    match status {
        401 => {
            let errors: Vec<RestError> = serde_json::from_slice(body).unwrap_or_default();
            for error in &errors {
                let message = error.message.to_ascii_lowercase();
                if NOT_REFRESHABLE.iter().any(|m| message.contains(m)) {
                    let clipped: String = error.message.chars().take(200).collect();
                    return RestAuth::NotRefreshable {
                        message: crate::redact::scrub(&clipped).into_owned(),
                    };
                }
            }
            RestAuth::SessionExpired
        }
        400 if contains(body, b"InvalidSessionId") => RestAuth::SessionExpired,
        _ => RestAuth::Ok,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `body` is the classic expired-session array (used by callers that want to be strict
/// about the `errorCode` rather than trust any 401).
pub fn is_invalid_session_id(body: &[u8]) -> bool {
    serde_json::from_slice::<Vec<RestError>>(body)
        .is_ok_and(|errors| errors.iter().any(|e| e.error_code == "INVALID_SESSION_ID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_known_bodies() {
        let cases: &[(u16, &[u8], RestAuth)] = &[
            (
                401,
                br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
                RestAuth::SessionExpired,
            ),
            (401, b"", RestAuth::SessionExpired),
            (
                401,
                br#"[{"message":"This session is not valid for use with the REST API","errorCode":"INVALID_SESSION_ID"}]"#,
                RestAuth::NotRefreshable {
                    message: "This session is not valid for use with the REST API".into(),
                },
            ),
            (
                400,
                b"<error><exceptionCode>InvalidSessionId</exceptionCode></error>",
                RestAuth::SessionExpired,
            ),
            (403, br#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#, RestAuth::Ok),
            (200, b"[]", RestAuth::Ok),
        ];
        for (status, body, expected) in cases {
            assert_eq!(&classify(*status, body), expected, "{status}");
        }
        assert!(is_invalid_session_id(cases[0].1));
        assert!(!is_invalid_session_id(b"nope"));
    }
}
