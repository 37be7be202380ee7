//! The one scrubber for text that may carry a secret: everything sfauth puts into an error, a
//! log line or a `Debug` output and that did not come from sfauth's own string literals (a
//! server's `error_description`, a body excerpt, a REST error message, a URL) goes through
//! [`scrub`] (or [`excerpt`] for a raw body) first.
//!
//! It knows the shapes Salesforce's secrets come in, and replaces each with `[redacted]`:
//!
//! | shape | example | what is replaced |
//! |---|---|---|
//! | a named value, urlencoded or in a query | `access_token=00DLEAKED2&x=1` | the value |
//! | a named value in JSON | `"refresh_token": "5Aep861…"` | the string |
//! | a named value in XML | `<client_secret>…</client_secret>` | the element's text |
//! | an `Authorization` header | `Authorization: Basic dXNlcjpwYXNz` | scheme and credentials |
//! | a bearer credential | `Bearer 00D5e…!AQ4AQ…` | the credential |
//! | a session id | `00D5e000000AbcdE!AQ4AQ…`, also with `!` as `%21` | all of it |
//! | a JWT | `eyJhbGciOi….eyJzdWIiOi….c2ln` | all of it |
//! | a refresh token, or a piece of one | `5Aep861…` (8 characters or more) | all of it |
//! | a long random-looking run | 32+ letters and digits, mixed (a client secret, a code) | all of it |
//!
//! The named values are those of [`SECRET_NAMES`] (matched without regard to case, as whole
//! names: `token_type` is not `token`): `access_token`, `refresh_token`, `id_token`,
//! `client_secret`, `client_assertion`, `password`, `passphrase`, `assertion`, `code`,
//! `code_verifier`, `device_code`, `subject_token`, `actor_token`, `token`, `private_key`,
//! session ids (`sid`, `session_id`, `sessionId`), the camelCase spellings of the tokens,
//! `authorization`, and `sig` and `signature`. The last two are decided thus: `sig` signs URLs
//! (pre-signed links carry it as their credential), and although a token response's
//! `signature` grants nothing by itself, it is an HMAC keyed with the client secret over values
//! an observer can know (`id`, `issued_at`), so it would let anyone who reads it test guesses
//! of the secret offline.
//!
//! Org and user ids (`00D…`, `005…` without a `!`), consumer keys (`3MVG…`) and words stay
//! readable: they identify, they do not authenticate. The scrubber errs on the side of
//! hiding: a word that follows `Bearer` or `code=` is hidden even when it is not a secret.
//!
//! ```
//! use sfauth_core::redact::scrub;
//!
//! assert_eq!(scrub("access_token=00DLEAKED2&state=ok"), "access_token=[redacted]&state=ok");
//! assert_eq!(
//!     scrub("session 00D5e000000AbcdE!AQ4AQJ4kSx9 expired"),
//!     "session [redacted] expired"
//! );
//! assert_eq!(scrub("expired access/refresh token"), "expired access/refresh token");
//! ```

// Positions below are indices into a string already in memory: they are bounded by its length,
// so adding one to them cannot overflow.
#![allow(
    clippy::arithmetic_side_effects,
    reason = "string indices are bounded by the string's length"
)]

use std::borrow::Cow;
use std::ops::Range;

use crate::secret::REDACTED;

/// Names whose values are secrets, lowercase; see the [module docs](self).
pub const SECRET_NAMES: &[&str] = &[
    "access_token",
    "accesstoken",
    "refresh_token",
    "refreshtoken",
    "id_token",
    "idtoken",
    "client_secret",
    "clientsecret",
    "client_assertion",
    "password",
    "passphrase",
    "assertion",
    "code",
    "code_verifier",
    "device_code",
    "subject_token",
    "actor_token",
    "token",
    "private_key",
    "sid",
    "session_id",
    "sessionid",
    "authorization",
    "proxy-authorization",
    "sig",
    "signature",
];

/// Whether a field, parameter or header called `name` holds a secret (one of
/// [`SECRET_NAMES`], without regard to case).
///
/// ```
/// assert!(sfauth_core::redact::is_secret_name("Refresh_Token"));
/// assert!(!sfauth_core::redact::is_secret_name("token_type"));
/// ```
pub fn is_secret_name(name: &str) -> bool {
    SECRET_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// `text` with every secret-shaped part replaced by `[redacted]`; borrowed when nothing was
/// found. See the [module docs](self) for the shapes.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    named_values(bytes, &mut spans);
    bearer_credentials(bytes, &mut spans);
    session_ids(bytes, &mut spans);
    jwts(bytes, &mut spans);
    long_tokens(bytes, &mut spans);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(replace(text, spans))
}

