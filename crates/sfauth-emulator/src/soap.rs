//! The partner SOAP API's session calls at `/services/Soap/u/{version}[/{orgId}]`: `login()`
//! (retired: API 64.0 and earlier, and only where the org allows it), `getUserInfo()` and
//! `logout()`, with Salesforce's SOAP faults, among them the dead session's
//! `INVALID_SESSION_ID`. Enough for clients still on SOAP login (simple-salesforce's default,
//! older jsforce) to run against the emulator, and to rehearse their move to OAuth.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::Event;

use crate::context::Shared;
use crate::crypto;
use crate::ids;
use crate::state::{State, User};

const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const PARTNER_NS: &str = "urn:partner.soap.sforce.com";
const FAULT_NS: &str = "urn:fault.partner.soap.sforce.com";
/// The last API version whose WSDL has `login()`.
const LAST_LOGIN_VERSION: u32 = 64;
/// The oldest API version still served (21.0 to 30.0 were retired in Summer '25).
const OLDEST_VERSION: u32 = 31;

/// The scopes a SOAP session carries: a session id from `login()` works wherever an OAuth
/// access token with full access does.
const SESSION_SCOPES: [&str; 3] = ["api", "web", "full"];

/// What the request asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Call {
    /// Local name of the first element of the body: the operation.
    operation: String,
    username: String,
    password: String,
    /// `SessionHeader/sessionId`.
    session_id: Option<String>,
}

/// A SOAP fault: `faultcode` (`soapenv:Client`, `sf:INVALID_LOGIN`, ...), `faultstring`, and
/// the typed `detail` Salesforce adds for its own codes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    code: String,
    message: String,
    /// `(fault type, exception code, exception message)` for the `detail` element.
    detail: Option<(&'static str, &'static str, String)>,
}

impl Fault {
    fn client(message: impl Into<String>) -> Self {
        Self {
            code: "soapenv:Client".to_owned(),
            message: message.into(),
            detail: None,
        }
    }

    /// One of Salesforce's exception codes, as `sf:CODE` with `CODE: message`.
    fn sf(kind: &'static str, code: &'static str, message: &str) -> Self {
        Self {
            code: format!("sf:{code}"),
            message: format!("{code}: {message}"),
            detail: Some((kind, code, message.to_owned())),
        }
    }

    fn invalid_login() -> Self {
        Self::sf(
            "LoginFault",
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
        )
    }

    fn invalid_session() -> Self {
        Self::sf(
            "UnexpectedErrorFault",
            "INVALID_SESSION_ID",
            "Invalid Session ID found in SessionHeader: Illegal Session",
        )
    }

    fn no_operation(operation: &str) -> Self {
        Self::client(format!(
            "No operation available for request {{{PARTNER_NS}}}{operation}, please check the WSDL for the service."
        ))
    }

    fn respond(&self) -> Response {
        let detail = self
            .detail
            .as_ref()
            .map(|(kind, code, message)| {
                format!(
                    "<detail><sf:{kind} xsi:type=\"sf:{kind}\"><sf:exceptionCode>{code}</sf:exceptionCode>\
                     <sf:exceptionMessage>{}</sf:exceptionMessage></sf:{kind}></detail>",
                    escape(message.as_str())
                )
            })
            .unwrap_or_default();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope xmlns:soapenv=\"{ENVELOPE_NS}\" \
             xmlns:sf=\"{FAULT_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
             <soapenv:Fault><faultcode>{}</faultcode><faultstring>{}</faultstring>{detail}</soapenv:Fault>\
             </soapenv:Body></soapenv:Envelope>",
            escape(self.code.as_str()),
            escape(self.message.as_str()),
        );
        xml_response(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    r
}

/// A successful answer: `<{operation}Response>` holding `inner`.
fn success(operation: &str, inner: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope xmlns:soapenv=\"{ENVELOPE_NS}\" \
         xmlns=\"{PARTNER_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
         <{operation}Response>{inner}</{operation}Response></soapenv:Body></soapenv:Envelope>"
    );
    xml_response(StatusCode::OK, body)
}

/// `<name>text</name>` with the text escaped.
fn element(name: &str, text: &str) -> String {
    format!("<{name}>{}</{name}>", escape(text))
}

