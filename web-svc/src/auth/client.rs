//! Who a login attempt counts against: an IPv4 address or an IPv6 /64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Who a login attempt counts against: an IPv4 address, or an IPv6 /64 (one home network, or
/// one host's many privacy addresses, which it can change at will). An IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, from a dual-stack listener) is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 /64: the address with its low 64 bits cleared.
    V6Net(Ipv6Addr),
}

impl ClientKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(a),
            IpAddr::V6(a) => {
                ClientKey::V6Net(Ipv6Addr::from(u128::from(a) & !u128::from(u64::MAX)))
            }
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{a}"),
            ClientKey::V6Net(a) => write!(f, "{a}/64"),
        }
    }
}
