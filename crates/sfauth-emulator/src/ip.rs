//! IP address ranges, as a refresh-token IP allowlist names them.

use std::net::IpAddr;
use std::str::FromStr;

/// An inclusive range of IP addresses: one entry of a refresh-token IP allowlist
/// ([`AppPolicy::refresh_token_ip_allowlist`](crate::AppPolicy::refresh_token_ip_allowlist)).
///
/// Salesforce's setup page takes a start and an end address; the emulator also takes CIDR
/// notation and a single address. Written as a string in TOML and JSON: `"127.0.0.1"`,
/// `"10.0.0.0/8"`, `"192.0.2.10-192.0.2.20"`, `"::1"`, `"2001:db8::/32"`.
///
/// ```
/// use sfauth_emulator::IpRange;
///
/// let range: IpRange = "10.0.0.0/8".parse()?;
/// assert!(range.contains("10.1.2.3".parse().unwrap()));
/// assert!(!range.contains("127.0.0.1".parse().unwrap()));
/// assert_eq!(range.to_string(), "10.0.0.0-10.255.255.255");
/// # Ok::<(), sfauth_emulator::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

impl IpRange {
    /// The range of one address.
    pub fn single(addr: IpAddr) -> Self {
        Self {
            start: addr,
            end: addr,
        }
    }

    /// The range from `start` to `end`, both included; `None` when they are of different
    /// families or `end` comes before `start`.
    pub fn new(start: IpAddr, end: IpAddr) -> Option<Self> {
        let ordered = match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => s <= e,
            (IpAddr::V6(s), IpAddr::V6(e)) => s <= e,
            _ => false,
        };
        ordered.then_some(Self { start, end })
    }

    /// Whether `addr` lies in the range. An IPv4 address a dual-stack socket reports as
    /// IPv4-mapped IPv6 (`::ffff:127.0.0.1`) is taken as the IPv4 address it is.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.start, self.end, addr.to_canonical()) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
            _ => false,
        }
    }

    fn cidr(addr: IpAddr, prefix: u8) -> Option<Self> {
        match addr {
            IpAddr::V4(a) => {
                let host_bits = 32u32.checked_sub(u32::from(prefix))?;
                let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                let start = u32::from(a) & mask;
                Some(Self {
                    start: IpAddr::from(start.to_be_bytes()),
                    end: IpAddr::from((start | !mask).to_be_bytes()),
                })
            }
            IpAddr::V6(a) => {
                let host_bits = 128u32.checked_sub(u32::from(prefix))?;
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                let start = u128::from(a) & mask;
                Some(Self {
                    start: IpAddr::from(start.to_be_bytes()),
                    end: IpAddr::from((start | !mask).to_be_bytes()),
                })
            }
        }
    }
}

impl FromStr for IpRange {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || crate::Error::InvalidConfig(format!("invalid IP range {s:?}"));
        let addr = |text: &str| text.trim().parse::<IpAddr>().map_err(|_| invalid());
        let s = s.trim();
        if let Some((start, end)) = s.split_once('-') {
            return Self::new(addr(start)?, addr(end)?).ok_or_else(invalid);
        }
        if let Some((base, prefix)) = s.split_once('/') {
            let prefix: u8 = prefix.trim().parse().map_err(|_| invalid())?;
            return Self::cidr(addr(base)?, prefix).ok_or_else(invalid);
        }
        Ok(Self::single(addr(s)?))
    }
}

impl TryFrom<String> for IpRange {
    type Error = crate::Error;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpRange> for String {
    fn from(range: IpRange) -> Self {
        range.to_string()
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        for (text, inside, outside) in [
            ("127.0.0.1", "127.0.0.1", "127.0.0.2"),
            ("10.0.0.0/8", "10.255.255.255", "11.0.0.0"),
            ("0.0.0.0/0", "203.0.113.9", "::1"),
            ("192.0.2.10-192.0.2.20", "192.0.2.20", "192.0.2.21"),
            ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::"),
            ("::1", "::1", "127.0.0.1"),
            ("127.0.0.1/32", "::ffff:127.0.0.1", "127.0.0.2"),
        ] {
            let range: IpRange = text.parse().unwrap();
            assert!(range.contains(inside.parse().unwrap()), "{text} ∋ {inside}");
            assert!(
                !range.contains(outside.parse().unwrap()),
                "{text} ∌ {outside}"
            );
        }
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-::1",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let range: IpRange = serde_json::from_str("\"10.0.0.0/30\"").unwrap();
        assert_eq!(
            serde_json::to_string(&range).unwrap(),
            "\"10.0.0.0-10.0.0.3\""
        );
        assert!(serde_json::from_str::<IpRange>("\"nope\"").is_err());
    }
}
