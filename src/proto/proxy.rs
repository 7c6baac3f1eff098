//! Trusted proxies (`--trusted-proxy ADDR|CIDR`): which client a request
//! forwarded through them came from, read from `X-Forwarded-For`.
//!
//! The header is believed only when the TCP peer is a trusted proxy, and
//! then only as far as the chain of trusted proxies goes: walking the list
//! from the right (the hop nearest to us), every trusted address is a proxy
//! of ours and the first untrusted one is the client. A client cannot
//! forge its address by sending the header itself: either it is not
//! trusted, or the entries it wrote lie left of the one the proxy appended.

use std::net::IpAddr;

/// An address block: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `ADDR` or `ADDR/BITS` (IPv4 or IPv6).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or ADDR/BITS"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, bits })
    }

    /// Whether `ip` is in this block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The client behind `peer`, when `peer` is a trusted proxy and
/// `forwarded_for` (the `X-Forwarded-For` values, comma-separated) names
/// one; `None` otherwise (use the peer itself).
pub fn client(peer: IpAddr, forwarded_for: &str, trusted: &[Cidr]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return None;
    }
    let mut last = None;
    for hop in forwarded_for.rsplit(',') {
        // An unparseable hop ends what can be believed.
        let ip: IpAddr = hop.trim().parse().ok()?;
        if !is_trusted(ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_contain() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains(ip("::ffff:127.0.0.1"))
        );
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            Cidr::parse("10.0.0.0/7")
                .unwrap()
                .contains(ip("11.255.0.1"))
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        let peer = ip("127.0.0.1");
        assert_eq!(
            client(peer, "203.0.113.7", &trusted),
            Some(ip("203.0.113.7"))
        );
        // A forged entry left of the real one is ignored.
        assert_eq!(
            client(peer, "1.1.1.1, 203.0.113.7", &trusted),
            Some(ip("203.0.113.7"))
        );
        // Through two of our proxies.
        assert_eq!(
            client(peer, "203.0.113.7, 10.0.0.5", &trusted),
            Some(ip("203.0.113.7"))
        );
        // Only proxies: the leftmost.
        assert_eq!(
            client(peer, "10.0.0.9, 10.0.0.5", &trusted),
            Some(ip("10.0.0.9"))
        );
        assert_eq!(client(peer, "garbage", &trusted), None);
        // Not from a trusted proxy: never believed.
        assert_eq!(client(ip("192.0.2.1"), "203.0.113.7", &trusted), None);
        assert_eq!(client(peer, "203.0.113.7", &[]), None);
    }
}
