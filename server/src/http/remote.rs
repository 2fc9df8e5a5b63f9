//! Fetching `http(s)` image URLs for chat, only with `--allow-remote-images`.
//!
//! Guarded the way a server on a private network must be: only public addresses (no loopback,
//! private, link-local, CGNAT, multicast or unspecified ones, IPv4 or IPv6), no redirects (a
//! redirect could lead to such an address), a whole-request timeout, and a size limit applied
//! while reading.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

/// How long one fetch may take, connection and body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking 198.18/15
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// Downloads the image at `url` (at most `max_bytes`), refusing non-public destinations.
pub fn fetch(url: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    let parsed: ureq::http::Uri = url.parse().map_err(|e| format!("not a valid URL: {e}"))?;
    let scheme = parsed.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err("only http and https URLs can be fetched".into());
    }
    let host = parsed.host().ok_or("the URL has no host")?;
    let port = parsed.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host_for_dns = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> =
        (host_for_dns, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(format!("{host} resolves to a non-public address; only public hosts can be fetched"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| format!("fetching the image failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("fetching the image returned HTTP {}", status.as_u16()));
    }
    resp.body_mut()
        .with_config()
        .limit(max_bytes as u64)
        .read_to_vec()
        .map_err(|e| format!("reading the image failed (limit {max_bytes} bytes): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad} must be refused");
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(good.parse().unwrap()), "{good} is public");
        }
    }

    #[test]
    fn loopback_and_odd_urls_are_refused_before_connecting() {
        assert!(fetch("http://127.0.0.1:9/x.png", 1000).unwrap_err().contains("non-public"));
        assert!(fetch("http://localhost/x.png", 1000).unwrap_err().contains("non-public"));
        assert!(fetch("http://[::1]/x.png", 1000).unwrap_err().contains("non-public"));
        assert!(fetch("ftp://example.com/x.png", 1000).is_err());
    }
}
