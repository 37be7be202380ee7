//! Scopes: what a request may be granted.

use super::State;
use crate::format::OAuthError;

/// Scopes granted when a request names none.
const DEFAULT_SCOPES: [&str; 4] = ["api", "id", "refresh_token", "web"];

/// Every scope the emulator knows (the discovery document's list, shortened).
pub(crate) const KNOWN_SCOPES: [&str; 16] = [
    "api",
    "web",
    "full",
    "id",
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "refresh_token",
    "offline_access",
    "chatter_api",
    "visualforce",
    "lightning",
    "content",
    "custom_permissions",
];

impl State {
    /// Grants `requested` (space separated) or the default scopes, checked against what the
    /// emulator knows.
    pub(crate) fn grant_scopes(requested: Option<&str>) -> Result<Vec<String>, OAuthError> {
        let requested: Vec<String> = requested
            .unwrap_or("")
            .split([' ', '+'])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if requested.is_empty() {
            return Ok(DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect());
        }
        for s in &requested {
            let known =
                KNOWN_SCOPES.contains(&s.as_str()) || s.starts_with("cdp_") || s.ends_with("_api");
            if !known {
                return Err(OAuthError::invalid_scope());
            }
        }
        Ok(requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            State::grant_scopes(None).unwrap(),
            vec!["api", "id", "refresh_token", "web"]
        );
        assert_eq!(
            State::grant_scopes(Some("api openid")).unwrap(),
            vec!["api", "openid"]
        );
        assert_eq!(
            State::grant_scopes(Some("api bogus")).unwrap_err(),
            OAuthError::invalid_scope()
        );
    }
}
