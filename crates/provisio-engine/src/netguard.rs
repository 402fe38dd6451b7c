//! The target deny list: networks no HTTP handler may reach (by default the
//! link-local ranges where cloud metadata services live). Checked after DNS
//! resolution, inside the HTTP client's resolver, so a hostname that resolves
//! into a denied network is refused at connect time, and for IP-literal URLs
//! before the request is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The networks refused by default.
pub fn default_deny_list() -> Vec<IpNet> {
    ["169.254.0.0/16", "fe80::/10"]
        .iter()
        .map(|n| n.parse().expect("valid default network"))
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct DenyList(Arc<Vec<IpNet>>);

impl DenyList {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(Arc::new(networks))
    }

    pub fn denies(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A resolver that drops denied addresses and fails when none are left.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub deny: DenyList,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let deny = self.deny.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !deny.denies(a.ip()))
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(format!("{host} resolves only to denied networks").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_denied_and_private_is_not() {
        let deny = DenyList::new(default_deny_list());
        assert!(deny.denies("169.254.169.254".parse().unwrap()));
        assert!(deny.denies("fe80::1".parse().unwrap()));
        assert!(deny.denies("::ffff:169.254.169.254".parse().unwrap()));
        assert!(!deny.denies("10.1.2.3".parse().unwrap()));
        assert!(!deny.denies("127.0.0.1".parse().unwrap()));
    }
}