/// Longest excerpt of a body kept in an error.
pub const EXCERPT_LEN: usize = 120;

/// A short excerpt of `body` that is safe to log: at most [`EXCERPT_LEN`] characters (then
/// `…`), control and non-ASCII characters replaced by `?`, every secret shape [`scrub`] knows
/// replaced, and, as a last layer for bodies of unknown shape, every remaining run of 16 or
/// more token-like characters (letters, digits, `!._-+/%`) replaced too. Words like
/// `invalid_grant` stay readable.
///
/// ```
/// use sfauth_core::redact::excerpt;
///
/// let body = br#"{"access_token":"00DLEAKED2","oops"#;
/// assert_eq!(excerpt(body), r#"{"access_token":"[redacted]","oops"#);
/// ```
pub fn excerpt(body: &[u8]) -> String {
    // Read a little more than is kept, so that a secret cut at the end of the window is still
    // recognised by its name or prefix.
    let window = EXCERPT_LEN * 4;
    let text: String = body
        .iter()
        .take(window)
        .map(|&b| match b {
            b' '..=b'~' => char::from(b),
            b'\n' | b'\r' | b'\t' => ' ',
            _ => '?',
        })
        .collect();
    let scrubbed = scrub(&text);
    let mut out = String::with_capacity(scrubbed.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 16 {
            out.push_str(REDACTED);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in scrubbed.chars() {
        if c.is_ascii_alphanumeric() || "!._-+/%".contains(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    // The text is ASCII (see the mapping above), so any length is a character boundary.
    if out.len() > EXCERPT_LEN {
        out.truncate(EXCERPT_LEN);
        out.push('…');
    }
    if body.len() > window && !out.ends_with('…') {
        out.push('…');
    }
    out
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Characters of a session id's part after the `!` (and of percent-encoded tokens).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-+/=%!".contains(&b)
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
        i += 1;
    }
    i
}

fn find_from(b: &[u8], from: usize, wanted: impl Fn(u8) -> bool) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|c| wanted(*c))
        .map(|p| from + p)
}

/// The secret name starting at `i`, as a whole word.
fn name_at(b: &[u8], i: usize) -> Option<&'static str> {
    if i > 0 && b.get(i - 1).copied().is_some_and(is_name_char) {
        return None;
    }
    SECRET_NAMES.iter().copied().find(|name| {
        let end = i + name.len();
        b.get(i..end)
            .is_some_and(|word| word.eq_ignore_ascii_case(name.as_bytes()))
            && !b.get(end).copied().is_some_and(is_name_char)
    })
}

/// Values of [`SECRET_NAMES`] in urlencoded, query, JSON, XML and `name: value` text.
fn named_values(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while i < b.len() {
        match name_at(b, i) {
            Some(name) => {
                let after = i + name.len();
                match value_after_name(b, i, after, name) {
                    Some(value) => {
                        i = value.end.max(after);
                        if !value.is_empty() {
                            spans.push(value);
                        }
                    }
                    None => i = after,
                }
            }
            None => i += 1,
        }
    }
}

fn value_after_name(b: &[u8], start: usize, after: usize, name: &str) -> Option<Range<usize>> {
    let before = start.checked_sub(1).and_then(|p| b.get(p)).copied();
    if before == Some(b'<') {
        // `<name>value</name>`, or `<name attr="…">value</name>`; `<name/>` has none.
        let open_end = match b.get(after)? {
            b'>' => after,
            c if c.is_ascii_whitespace() => find_from(b, after, |c| c == b'>')?,
            _ => return None,
        };
        if b.get(open_end.checked_sub(1)?) == Some(&b'/') {
            return None;
        }
        let value = open_end + 1;
        let end = find_from(b, value, |c| c == b'<').unwrap_or(b.len());
        return Some(value..end);
    }
    let mut j = after;
    // A quoted name, as in JSON: `"name"`, or `\"name\"` in JSON inside a string.
    let mut name_quoted = false;
    if matches!(before, Some(b'"' | b'\'')) {
        if b.get(j) == before.as_ref() {
            j += 1;
            name_quoted = true;
        } else if b.get(j) == Some(&b'\\') && b.get(j + 1) == before.as_ref() {
            j += 2;
            name_quoted = true;
        }
    }
    j = skip_spaces(b, j);
    let separator = *b.get(j)?;
    if separator != b'=' && separator != b':' {
        return None;
    }
    j = skip_spaces(b, j + 1);
    let header = name.ends_with("authorization");
    match b.get(j..) {
        Some([b'\\', quote @ (b'"' | b'\''), ..]) => {
            let value = j + 2;
            let end = find_from(b, value, |c| c == b'\\' || c == *quote).unwrap_or(b.len());
            Some(value..end)
        }
        Some([quote @ (b'"' | b'\''), ..]) => {
            let value = j + 1;
            let mut k = value;
            while let Some(&c) = b.get(k) {
                if c == b'\\' {
                    k += 2;
                } else if c == *quote {
                    break;
                } else {
                    k += 1;
                }
            }
            Some(value..k.min(b.len()))
        }
        // In prose, `code: 400` is more likely a word than a secret; a `:` counts only after a
        // quoted name (JSON) or for a header, whose line is its value.
        _ if separator == b':' && !name_quoted && !header => None,
        _ if header => {
            let end = find_from(b, j, |c| b"\r\n&\"'<>,".contains(&c)).unwrap_or(b.len());
            Some(j..end)
        }
        _ => {
            let end = find_from(b, j, |c| {
                c.is_ascii_whitespace() || b"&\"'<>\\".contains(&c)
            })
            .unwrap_or(b.len());
            Some(j..end)
        }
    }
}

