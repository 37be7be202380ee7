//! Salesforce-style record ids: 15 case-sensitive characters plus a 3-character checksum suffix.

use rand::Rng;

const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Key prefix of organization ids.
pub(crate) const ORG_PREFIX: &str = "00D";
/// Key prefix of user ids.
pub(crate) const USER_PREFIX: &str = "005";

/// Appends Salesforce's case-safe checksum to a 15-character id.
///
/// Each 5-character chunk contributes one suffix character: bit `i` is set when character `i` of
/// the chunk is an upper-case letter.
pub(crate) fn to_18(id15: &str) -> String {
    let mut out = String::with_capacity(18);
    out.push_str(id15);
    for chunk in id15.as_bytes().chunks(5) {
        let mut flags = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                flags |= 1 << i;
            }
        }
        out.push(char::from(SUFFIX_ALPHABET[flags]));
    }
    out
}

/// A fresh 18-character id with the given 3-character key prefix.
pub(crate) fn new_id(prefix: &str, rng: &mut impl Rng) -> String {
    let mut id15 = String::from(prefix);
    // Real ids carry a pod identifier and then a counter; a fixed "0" and random base62 look alike.
    id15.push('0');
    while id15.len() < 15 {
        id15.push(char::from(BASE62[rng.random_range(0..BASE62.len())]));
    }
    to_18(&id15)
}

/// `n` random characters from the base62 alphabet.
pub(crate) fn random_string(n: usize, rng: &mut impl Rng) -> String {
    (0..n)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

/// Whether `id` looks like an 18-character id whose suffix matches its first 15 characters.
pub(crate) fn is_valid_18(id: &str) -> bool {
    id.len() == 18 && id.is_ascii() && to_18(&id[..15]) == id
}

/// The first 15 characters of an id (the case-sensitive form used inside access tokens).
pub(crate) fn to_15(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn checksum_matches_known_ids() {
        // Worked by hand from the algorithm: one bit per upper-case letter, chunk by chunk.
        for (id15, id18) in [
            ("00D000000000062", "00D000000000062EAA"),
            ("001A000000Lq4JD", "001A000000Lq4JDIAZ"),
            ("005000000000000", "005000000000000AAA"),
        ] {
            assert_eq!(to_18(id15), id18, "{id15}");
            assert!(is_valid_18(id18));
        }
    }

    #[test]
    fn new_ids_have_prefix_and_valid_suffix() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = new_id(ORG_PREFIX, &mut rng);
        assert!(id.starts_with("00D"));
        assert!(is_valid_18(&id), "{id}");
        assert_eq!(to_15(&id).len(), 15);
    }
}
