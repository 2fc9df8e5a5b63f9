//! Fetching `http(s)` image URLs for chat, only with `--allow-remote-images`.
//!
//! Guarded the way a server on a private network must be: only public addresses (no loopback,
//! private, link-local, CGNAT, multicast or unspecified ones, IPv4 or IPv6), no redirects (a
//! redirect could lead to such an address), no proxy from the environment, a whole-request
//! timeout, and a size limit applied while reading.
//!
//! DNS rebinding: the host is resolved exactly once, by [`PublicOnly`], the agent's resolver. It
//! refuses the request if any address is not public and hands the checked addresses to the
//! connector, which connects to exactly those; the Host header and TLS name still come from the
//! URL. There is no second lookup that a short-TTL record could answer differently.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

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

/// The agent's resolver: resolves with `inner` (the system resolver, within the request's
/// timeout) and passes the addresses on only if every one of them is public.
#[derive(Debug)]
pub struct PublicOnly<R = DefaultResolver>(pub R);

/// Starts the message of a refused destination (tests and callers match on it).
pub const NON_PUBLIC: &str = "resolves to a non-public address";

impl<R: Resolver> Resolver for PublicOnly<R> {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.0.resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or("the host");
        if addrs.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{host} {NON_PUBLIC} ({}); only public hosts can be fetched", bad.ip()),
            )));
        }
        Ok(addrs)
    }
}

/// Downloads the image at `url` (at most `max_bytes`), refusing non-public destinations.
pub fn fetch(url: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    fetch_with(url, max_bytes, PublicOnly(DefaultResolver::default()))
}

fn fetch_with(url: &str, max_bytes: usize, resolver: impl Resolver) -> Result<Vec<u8>, String> {
    let parsed: Uri = url.parse().map_err(|e| format!("not a valid URL: {e}"))?;
    let scheme = parsed.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err("only http and https URLs can be fetched".into());
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    let config = Config::builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .build();
    let agent = ureq::Agent::with_parts(config, DefaultConnector::default(), resolver);
    let mut resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => io.to_string(),
        e => format!("fetching the image failed: {e}"),
    })?;
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
        assert!(fetch("http://127.0.0.1:9/x.png", 1000).unwrap_err().contains(NON_PUBLIC));
        assert!(fetch("http://localhost/x.png", 1000).unwrap_err().contains(NON_PUBLIC));
        assert!(fetch("http://[::1]/x.png", 1000).unwrap_err().contains(NON_PUBLIC));
        assert!(fetch("http://169.254.169.254/latest/meta-data", 1000).unwrap_err().contains(NON_PUBLIC));
        assert!(fetch("ftp://example.com/x.png", 1000).is_err());
        assert!(fetch("http:///x.png", 1000).is_err());
    }

    /// A name (not an IP literal) that resolves to loopback is refused, and no connection is made
    /// to the listener behind it.
    #[test]
    fn a_name_resolving_to_loopback_is_refused_without_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = fetch(&format!("http://localhost:{port}/x.png"), 1000).unwrap_err();
        assert!(e.contains(NON_PUBLIC) && e.contains("localhost"), "{e}");
        assert!(listener.accept().is_err(), "a connection reached the loopback listener");
    }

    /// Stands in for DNS: answers every lookup with fixed addresses and counts the lookups.
    #[derive(Debug)]
    struct FixedDns(Vec<&'static str>, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Resolver for FixedDns {
        fn resolve(&self, uri: &Uri, _: &Config, _: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let port = uri.port_u16().unwrap_or(80);
            let mut out = self.empty();
            for ip in &self.0 {
                out.push(std::net::SocketAddr::new(ip.parse().unwrap(), port));
            }
            Ok(out)
        }
    }

    /// DNS rebinding: the one lookup decides. A name with any private answer is refused; the
    /// connection goes to the addresses that were checked (here a loopback listener stands for
    /// "private", so a refused fetch must leave it untouched), and the name is looked up once.
    #[test]
    fn the_checked_addresses_are_the_ones_connected_to() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://rebind.example:{port}/x.png");
        for answers in [vec!["127.0.0.1"], vec!["93.184.215.14", "127.0.0.1"], vec!["10.0.0.7"], vec!["::1"]] {
            let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let e = fetch_with(&url, 1000, PublicOnly(FixedDns(answers.clone(), lookups.clone()))).unwrap_err();
            assert!(e.contains(NON_PUBLIC), "{answers:?}: {e}");
            assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1, "{answers:?}");
            assert!(listener.accept().is_err(), "{answers:?}: a connection reached the listener");
        }
        // All-public answers pass the resolver unchanged (what the connector then dials).
        let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = PublicOnly(FixedDns(vec!["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"], lookups));
        let uri: Uri = url.parse().unwrap();
        let cfg = Config::default();
        let addrs = r.resolve(&uri, &cfg, NextTimeout::default()).unwrap();
        let ips: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, [format!("93.184.215.14:{port}"), format!("[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:{port}")]);
    }
}