/// The credential after `Bearer`, wherever it appears.
fn bearer_credentials(b: &[u8], spans: &mut Vec<Range<usize>>) {
    const BEARER: &[u8] = b"bearer";
    let mut i = 0;
    while let Some(at) = find_from(b, i, |c| c == b'b' || c == b'B') {
        i = at + 1;
        let end = at + BEARER.len();
        let word = b.get(at..end);
        let whole = !(at > 0 && b.get(at - 1).copied().is_some_and(is_name_char));
        if !whole || !word.is_some_and(|w| w.eq_ignore_ascii_case(BEARER)) {
            continue;
        }
        let value = skip_spaces(b, end);
        if value == end {
            continue;
        }
        let stop = find_from(b, value, |c| {
            c.is_ascii_whitespace() || b"\"'<>&,".contains(&c)
        })
        .unwrap_or(b.len());
        if stop > value {
            spans.push(value..stop);
            i = stop;
        }
    }
}

/// `00D` + 9 to 20 letters or digits + `!` (or `%21`) + the rest.
fn session_ids(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while let Some(at) = find_from(b, i, |c| c == b'0') {
        i = at + 1;
        if b.get(at..at + 3) != Some(b"00D")
            || (at > 0 && b.get(at - 1).is_some_and(u8::is_ascii_alphanumeric))
        {
            continue;
        }
        let id_end = find_from(b, at + 3, |c| !c.is_ascii_alphanumeric()).unwrap_or(b.len());
        if !(9..=20).contains(&(id_end - at - 3)) {
            continue;
        }
        let rest = match b.get(id_end..) {
            Some([b'!', ..]) => id_end + 1,
            Some([b'%', b'2', b'1', ..]) => id_end + 3,
            _ => continue,
        };
        let end = find_from(b, rest, |c| !is_token_char(c)).unwrap_or(b.len());
        if end > rest {
            spans.push(at..end);
            i = end;
        }
    }
}

/// Three or more base64url segments joined by dots, the first starting `eyJ` (`{"`).
fn jwts(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while let Some(at) = find_from(b, i, |c| c == b'e') {
        i = at + 1;
        if b.get(at..at + 3) != Some(b"eyJ")
            || (at > 0
                && b.get(at - 1)
                    .is_some_and(|c| is_base64url(*c) || *c == b'.'))
        {
            continue;
        }
        let segment_end = |from: usize| find_from(b, from, |c| !is_base64url(c)).unwrap_or(b.len());
        let mut end = segment_end(at);
        let mut dots = 0;
        while b.get(end) == Some(&b'.') {
            let next = segment_end(end + 1);
            // The third segment (the signature) may be empty, for an unsigned token.
            if next == end + 1 && dots != 1 {
                break;
            }
            dots += 1;
            end = next;
        }
        if dots >= 2 {
            spans.push(at..end);
            i = end;
        }
    }
}

/// Refresh tokens (`5Aep…`) and long random-looking runs.
fn long_tokens(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let is_run_char = |c: u8| c.is_ascii_alphanumeric() || b"_-+%~".contains(&c);
    let mut i = 0;
    while let Some(start) = find_from(b, i, is_run_char) {
        let end = find_from(b, start, |c| !is_run_char(c)).unwrap_or(b.len());
        i = end;
        let Some(run) = b.get(start..end) else {
            continue;
        };
        // A refresh token may hold dots: take them along from `5Aep`. Even a short piece of one
        // is taken (Salesforce's refresh tokens start `5Aep861`; no word does): an error that
        // quotes a few characters of a token quotes them from a secret.
        if run.starts_with(b"5Aep") {
            let whole = find_from(b, start, |c| !(is_run_char(c) || c == b'.')).unwrap_or(b.len());
            if whole.saturating_sub(start) >= 8 {
                spans.push(start..whole);
                i = whole;
                continue;
            }
        }
        let random = run.len() >= 32
            && run.iter().any(u8::is_ascii_digit)
            && run.iter().any(u8::is_ascii_alphabetic)
            && !run.starts_with(b"3MVG");
        if random {
            spans.push(start..end);
        }
    }
}

