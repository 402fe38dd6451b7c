//! The target deny list: networks no HTTP handler may reach (by default the
//! link-local ranges where cloud metadata services live). Checked after DNS
//! resolution, inside the HTTP client's resolver, so a hostname that resolves
//! into a denied network is refused at connect time, and for IP-literal URLs
//! before the request is sent.
//!
//! An address is judged by what a connection to it reaches, not by its
//! spelling: an IPv6 address that carries an IPv4 one (IPv4-mapped,
//! IPv4-compatible, NAT64, 6to4, Teredo) is checked as that IPv4 address too,
//! and the unspecified addresses (`0.0.0.0`, which the `0.0.0.0/8` "this
//! host" block stands for, and `::`) as the loopback they connect to on
//! Linux. URL spellings such as `http://0/`, `http://2130706433/` or
//! `http://0x7f.1/` are parsed by the url crate, the same parser the HTTP
//! client uses, into the address that is actually dialled.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

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
        self.denied_network(ip).is_some()
    }

    /// The denied network a connection to `ip` would reach, if any.
    pub fn denied_network(&self, ip: IpAddr) -> Option<IpNet> {
        reached(ip)
            .into_iter()
            .find_map(|ip| self.0.iter().find(|net| net.contains(&ip)).copied())
    }

    /// Refuses a URL whose host is an IP literal in a denied network (in any
    /// spelling the url crate accepts). Hostnames pass here: they are checked
    /// after resolution, by [`GuardedResolver`]. A URL that passes comes
    /// back parsed, for the call to use as it is rather than parse again.
    pub fn check_url(&self, target: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(target).map_err(|e| format!("invalid URL: {e}"))?;
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(url),
        };
        match self.denied_network(ip) {
            Some(net) => Err(format!(
                "not called: the address {ip} reaches the denied network {net}"
            )),
            None => Ok(url),
        }
    }
}

/// Targets checked already, with what [`DenyList::check_url`] said of each:
/// a handler calls the same URL on every attempt, and parsing it (the host
/// through IDNA processing) cost ~6,000 instructions per attempt (issue 15).
/// The deny list never changes while the executor lives, so neither does an
/// answer. Bounded: a template that puts event data in the URL makes a new
/// target per event, so the memo starts over once it holds
/// [`CheckedTargets::MAX`], and a target longer than
/// [`CheckedTargets::MAX_LEN`] is checked anew each time (at most ~4 MiB).
#[derive(Clone)]
pub struct CheckedTargets {
    deny: DenyList,
    seen: Arc<Mutex<HashMap<String, Result<url::Url, String>>>>,
}

impl CheckedTargets {
    const MAX: usize = 1024;
    const MAX_LEN: usize = 2048;

    pub fn new(deny: DenyList) -> Self {
        Self {
            deny,
            seen: Arc::default(),
        }
    }

    /// [`DenyList::check_url`] of `target`, from the memo when it was seen.
    pub fn check(&self, target: &str) -> Result<url::Url, String> {
        if let Some(answer) = self.seen.lock().expect("targets lock poisoned").get(target) {
            return answer.clone();
        }
        let answer = self.deny.check_url(target);
        if target.len() > Self::MAX_LEN {
            return answer;
        }
        let mut seen = self.seen.lock().expect("targets lock poisoned");
        if seen.len() >= Self::MAX {
            seen.clear();
        }
        seen.insert(target.to_owned(), answer.clone());
        answer
    }
}

