//! A minimal SAML 2.0 assertion reader for the SAML bearer flow: issuer, subject, audiences and
//! expiry. The XML signature is not verified (see the crate docs).

use quick_xml::Reader;
use quick_xml::events::Event;

/// The parts of an assertion the bearer flow checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Assertion {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) audiences: Vec<String>,
    /// `Conditions/@NotOnOrAfter`, in seconds since the epoch.
    pub(crate) not_on_or_after_s: Option<i64>,
}

/// Why an assertion could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SamlError(pub(crate) String);

/// Decodes base64 (standard or URL-safe) and parses the assertion.
pub(crate) fn parse_base64(encoded: &str) -> Result<Assertion, SamlError> {
    let bytes = crate::crypto::decode_base64_lenient(encoded)
        .ok_or_else(|| SamlError("not base64".to_owned()))?;
    let xml = String::from_utf8(bytes).map_err(|_| SamlError("not UTF-8".to_owned()))?;
    parse(&xml)
}

/// Parses an assertion (or a response wrapping one).
pub(crate) fn parse(xml: &str) -> Result<Assertion, SamlError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut out = Assertion::default();
    let mut stack: Vec<String> = Vec::new();
    let mut saw_assertion = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Assertion" {
                    saw_assertion = true;
                }
                if name == "Conditions"
                    && let Ok(Some(attr)) = e.try_get_attribute("NotOnOrAfter")
                {
                    let value = attr
                        .unescape_value()
                        .map_err(|e| SamlError(e.to_string()))?;
                    out.not_on_or_after_s = parse_xml_datetime(&value);
                }
                stack.push(name);
            }
            Ok(Event::End(_)) => {
                stack.pop();
            }
            Ok(Event::Text(t)) => {
                let text = t
                    .unescape()
                    .map_err(|e| SamlError(e.to_string()))?
                    .trim()
                    .to_owned();
                let current = stack.last().map(String::as_str);
                let parent = stack
                    .len()
                    .checked_sub(2)
                    .and_then(|i| stack.get(i))
                    .map(String::as_str);
                match (parent, current) {
                    (Some("Assertion"), Some("Issuer")) => out.issuer = text,
                    (Some("Subject"), Some("NameID")) => out.subject = text,
                    (Some("AudienceRestriction"), Some("Audience")) => out.audiences.push(text),
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(SamlError(e.to_string())),
        }
    }
    if !saw_assertion || out.issuer.is_empty() || out.subject.is_empty() {
        return Err(SamlError(
            "no assertion with an issuer and a subject".to_owned(),
        ));
    }
    Ok(out)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (the UTC form SAML uses) into epoch seconds.
pub(crate) fn parse_xml_datetime(s: &str) -> Option<i64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm). Every field is the assertion's, so every
    // step is checked: a date too far out for i64 seconds reads as no date at all.
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y.div_euclid(400);
    let yoe = y.checked_sub(era.checked_mul(400)?)?;
    let mp = m.checked_add(9)? % 12;
    let doy = (mp.checked_mul(153)?.checked_add(2)? / 5)
        .checked_add(day)?
        .checked_sub(1)?;
    let doe = yoe
        .checked_mul(365)?
        .checked_add(yoe / 4)?
        .checked_sub(yoe / 100)?
        .checked_add(doy)?;
    let days = era
        .checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)?;
    days.checked_mul(86_400)?
        .checked_add(hh.checked_mul(3600)?)?
        .checked_add(mm.checked_mul(60)?)?
        .checked_add(ss)
}

/// Formats epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "secs / 86_400 keeps every intermediate within 2^47 of zero, far inside i64"
)]
pub(crate) fn format_xml_datetime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An unsigned assertion with the given fields (for tests and examples).
pub(crate) fn unsigned_assertion(
    issuer: &str,
    subject: &str,
    audience: &str,
    not_on_or_after_s: i64,
) -> String {
    let esc = crate::format::xml_escape;
    format!(
        r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_emu" Version="2.0" IssueInstant="{now}"><saml:Issuer>{issuer}</saml:Issuer><saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">{subject}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{exp}" Recipient="{audience}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{now}" NotOnOrAfter="{exp}"><saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions></saml:Assertion>"#,
        now = format_xml_datetime(not_on_or_after_s.saturating_sub(300)),
        exp = format_xml_datetime(not_on_or_after_s),
        issuer = esc(issuer),
        subject = esc(subject),
        audience = esc(audience),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_round_trip() {
        for (text, secs) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-11-24T09:17:47Z", 1_795_511_867),
            ("2000-02-29T12:00:00Z", 951_825_600),
        ] {
            assert_eq!(parse_xml_datetime(text), Some(secs), "{text}");
            assert_eq!(format_xml_datetime(secs), text);
        }
        assert_eq!(
            parse_xml_datetime("2026-11-24T09:17:47.123Z"),
            Some(1_795_511_867)
        );
        assert_eq!(parse_xml_datetime("yesterday"), None);
    }

    #[test]
    fn out_of_range_datetimes_are_no_date_and_never_panic() {
        let huge = i64::MAX.to_string();
        for text in [
            format!("{huge}-12-31T23:59:59Z"),
            format!("-{huge}-01-01T00:00:00Z"),
            format!("2026-{huge}-01T00:00:00Z"),
            format!("2026-01-{huge}T00:00:00Z"),
            format!("2026-01-01T{huge}:00:00Z"),
            format!("2026-01-01T00:{huge}:00Z"),
            format!("2026-01-01T00:00:{huge}Z"),
            "292277026596-12-04T15:30:08Z".to_owned(),
        ] {
            assert_eq!(parse_xml_datetime(&text), None, "{text}");
        }
        // The far ends of the range still format, and the last second that fits still parses.
        for secs in [i64::MAX, i64::MIN, 0] {
            let text = format_xml_datetime(secs);
            assert!(text.ends_with('Z'), "{text}");
        }
        assert_eq!(
            parse_xml_datetime(&format_xml_datetime(i64::MAX)),
            Some(i64::MAX)
        );
        assert_eq!(
            parse_xml_datetime("9999-12-31T23:59:59Z"),
            Some(253_402_300_799)
        );
        let xml = unsigned_assertion("cid", "a@b.c", "aud", i64::MIN);
        assert!(parse(&xml).is_ok());
    }

    #[test]
    fn reads_the_checked_fields() {
        let xml = unsigned_assertion("cid", "a@b.c", "https://login.salesforce.com", 1_000_000);
        let a = parse(&xml).unwrap();
        assert_eq!(a.issuer, "cid");
        assert_eq!(a.subject, "a@b.c");
        assert_eq!(a.audiences, vec!["https://login.salesforce.com"]);
        assert_eq!(a.not_on_or_after_s, Some(1_000_000));
        assert!(parse("<foo/>").is_err());
        assert!(parse("<saml:Assertion").is_err());
    }
}
