//! Any REST API response body, with any status: classified, never a panic, and by the rules
//! the `rest` module documents: only a 401 (or Bulk's 400 `InvalidSessionId`) is about the
//! session, a 401 is never read as fine, and the message of a 401 a refresh cannot fix is
//! Salesforce's own, cut to 200 characters and scrubbed of secrets.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfauth_core::rest::{RestAuth, classify, is_invalid_session_id};

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    // Half the inputs get one of the statuses the classifier looks at, half any status at all.
    let status = match u16::from_le_bytes(*status) {
        raw if raw & 1 == 0 => [200, 400, 401, 403, 500][usize::from(raw >> 1) % 5],
        raw => raw >> 1,
    };
    let class = classify(status, body);
    assert_eq!(
        classify(status, body),
        class,
        "classify is not a function of its input"
    );
    match status {
        401 => match &class {
            RestAuth::Ok => panic!("a 401 is classified as fine"),
            RestAuth::SessionExpired => {}
            RestAuth::NotRefreshable { message } => {
                // Cut to 200 characters, then scrubbed: what is left around each `[redacted]`
                // is Salesforce's own text.
                let body = String::from_utf8_lossy(body);
                for part in message.split(sfauth_core::secret::REDACTED) {
                    assert!(
                        part.chars().count() <= 200,
                        "a message longer than 200 characters"
                    );
                    assert!(
                        body.contains(part) || body.contains('\\'),
                        "a message that is not in the body: {message:?}"
                    );
                }
            }
            other => panic!("an unknown classification: {other:?}"),
        },
        400 => {
            let bulk = body.windows(16).any(|w| w == b"InvalidSessionId");
            let expected = if bulk {
                RestAuth::SessionExpired
            } else {
                RestAuth::Ok
            };
            assert_eq!(class, expected, "a 400 is classified against the Bulk rule");
        }
        _ => assert_eq!(
            class,
            RestAuth::Ok,
            "a status other than 401 and 400 is about the session"
        ),
    }
    if is_invalid_session_id(body) {
        assert_ne!(classify(401, body), RestAuth::Ok);
    }
});