/// Every address a connection to `ip` may in effect reach: itself, the IPv4
/// address an IPv6 one carries, the IPv4-mapped form of an IPv4 address (for
/// deny lists written that way), and loopback for an unspecified address.
fn reached(ip: IpAddr) -> Vec<IpAddr> {
    let mut out = vec![ip];
    if let IpAddr::V6(v6) = ip {
        out.extend(embedded_ipv4(v6).into_iter().map(IpAddr::V4));
    }
    let unspecified = out.iter().any(|ip| match ip {
        // 0.0.0.0/8 is "this host on this network"; Linux connects 0.0.0.0
        // to loopback and refuses the rest, so treating all of it as
        // loopback denies nothing reachable.
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    });
    if unspecified {
        out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    let mapped: Vec<IpAddr> = out
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    out.extend(mapped);
    out
}

/// The IPv4 addresses an IPv6 address carries, by every standard embedding:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (deprecated, but
/// still parsed), NAT64 `64:ff9b::/96` (RFC 6052) and the local-use
/// `64:ff9b:1::/48` (RFC 8215, at each prefix length RFC 6052 allows inside
/// it, since which one a network uses is not visible in the address), 6to4
/// `2002::/16` (RFC 3056) and Teredo `2001::/32` (RFC 4380: the server, and
/// the client, stored inverted).
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = v6.octets();
    let v4 = |a: u8, b: u8, c: u8, d: u8| Ipv4Addr::new(a, b, c, d);
    let seg = v6.segments();
    let mut out = Vec::new();
    if let Some(mapped) = v6.to_ipv4_mapped() {
        out.push(mapped);
    }
    if seg[..6] == [0; 6] {
        out.push(v4(o[12], o[13], o[14], o[15]));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        out.push(v4(o[12], o[13], o[14], o[15]));
    }
    if seg[..3] == [0x64, 0xff9b, 1] {
        // RFC 6052 §2.2: bits 64..72 are always zero, so the address skips them.
        out.push(v4(o[6], o[7], o[9], o[10])); // /48
        out.push(v4(o[7], o[9], o[10], o[11])); // /56
        out.push(v4(o[9], o[10], o[11], o[12])); // /64
        out.push(v4(o[12], o[13], o[14], o[15])); // /96
    }
    if seg[0] == 0x2002 {
        out.push(v4(o[2], o[3], o[4], o[5]));
    }
    if seg[..2] == [0x2001, 0] {
        out.push(v4(o[4], o[5], o[6], o[7]));
        out.push(v4(!o[12], !o[13], !o[14], !o[15]));
    }
    out
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

    fn list(networks: &[&str]) -> DenyList {
        DenyList::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn link_local_is_denied_and_private_is_not() {
        let deny = DenyList::new(default_deny_list());
        assert!(deny.denies("169.254.169.254".parse().unwrap()));
        assert!(deny.denies("fe80::1".parse().unwrap()));
        assert!(deny.denies("::ffff:169.254.169.254".parse().unwrap()));
        assert!(!deny.denies("10.1.2.3".parse().unwrap()));
        assert!(!deny.denies("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn every_spelling_of_a_denied_address_is_denied() {
        let deny = list(&["169.254.0.0/16", "fe80::/10", "127.0.0.0/8", "::1/128"]);
        for url in [
            // Loopback and what reaches it.
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://127.0.0.1./",
            "http://0/",
            "http://0.0.0.0/",
            "http://0.1.2.3/",
            "http://[::]/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:0.0.0.0]/",
            "http://[::127.0.0.1]/",
            // The link-local metadata address, embedded in IPv6.
            "http://169.254.169.254/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[64:ff9b:1:a9fe:a9:fe00::]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001:0:a9fe:a9fe::1]/",
            "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
            "http://[fe80::1]/",
        ] {
            let err = deny.check_url(url).expect_err(url);
            assert!(err.contains("denied network"), "{url}: {err}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://192.168.1.20:8080/x",
            "http://[2001:db8::1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:a00:1::1]/",
            "http://switch.example.net/",
            "https://localhost/",
        ] {
            assert_eq!(
                deny.check_url(url).map(String::from).as_deref(),
                Ok(url),
                "{url}"
            );
        }
    }

    /// The memo answers as the deny list does, the first time and every
    /// time after, also once it has started over.
    #[test]
    fn checked_targets_answer_as_the_deny_list() {
        let deny = list(&["169.254.0.0/16", "10.0.0.0/8"]);
        let targets = CheckedTargets::new(deny.clone());
        let urls = [
            "http://169.254.169.254/latest",
            "http://[::ffff:a9fe:a9fe]/",
            "http://0xa.1/hook",
            "http://192.168.1.20:8080/x",
            "https://switch.example.net/a?b=c",
            "not a url",
        ];
        for _ in 0..3 {
            for url in urls {
                assert_eq!(targets.check(url), deny.check_url(url), "{url}");
            }
        }
        for i in 0..=CheckedTargets::MAX {
            let url = format!("http://10.0.{}.{}/", i / 256 % 256, i % 256);
            assert!(targets.check(&url).is_err(), "{url}");
        }
        assert!(targets.seen.lock().unwrap().len() <= CheckedTargets::MAX);
        let long = format!("http://10.0.0.1/{}", "x".repeat(CheckedTargets::MAX_LEN));
        assert!(targets.check(&long).is_err());
        assert!(!targets.seen.lock().unwrap().contains_key(&long));
        for url in urls {
            assert_eq!(targets.check(url), deny.check_url(url), "{url}");
        }
    }

    #[test]
    fn unspecified_addresses_count_as_loopback() {
        let v4_only = list(&["127.0.0.0/8"]);
        let v6_only = list(&["::1/128"]);
        for ip in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(v4_only.denies(ip), "{ip}");
            assert!(v6_only.denies(ip), "{ip}");
        }
        assert!(!list(&["10.0.0.0/8"]).denies("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn a_deny_list_in_ipv6_mapped_form_covers_ipv4() {
        let deny = list(&["::ffff:169.254.0.0/112"]);
        assert!(deny.denies("169.254.169.254".parse().unwrap()));
    }

    /// `v4` written into an IPv6 address by embedding `form`, with `filler`
    /// in the bits the embedding leaves free.
    fn embed(v4: Ipv4Addr, form: u8, filler: [u8; 16]) -> Ipv6Addr {
        let [a, b, c, d] = v4.octets();
        let mut o = filler;
        let mut set = |at: usize, bytes: &[u8]| o[at..at + bytes.len()].copy_from_slice(bytes);
        match form {
            0 => set(0, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]),
            1 => set(0, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]),
            2 => set(
                0,
                &[0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d],
            ),
            3 => set(0, &[0, 0x64, 0xff, 0x9b, 0, 1, a, b, 0, c, d]),
            4 => set(0, &[0, 0x64, 0xff, 0x9b, 0, 1, 0, a, 0, b, c, d]),
            5 => set(0, &[0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, a, b, c, d]),
            6 => {
                set(0, &[0, 0x64, 0xff, 0x9b, 0, 1]);
                set(12, &[a, b, c, d]);
            }
            7 => set(0, &[0x20, 0x02, a, b, c, d]),
            8 => set(0, &[0x20, 0x01, 0, 0, a, b, c, d]),
            _ => {
                set(0, &[0x20, 0x01, 0, 0]);
                set(12, &[!a, !b, !c, !d]);
            }
        }
        Ipv6Addr::from(o)
    }

    proptest::proptest! {
        /// Whatever the denied IPv4 network, no IPv6 spelling of an address
        /// inside it gets through.
        #[test]
        fn any_ipv6_embedding_of_a_denied_ipv4_is_denied(
            network in proptest::prelude::any::<u32>(),
            prefix in 0u8..=32,
            host in proptest::prelude::any::<u32>(),
            form in 0u8..=9,
            filler in proptest::prelude::any::<[u8; 16]>(),
        ) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(network), prefix).unwrap().trunc();
            let inside = (u32::from(net.network()) & u32::from(net.netmask()))
                | (host & !u32::from(net.netmask()));
            let v6 = embed(Ipv4Addr::from(inside), form, filler);
            let deny = DenyList::new(vec![IpNet::V4(net)]);
            proptest::prop_assert!(deny.denies(IpAddr::V6(v6)), "{v6} (form {form}) escapes {net}");
        }

        /// Outside input never panics the URL check.
        #[test]
        fn any_target_text_is_checked_without_panicking(target in proptest::prop_oneof![
            ".*",
            "https?://[0-9a-fA-Fx.:%\\[\\]]{0,45}(:[0-9]{1,5})?/?",
        ]) {
            let _ = DenyList::new(default_deny_list()).check_url(&target);
        }

        /// Nor does any host in a URL that parses.
        #[test]
        fn any_ip_is_judged_without_panicking(ip in proptest::prelude::any::<IpAddr>()) {
            let _ = DenyList::new(default_deny_list()).denied_network(ip);
        }
    }

    #[test]
    fn the_error_names_the_address_and_the_network() {
        let deny = list(&["127.0.0.0/8"]);
        assert_eq!(
            deny.check_url("http://0/x"),
            Err("not called: the address 0.0.0.0 reaches the denied network 127.0.0.0/8".into())
        );
    }
}
