//! The client's IP address: the socket peer, or, behind a configured trusted proxy, the
//! right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
//!
//! `X-Forwarded-For` is written by whoever sends the request, so it is believed only as far as
//! the chain of trusted proxies reaches: a client talking directly to the server cannot choose
//! its address by sending the header, and one behind the proxy can only prepend entries, which
//! are never read.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::{Error, Result};

/// The header read behind trusted proxies.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request, as the middleware put it in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` is believed.
///
/// ```
/// use jobforge::http::security::TrustedProxies;
///
/// let proxies: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse()?;
/// assert!(proxies.contains("10.1.2.3".parse()?));
/// assert!(!proxies.contains("192.168.1.8".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// No trusted proxy: the socket peer is always the client.
    #[must_use]
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// These networks.
    #[must_use]
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Whether there is no trusted proxy.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Parse one entry: an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`).
    pub fn parse_entry(entry: &str) -> Result<IpNet> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            return Ok(net.trunc());
        }
        entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            Error::invalid_input(
                "trusted proxy",
                format!("{entry:?} is neither an IP address nor a CIDR network like 10.0.0.0/8"),
            )
        })
    }
}

impl FromStr for TrustedProxies {
    type Err = Error;

    /// Entries separated by commas or spaces.
    fn from_str(s: &str) -> Result<Self> {
        s.split([',', ' '])
            .filter(|e| !e.trim().is_empty())
            .map(TrustedProxies::parse_entry)
            .collect::<Result<Vec<_>>>()
            .map(TrustedProxies)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as dual-stack sockets report IPv4 peers)
/// as the IPv4 address it is.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request from socket peer `peer` with these headers.
///
/// If `peer` is not a trusted proxy, it is the client, whatever the headers say. Otherwise the
/// `X-Forwarded-For` entries (every such header, in order) are walked from the right: trusted
/// proxies are skipped, and the first address that is not one is the client. An entry that is
/// not an address ends the walk at the last trusted hop; if every entry is a trusted proxy,
/// the left-most is the client.
///
/// ```
/// use std::net::IpAddr;
/// use axum::http::HeaderMap;
/// use jobforge::http::security::{client_ip, TrustedProxies};
///
/// let proxies: TrustedProxies = "10.0.0.0/8".parse()?;
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".parse()?);
/// let proxy: IpAddr = "10.0.0.1".parse()?;
/// assert_eq!(client_ip(proxy, &headers, &proxies), "203.0.113.9".parse::<IpAddr>()?);
/// // The same header from a peer that is not a trusted proxy is ignored.
/// let direct: IpAddr = "198.51.100.4".parse()?;
/// assert_eq!(client_ip(direct, &headers, &proxies), direct);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&[u8]> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    // Split the raw bytes, so a byte that is not visible ASCII spoils only its own entry (one
    // the client wrote), not the entries the trusted proxies appended after it.
    for entry in values.iter().rev().flat_map(|v| v.rsplit(|b| *b == b',')) {
        match std::str::from_utf8(entry)
            .ok()
            .and_then(parse_forwarded_entry)
        {
            Some(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    return ip;
                }
            }
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|sa| canonical(sa.ip()))
}

/// The key a client address is rate-limited under: IPv4 addresses as they are, IPv6 by their
/// /64 network (one host usually holds a whole /64, so keying by address would let it
/// multiply its quota at will).
#[must_use]
pub fn rate_limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.1".parse().unwrap();
        let h = xff(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
        assert_eq!(
            client_ip(ip("9.9.9.9"), &h, &TrustedProxies::none()),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted() {
        let trusted: TrustedProxies = "10.0.0.0/8 ::1".parse().unwrap();
        let h = xff(&["6.6.6.6, 5.5.5.5", "10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("5.5.5.5"));
        assert_eq!(client_ip(ip("::1"), &h, &trusted), ip("5.5.5.5"));
        // Mapped IPv4 peer counts as the IPv4 proxy.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("5.5.5.5")
        );
        // Ports and brackets.
        let h = xff(&["[2001:db8::1]:443, 10.1.1.1:80"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn odd_headers_fall_back_safely() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        // Garbage right of the client: stop at the last trusted hop.
        let h = xff(&["1.2.3.4, garbage"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        // All trusted: the left-most.
        let h = xff(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.3"));
        // Empty entries are garbage too.
        let h = xff(&[", ,"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        // A byte that is not ASCII in the client's own entry spoils that entry only: the
        // address the proxy appended is still read.
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            axum::http::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn proxies_parse() {
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("example.com".parse::<TrustedProxies>().is_err());
        let p: TrustedProxies = "10.9.9.9/8".parse().unwrap();
        assert!(p.contains(ip("10.200.0.1")));
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(
            rate_limit_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(rate_limit_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(rate_limit_key(ip("1.2.3.4")), ip("1.2.3.4"));
    }
}