/// Writes `value` for `Debug` as `name` followed by its JSON, scrubbed: for types that hold
/// what a server sent (userinfo, identity, introspection, ID token claims), whose every field
/// could echo a secret. JSON rather than Rust's struct syntax so that the scrubber sees the
/// field names of its known shapes.
pub(crate) fn debug_scrubbed<T: serde::Serialize>(
    name: &str,
    value: &T,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    match serde_json::to_string(value) {
        Ok(json) => write!(f, "{name} {}", scrub(&json)),
        Err(_) => write!(f, "{name} {{ .. }}"),
    }
}

/// `text` with each span replaced by [`REDACTED`]; overlapping or touching spans become one.
fn replace(text: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.sort_by_key(|span| span.start);
    let mut out = String::with_capacity(text.len());
    // How much of `text` is accounted for, and whether a redaction was written yet (a span
    // that starts where the last one ended joins it).
    let mut copied = 0;
    let mut redacting = false;
    for span in spans {
        // Spans start and end at ASCII characters; moving to a character boundary is a
        // safety net that only ever widens a span.
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if end <= copied {
            continue;
        }
        if start > copied || !redacting {
            out.push_str(text.get(copied..start.max(copied)).unwrap_or_default());
            out.push_str(REDACTED);
        }
        copied = end;
        redacting = true;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "tests build their inputs from small literals"
)]
mod tests {
    use super::*;

    const SESSION: &str = "00D5e000000AbcdE!AQ4AQJ4kSx9.zzLEAKa_b";

