//! IPv4 and IPv6 networks in CIDR notation, for the clients that are exempt from maintenance
//! mode (the operators' own hosts, a monitoring network).
//!
//! Trade-off: parsing is strict — a network written with host bits set (`10.0.0.1/8`) is
//! rejected rather than silently masked, because a typo in an exemption list quietly opens
//! or closes a hole. Matching treats an IPv4-mapped IPv6 client (`::ffff:10.0.0.1`, what a
//! dual-stack socket reports) as the IPv4 address it is.

use super::GateError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX`, or a bare address meaning that one host.
    pub fn parse(s: &str) -> Result<Cidr, GateError> {
        let bad = |why: &str| GateError::InvalidConfig(format!("invalid CIDR {s:?}: {why}"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max = max_prefix(network);
        let prefix = match prefix {
            None => max,
            // `u8::from_str` accepts a leading '+'; a prefix is digits only.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad("prefix is not a number"))?
            }
            Some(_) => return Err(bad("prefix is not a number")),
        };
        Cidr::new(network, prefix).map_err(|e| match e {
            GateError::InvalidConfig(m) => GateError::InvalidConfig(format!("{s:?}: {m}")),
            other => other,
        })
    }

    /// A network from its address and prefix length; host bits must be zero.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Cidr, GateError> {
        let max = max_prefix(network);
        if prefix > max {
            return Err(GateError::InvalidConfig(format!(
                "prefix /{prefix} is longer than {max} bits"
            )));
        }
        let masked = mask(network, prefix);
        if masked != network {
            return Err(GateError::InvalidConfig(format!(
                "host bits are set; did you mean {masked}/{prefix}?"
            )));
        }
        Ok(Cidr { network, prefix })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.network, ip) {
            (IpAddr::V4(_), ip) => ip.to_canonical(),
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (IpAddr::V6(_), ip) => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = GateError;
    fn from_str(s: &str) -> Result<Cidr, GateError> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches_ipv4() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped client");
        assert!(!c.contains(ip("2001:db8::1")));
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn parses_and_matches_ipv6() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(ip("2001:db8:1::5")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));
        let mapped = Cidr::parse("::ffff:0:0/96").unwrap();
        assert!(
            mapped.contains(ip("192.0.2.1")),
            "v4 client against a v4-mapped network"
        );
    }

    #[test]
    fn bare_address_is_one_host_and_zero_prefix_is_everything() {
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert_eq!(host.prefix_len(), 32);
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn rejects_bad_cidrs_with_clear_errors() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0/8",
            "fe80::1%eth0/64",
            "x/8",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
        ] {
            assert!(
                matches!(Cidr::parse(bad), Err(GateError::InvalidConfig(_))),
                "{bad:?} should be rejected"
            );
        }
        let err = Cidr::parse("10.0.0.1/8").unwrap_err().to_string();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
    }
}