/// Reads the envelope: the operation, `login`'s arguments and the session header.
fn parse(body: &[u8]) -> Result<Call, Fault> {
    let unreadable =
        |e: &dyn std::fmt::Display| Fault::client(format!("Unable to parse the request: {e}"));
    let text = std::str::from_utf8(body).map_err(|e| unreadable(&e))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut call = Call::default();
    let mut stack: Vec<String> = Vec::new();
    let mut saw_envelope = false;
    loop {
        let event = reader.read_event().map_err(|e| unreadable(&e))?;
        let (name, empty) = match &event {
            Event::Start(e) => (Some(e.local_name()), false),
            Event::Empty(e) => (Some(e.local_name()), true),
            _ => (None, false),
        };
        if let Some(name) = name {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            match (stack.as_slice(), name.as_str()) {
                ([], "Envelope") => saw_envelope = true,
                ([], other) => {
                    return Err(Fault::client(format!(
                        "Unexpected root element {other}, expected a SOAP Envelope"
                    )));
                }
                ([_, body], op) if body == "Body" && call.operation.is_empty() => {
                    call.operation = op.to_owned();
                }
                _ => {}
            }
            if !empty {
                stack.push(name);
            }
            continue;
        }
        match event {
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(_) | Event::CData(_) => {
                let value = match &event {
                    Event::Text(t) => t.unescape().map_err(|e| unreadable(&e))?.into_owned(),
                    Event::CData(c) => String::from_utf8_lossy(c.as_ref()).into_owned(),
                    _ => String::new(),
                };
                match stack.as_slice() {
                    [_, section, op, field] if section == "Body" && *op == call.operation => {
                        match field.as_str() {
                            "username" => call.username = value,
                            "password" => call.password = value,
                            _ => {}
                        }
                    }
                    [_, section, header, field]
                        if section == "Header"
                            && header == "SessionHeader"
                            && field == "sessionId" =>
                    {
                        call.session_id = Some(value.trim().to_owned());
                    }
                    _ => {}
                }
            }
            Event::Eof if stack.is_empty() => break,
            Event::Eof => return Err(unreadable(&"the envelope is not closed")),
            _ => {}
        }
    }
    if !saw_envelope || call.operation.is_empty() {
        return Err(Fault::client(
            "Unable to parse the request: no operation in the SOAP Body",
        ));
    }
    Ok(call)
}

/// `vNN.N` in a URL is `NN.N` here; the major number of a well-formed version.
fn major(version: &str) -> Option<u32> {
    let (major, minor) = version.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (all_digits(major) && minor == "0")
        .then(|| major.parse().ok())
        .flatten()
}

/// `POST /services/Soap/u/{version}`.
pub(crate) async fn partner(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    body: Bytes,
) -> Response {
    handle(&shared, &version, &body)
}

