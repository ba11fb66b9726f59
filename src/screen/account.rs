//! Which account an INVITE belongs to: by the account header when it comes from a trusted
//! source, else by the most specific source network.
use super::Call;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct AccountTable {
    header: Option<Arc<str>>,
    trusted: Vec<IpNet>,
    /// Source networks, longest prefix first so the first match is the most specific.
    by_source: Vec<(IpNet, usize)>,
    by_id: HashMap<Arc<str>, usize>,
}

impl AccountTable {
    /// `accounts[i]` is (id, source networks) of account index i.
    pub fn new(header: Option<Arc<str>>, trusted: Vec<IpNet>, accounts: &[(Arc<str>, &[IpNet])]) -> AccountTable {
        let mut by_source: Vec<(IpNet, usize)> =
            accounts.iter().enumerate().flat_map(|(i, (_, nets))| nets.iter().map(move |n| (*n, i))).collect();
        by_source.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let by_id = accounts.iter().enumerate().map(|(i, (id, _))| (id.clone(), i)).collect();
        AccountTable { header, trusted, by_source, by_id }
    }

    pub fn header(&self) -> Option<&Arc<str>> {
        self.header.as_ref()
    }

    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The account index of a call, None when it belongs to no known account. An account
    /// asserted by an authenticated API client decides alone. A header value
    /// from a trusted source decides alone (an unknown id there is an unknown account); from
    /// anywhere else it is ignored.
    pub fn identify(&self, call: &Call) -> Option<usize> {
        if let Some(id) = call.asserted_account.as_deref() {
            return self.by_id(id.trim());
        }
        let ip = call.source?;
        if self.header.is_some()
            && let Some(value) = call.account_header.as_deref()
            && self.trusted(ip)
        {
            return self.by_id(value.trim());
        }
        self.by_source.iter().find(|(n, _)| n.contains(&ip)).map(|(_, i)| *i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn call(ip: &str, header: Option<&'static str>) -> Call<'static> {
        Call { source: Some(ip.parse().unwrap()), account_header: header.map(Into::into), ..Call::default() }
    }

    #[test]
    fn source_networks_and_trusted_header() {
        let acme = [net("192.0.2.0/24")];
        let acme_vip = [net("192.0.2.128/25"), net("2001:db8::/32")];
        let t = AccountTable::new(
            Some("X-Account".into()),
            vec![net("198.51.100.0/24")],
            &[("acme".into(), &acme), ("vip".into(), &acme_vip), ("hdr".into(), &[])],
        );
        assert_eq!(t.identify(&call("192.0.2.1", None)), Some(0));
        assert_eq!(t.identify(&call("192.0.2.200", None)), Some(1), "most specific network");
        assert_eq!(t.identify(&call("2001:db8::5", None)), Some(1));
        assert_eq!(t.identify(&call("203.0.113.1", None)), None);
        assert_eq!(t.identify(&call("198.51.100.7", Some(" hdr "))), Some(2));
        assert_eq!(t.identify(&call("198.51.100.7", Some("nobody"))), None);
        assert_eq!(t.identify(&call("198.51.100.7", None)), None);
        // The header from an untrusted source is ignored.
        assert_eq!(t.identify(&call("203.0.113.1", Some("hdr"))), None);
        assert_eq!(t.identify(&call("192.0.2.1", Some("hdr"))), Some(0));
        assert_eq!(t.identify(&Call::default()), None);
        // An asserted account (the API) decides alone, whatever the source.
        let asserted =
            |id: &'static str| Call { asserted_account: Some(id.into()), ..call("203.0.113.1", Some("hdr")) };
        assert_eq!(t.identify(&asserted("vip")), Some(1));
        assert_eq!(t.identify(&asserted("nobody")), None);
    }
}
