//! Any REST API error body, with any status: classified, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = [200u16, 401, 403, 500][usize::from(selector % 4)];
    let _ = sfauth_core::rest::classify(status, body);
    let _ = sfauth_core::rest::is_invalid_session_id(body);
});
