//! The REST API versions the emulator serves.

/// The newest API version served.
pub(crate) const LATEST: &str = "64.0";

/// Versions listed at `/services/data/` (oldest first, as Salesforce lists them).
pub(crate) const VERSIONS: [(&str, &str); 6] = [
    ("Winter '21", "50.0"),
    ("Winter '23", "56.0"),
    ("Winter '24", "59.0"),
    ("Summer '24", "61.0"),
    ("Winter '25", "62.0"),
    ("Summer '25", "64.0"),
];

/// `vNN.N` with a version number the emulator accepts (any from 20.0 up to the latest).
pub(crate) fn version_ok(version: &str) -> bool {
    let Some(number) = version.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = number.split_once('.') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return false;
    };
    let latest: u32 = LATEST
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(64);
    minor == 0 && (20..=latest).contains(&major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for (v, ok) in [
            ("v50.0", true),
            ("v64.0", true),
            ("v65.0", false),
            ("v5.0", false),
            ("50.0", false),
            ("v50.1", false),
        ] {
            assert_eq!(version_ok(v), ok, "{v}");
        }
    }
}
