//! Who is calling: the client address behind trusted reverse proxies, and the
//! `allow_ips` check.
//!
//! WeChat publishes the addresses its callbacks come from (`wxgate ips` fetches them), so
//! an account can refuse everything else. Behind nginx or Caddy the TCP peer is the proxy:
//! `X-Forwarded-For` is then believed only when the peer is one of `trusted_proxies`, and
//! only up to the first hop that is not a trusted proxy (a client can write anything at
//! the left of the header).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        // An entry that is not an address ends the chain we can believe.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Whether `address` may call an account with this allow list (empty allows all).
pub fn allowed(address: IpAddr, allow: &[IpNet]) -> bool {
    // An IPv4 client seen through an IPv6 socket (`::ffff:1.2.3.4`) matches IPv4 networks.
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    };
    allow.is_empty() || allow.iter().any(|net| net.contains(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn check(peer: &str, forwarded: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        client_address(peer.parse().unwrap(), &headers, &nets(trusted)).to_string()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let cases: &[(&str, &[&str], &[&str], &str)] = &[
            // No proxy trusted: the peer, whatever the header says.
            ("203.0.113.9", &["1.1.1.1"], &[], "203.0.113.9"),
            // The peer is the trusted proxy: the client it saw.
            (
                "127.0.0.1",
                &["101.226.103.5"],
                &["127.0.0.1/32"],
                "101.226.103.5",
            ),
            // A forged left-most entry is not believed past the real client.
            (
                "127.0.0.1",
                &["6.6.6.6, 101.226.103.5"],
                &["127.0.0.1/32"],
                "101.226.103.5",
            ),
            // Two trusted hops, two header lines.
            (
                "10.0.0.2",
                &["101.226.103.5", "10.0.0.1"],
                &["10.0.0.0/8"],
                "101.226.103.5",
            ),
            // A port on the entry.
            (
                "127.0.0.1",
                &["101.226.103.5:4431"],
                &["127.0.0.1/32"],
                "101.226.103.5",
            ),
            // Garbage ends the chain at the last believable hop.
            ("127.0.0.1", &["nonsense"], &["127.0.0.1/32"], "127.0.0.1"),
            // No header from a trusted proxy: the proxy itself.
            ("127.0.0.1", &[], &["127.0.0.1/32"], "127.0.0.1"),
        ];
        for (peer, forwarded, trusted, expected) in cases {
            assert_eq!(
                check(peer, forwarded, trusted),
                *expected,
                "{peer} {forwarded:?}"
            );
        }
    }

    #[test]
    fn allow_lists_match_networks_and_mapped_addresses() {
        let allow = nets(&["101.226.103.0/25", "2001:db8::/32"]);
        for (address, expected) in [
            ("101.226.103.5", true),
            ("101.226.103.200", false),
            ("::ffff:101.226.103.5", true),
            ("2001:db8::1", true),
            ("127.0.0.1", false),
        ] {
            assert_eq!(
                allowed(address.parse().unwrap(), &allow),
                expected,
                "{address}"
            );
        }
        assert!(allowed("8.8.8.8".parse().unwrap(), &[]));
    }
}
