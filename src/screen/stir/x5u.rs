//! Which x5u URLs sipguard will fetch: HTTPS on port 443 or 8443, no userinfo, query or
//! fragment, and (unless `x5u_allow_private`) no host that is or resolves to a loopback,
//! private, link-local or otherwise non-public address, so a PASSporT cannot make the proxy
//! probe the operator's own network (SSRF). Literal addresses are checked here; names are
//! checked again after resolution by the fetcher. `x5u_allow_private` is for private PKIs
//! and labs, and lifts the port rule too.
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL")]
    Parse,
    #[error("scheme is not https")]
    Scheme,
    #[error("port {0} is not 443 or 8443")]
    Port(u16),
    #[error("URL carries userinfo, a query or a fragment")]
    Extra,
    #[error("host {0} is a non-public address")]
    Private(String),
}

/// Longest x5u URL fetched.
pub const MAX_URL: usize = 2048;

pub fn check_url(s: &str, allow_private: bool) -> Result<url::Url, UrlError> {
    if s.len() > MAX_URL {
        return Err(UrlError::Parse);
    }
    let u = url::Url::parse(s).map_err(|_| UrlError::Parse)?;
    if u.scheme() != "https" {
        return Err(UrlError::Scheme);
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
        return Err(UrlError::Extra);
    }
    let port = u.port().unwrap_or(443);
    if port != 443 && port != 8443 && !allow_private {
        return Err(UrlError::Port(port));
    }
    let ip = match u.host() {
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
            Some(IpAddr::from([127, 0, 0, 1]))
        }
        Some(url::Host::Domain(_)) => None,
        None => return Err(UrlError::Parse),
    };
    if let Some(ip) = ip
        && !allow_private
        && !is_public(ip)
    {
        return Err(UrlError::Private(ip.to_string()));
    }
    Ok(u)
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_https_urls() {
        assert!(check_url("https://cert.example.com/sp.pem", false).is_ok());
        assert!(check_url("https://cert.example.com:8443/sp.pem", false).is_ok());
        assert_eq!(check_url("http://cert.example.com/sp.pem", false).unwrap_err(), UrlError::Scheme);
        assert_eq!(check_url("https://cert.example.com:444/a", false).unwrap_err(), UrlError::Port(444));
        assert!(check_url("https://127.0.0.1:4443/a", true).is_ok());
        assert_eq!(check_url("https://u:p@cert.example.com/a", false).unwrap_err(), UrlError::Extra);
        assert_eq!(check_url("https://cert.example.com/a?x=1", false).unwrap_err(), UrlError::Extra);
        assert_eq!(check_url("https://cert.example.com/a#f", false).unwrap_err(), UrlError::Extra);
        for private in [
            "https://127.0.0.1/a",
            "https://10.1.2.3/a",
            "https://[::1]/a",
            "https://169.254.169.254/a",
            "https://localhost/a",
            "https://[fd00::1]/a",
            "https://[::ffff:127.0.0.1]/a",
            "https://100.64.0.1/a",
        ] {
            assert!(matches!(check_url(private, false), Err(UrlError::Private(_))), "{private}");
            assert!(check_url(private, true).is_ok(), "{private}");
        }
        assert_eq!(check_url("not a url", false).unwrap_err(), UrlError::Parse);
        assert_eq!(check_url(&format!("https://a.example/{}", "x".repeat(3000)), false).unwrap_err(), UrlError::Parse);
    }
}