/// `POST /services/Soap/u/{version}/{orgId}`: the `serverUrl` a login returned.
pub(crate) async fn partner_org(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((version, _org)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    handle(&shared, &version, &body)
}

fn handle(shared: &Shared, version: &str, body: &[u8]) -> Response {
    let Some(major) = major(version).filter(|m| *m >= OLDEST_VERSION) else {
        return Fault::sf(
            "UnexpectedErrorFault",
            "UNSUPPORTED_API_VERSION",
            "Invalid Api version specified on URL",
        )
        .respond();
    };
    let call = match parse(body) {
        Ok(call) => call,
        Err(fault) => return fault.respond(),
    };
    let result = if call.operation == "login" {
        if major > LAST_LOGIN_VERSION {
            // login() is not in the WSDL of API 65.0 and later (UNCONFIRMED wording: what a
            // WSDL-driven server says of an operation it does not have).
            Err(Fault::no_operation("login"))
        } else {
            login(shared, version, &call)
        }
    } else {
        with_session(shared, version, &call)
    };
    result.unwrap_or_else(|fault| fault.respond())
}

fn login(shared: &Shared, version: &str, call: &Call) -> Result<Response, Fault> {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let user = st
        .user_by_name(call.username.trim())
        .cloned()
        .ok_or_else(Fault::invalid_login)?;
    let org_allows = st.org(&user.org_id).is_some_and(|o| o.soap_login);
    if !org_allows {
        // UNCONFIRMED: the fault of an org where "Enable SOAP API login()" is off.
        return Err(Fault::sf(
            "UnexpectedErrorFault",
            "INVALID_OPERATION",
            "SOAP API login() is disabled in this org; use OAuth",
        ));
    }
    let with_token = format!("{}{}", user.config.password, user.config.security_token);
    if !crypto::secret_eq(&call.password, &with_token) {
        if !user.config.security_token.is_empty()
            && crypto::secret_eq(&call.password, &user.config.password)
        {
            return Err(Fault::sf(
                "LoginFault",
                "LOGIN_MUST_USE_SECURITY_TOKEN",
                "Invalid username, password, security token; or user locked out. Are you at a new location? When accessing Salesforce from outside of your company's trusted networks, you must add a security token to your password to log in.",
            ));
        }
        return Err(Fault::invalid_login());
    }
    // A frozen or inactive user, or a locked org, is "locked out" to SOAP.
    st.check_user(&user.id)
        .map_err(|_| Fault::invalid_login())?;
    // UNCONFIRMED: the fault code of a login over the rate limit (Login History calls it
    // LOGIN_RATE_EXCEEDED).
    st.count_login(&user.id, now)
        .map_err(|_| Fault::sf("LoginFault", "LOGIN_RATE_EXCEEDED", "Login rate exceeded"))?;
    let scopes = SESSION_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    let issued = st.issue("", &user.id, scopes, false, now);
    let instance = st.instance_url(&user.org_id);
    let org15 = ids::to_15(&user.org_id);
    let sandbox = st.org(&user.org_id).is_some_and(|o| o.sandbox);
    let result = format!(
        "<result>{}{}{}{}{}{}<userInfo>{}</userInfo></result>",
        element(
            "metadataServerUrl",
            &format!("{instance}/services/Soap/m/{version}/{org15}")
        ),
        element("passwordExpired", "false"),
        element("sandbox", if sandbox { "true" } else { "false" }),
        element(
            "serverUrl",
            &format!("{instance}/services/Soap/u/{version}/{org15}")
        ),
        element("sessionId", &issued.access_token),
        element("userId", &user.id),
        user_info(&st, &user),
    );
    Ok(success("login", &result))
}

/// Every other call needs a live session in `SessionHeader`.
fn with_session(shared: &Shared, _version: &str, call: &Call) -> Result<Response, Fault> {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let session = call.session_id.as_deref().unwrap_or("");
    let user_id = st
        .live_access(session, now)
        .map(|at| at.user_id.clone())
        .ok_or_else(Fault::invalid_session)?;
    st.touch_access(session, now);
    let user = st
        .user(&user_id)
        .cloned()
        .ok_or_else(Fault::invalid_session)?;
    match call.operation.as_str() {
        "getUserInfo" => Ok(success(
            "getUserInfo",
            &format!("<result>{}</result>", user_info(&st, &user)),
        )),
        "logout" => {
            st.revoke_token(session);
            Ok(success("logout", ""))
        }
        other => Err(Fault::no_operation(other)),
    }
}

/// `GetUserInfoResult`, in the WSDL's element order.
fn user_info(st: &State, user: &User) -> String {
    let org_name = st
        .org(&user.org_id)
        .map(|o| o.name.clone())
        .unwrap_or_default();
    let email = user
        .config
        .email
        .clone()
        .unwrap_or_else(|| user.config.username.clone());
    let full_name = format!("{} {}", user.config.first_name, user.config.last_name);
    [
        ("accessibilityMode", "false".to_owned()),
        ("currencySymbol", "$".to_owned()),
        ("orgAttachmentFileSizeLimit", "5242880".to_owned()),
        ("orgDefaultCurrencyIsoCode", "USD".to_owned()),
        ("orgDisallowHtmlAttachments", "false".to_owned()),
        ("orgHasPersonAccounts", "false".to_owned()),
        ("organizationId", user.org_id.clone()),
        ("organizationMultiCurrency", "false".to_owned()),
        ("organizationName", org_name),
        ("sessionSecondsValid", "7200".to_owned()),
        ("userEmail", email),
        ("userFullName", full_name),
        ("userId", user.id.clone()),
        ("userLanguage", "en_US".to_owned()),
        ("userLocale", "en_US".to_owned()),
        ("userName", user.config.username.clone()),
        ("userTimeZone", "America/Los_Angeles".to_owned()),
        ("userType", "Standard".to_owned()),
        ("userUiSkin", "Theme3".to_owned()),
    ]
    .iter()
    .map(|(name, value)| element(name, value))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_login_and_session_header() {
        let login = r#"<?xml version="1.0"?><se:Envelope xmlns:se="http://schemas.xmlsoap.org/soap/envelope/">
            <se:Header/><se:Body><login xmlns="urn:partner.soap.sforce.com">
            <username>a@b.test</username><password>p&amp;w&lt;rd</password></login></se:Body></se:Envelope>"#;
        let call = parse(login.as_bytes()).unwrap();
        assert_eq!(
            call,
            Call {
                operation: "login".to_owned(),
                username: "a@b.test".to_owned(),
                password: "p&w<rd".to_owned(),
                session_id: None,
            }
        );
        let info = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:partner.soap.sforce.com">
            <soapenv:Header><urn:SessionHeader><urn:sessionId>00Dx!AQ</urn:sessionId></urn:SessionHeader></soapenv:Header>
            <soapenv:Body><urn:getUserInfo/></soapenv:Body></soapenv:Envelope>"#;
        let call = parse(info.as_bytes()).unwrap();
        assert_eq!(call.operation, "getUserInfo");
        assert_eq!(call.session_id.as_deref(), Some("00Dx!AQ"));
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        for bad in [
            "",
            "not xml",
            "<html><body/></html>",
            "<Envelope><Body></Body></Envelope>",
            "<Envelope><Body><login>",
            "\u{0}\u{1}",
        ] {
            let fault = parse(bad.as_bytes()).unwrap_err();
            assert_eq!(fault.code, "soapenv:Client", "{bad:?}");
        }
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn versions() {
        for (v, want) in [
            ("64.0", Some(64)),
            ("31.0", Some(31)),
            ("65.0", Some(65)),
            ("v64.0", None),
            ("64.1", None),
            ("64", None),
            ("", None),
            ("-1.0", None),
        ] {
            assert_eq!(major(v), want, "{v}");
        }
    }

    #[test]
    fn faults_are_escaped() {
        let fault = Fault::client("a <b> & \"c\"");
        let response = fault.respond();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(element("x", "<&>"), "<x>&lt;&amp;&gt;</x>");
    }
}