    #[test]
    fn secrets_are_replaced_in_every_shape() {
        let cases: &[(&str, &str)] = &[
            // The leak of issue 11: a short value after its name.
            ("access_token=00DLEAKED2", "access_token=[redacted]"),
            (
                "grant_type=refresh_token&refresh_token=5Aep861abc&client_id=3MVG9.x",
                "grant_type=refresh_token&refresh_token=[redacted]&client_id=3MVG9.x",
            ),
            (
                "GET https://acme.my.salesforce.com/cb?code=aPrx4sgo%3D%3D&state=abc#x",
                "GET https://acme.my.salesforce.com/cb?code=[redacted]&state=abc#x",
            ),
            ("/revoke?token=5Aep861Q", "/revoke?token=[redacted]"),
            // A bare piece of a refresh token, with no name in front of it.
            (
                "token 5Aep861TSESvW is not valid",
                "token [redacted] is not valid",
            ),
            ("ACCESS_TOKEN=xyz; Path=/", "ACCESS_TOKEN=[redacted] Path=/"),
            (
                "client_secret=s%26e%3Dc+r%25t&x=1",
                "client_secret=[redacted]&x=1",
            ),
            ("code=&state=x", "code=&state=x"),
            (
                "code_verifier=abc&subject_token=def&assertion=ghi&password=p@ss",
                "code_verifier=[redacted]&subject_token=[redacted]&assertion=[redacted]&password=[redacted]",
            ),
            ("sv=2020&sig=abc%2Fdef&se=1", "sv=2020&sig=[redacted]&se=1"),
            ("id=x&signature=pJLaaF3SzF%3D", "id=x&signature=[redacted]"),
            (
                r#"{"access_token": "00DLEAKED2", "token_type":"Bearer"}"#,
                r#"{"access_token": "[redacted]", "token_type":"Bearer"}"#,
            ),
            (
                r#"{"password":"a\"b c","x":1}"#,
                r#"{"password":"[redacted]","x":1}"#,
            ),
            (
                r#"{\"refresh_token\":\"5Aep86\",\"a\":1}"#,
                r#"{\"refresh_token\":\"[redacted]\",\"a\":1}"#,
            ),
            (
                "<OAuth><refresh_token>5Aep</refresh_token><scope>api</scope></OAuth>",
                "<OAuth><refresh_token>[redacted]</refresh_token><scope>api</scope></OAuth>",
            ),
            (
                r#"<client_secret type="x">s3</client_secret><code/>"#,
                r#"<client_secret type="x">[redacted]</client_secret><code/>"#,
            ),
            (r#"password = "hunter2""#, r#"password = "[redacted]""#),
            (
                "Authorization: Bearer 00Dxx!SECRET\r\nHost: x",
                "Authorization: [redacted]\r\nHost: x",
            ),
            (
                "authorization: Basic dXNlcjpwYXNz",
                "authorization: [redacted]",
            ),
            (
                r#"{"authorization": "Bearer tok", "accept": "x"}"#,
                r#"{"authorization": "[redacted]", "accept": "x"}"#,
            ),
            (
                "sent Bearer abc.def and failed",
                "sent Bearer [redacted] and failed",
            ),
            // A session id anywhere, as Salesforce spells it or percent-encoded.
            (
                "invalid session 00D5e000000AbcdE!AQ4AQJ4kSx9.zz for user",
                "invalid session [redacted] for user",
            ),
            ("sid 00D5e000000Abcd%21AQ4AQ%2Bx end", "sid [redacted] end"),
            (
                "id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end",
                "id_token [redacted] end",
            ),
            (
                "jwt eyJhbGciOiJub25lIn0.eyJleHAiOjF9. end",
                "jwt [redacted] end",
            ),
            (
                "refresh 5Aep861TSESvWeug_xvFHRBTTbf_YrTWg.EyjBJrn failed",
                "refresh [redacted] failed",
            ),
            (
                "secret 3F9A5C0E4B7D2A8E1F6C9B0D3E5A7C2F4B8D1E6A9C3F5B7D0E2A4C6F8B1D3E5A!",
                "secret [redacted]!",
            ),
            (
                "mot de passe: é password=héllo wörld",
                "mot de passe: é password=[redacted] wörld",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub(input), *expected, "{input}");
        }
    }

    #[test]
    fn words_ids_and_urls_stay_readable() {
        for text in [
            "expired access/refresh token",
            "token request is already being processed",
            "invalid_client_credentials",
            "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK",
            "3MVG9lKcPoNINVBIPJjdw1J9LLM82HnFVVX19KY1uA5mu0QqEWhqKpoW3svG3X4TPNU6",
            "grant_type=refresh_token&token_type=Bearer&format=json",
            r#"{"token_type":"Bearer","scope":"api refresh_token"}"#,
            "status code: 400",
            "the token response signature does not match its id and issued_at",
            "refusing plain http to non-loopback host login.salesforce.com: use https",
            "",
        ] {
            assert!(
                matches!(scrub(text), Cow::Borrowed(_)),
                "{text} -> {}",
                scrub(text)
            );
        }
    }

    #[test]
    fn a_secret_in_any_context_is_gone() {
        let contexts = [
            "access_token={}",
            "x=1&refresh_token={}&y=2",
            r#"{"client_secret":"{}"}"#,
            "<password>{}</password>",
            "Authorization: Bearer {}",
            "?code={}#state",
            "subject_token = '{}'",
        ];
        for secret in ["00DLEAKED2", "p4ss w0rd", "Zq", SESSION, "5Aep861Q.x"] {
            for context in contexts {
                let text = context.replace("{}", secret);
                let out = scrub(&text);
                assert!(!out.contains(secret), "{text} -> {out}");
                assert!(out.contains(REDACTED), "{text} -> {out}");
            }
        }
    }

    #[test]
    fn excerpt_scrubs_then_truncates() {
        let long = format!("<html>{}</html>", "maintenance ".repeat(100));
        let out = excerpt(long.as_bytes());
        assert!(out.chars().count() <= EXCERPT_LEN + 1, "{out}");
        assert!(out.ends_with('…'));
        assert_eq!(excerpt(b"error=invalid_grant"), "error=invalid_grant");
        assert_eq!(
            excerpt(b"access_token=00D5e000000Abcd%21AQ4AQ"),
            "access_token=[redacted]"
        );
        assert_eq!(
            excerpt(b"access_token=00DLEAKED2&x=1"),
            "access_token=[redacted]&x=1"
        );
        assert_eq!(excerpt(b"\x00\xff"), "??");
        // The long-run layer still catches what has no known shape.
        assert_eq!(
            excerpt(b"<p>abcdefghijklmnopqrstuvwxyz</p>"),
            "<p>[redacted]</p>"
        );
    }

    #[test]
    fn names_are_whole_words() {
        assert!(is_secret_name("access_token"));
        assert!(is_secret_name("Authorization"));
        assert!(!is_secret_name("grant_type"));
        assert!(!is_secret_name("error_code"));
        assert_eq!(scrub("error_code=X1"), "error_code=X1");
        assert_eq!(scrub("passwordless=yes"), "passwordless=yes");
    }
}
