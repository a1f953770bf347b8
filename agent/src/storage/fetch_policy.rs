//! Where image downloads may go. A VM's image URL is tenant input: without a policy it could
//! make the agent fetch from the host's loopback services, the cloud metadata address or the
//! cluster's internal ranges and turn the answer into a guest disk.
//!
//! The rule: only `http` and `https`; every address a host name resolves to, and every IP
//! literal, checked against the denied ranges (loopback, link-local, unspecified, multicast,
//! and the cluster ranges the admin names) unless an allowed range names it; checked again for
//! every redirect (the resolver sees each connection) and at most [`MAX_REDIRECTS`] of them.
//! An optional allow-list of host names narrows it further. A size cap bounds what one
//! download may write.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;
/// Default cap on one image's bytes.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;

/// What downloads may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Ranges refused besides the built-in ones (the cluster's pod and service ranges).
    pub denied: Vec<IpNet>,
    /// Ranges allowed even though denied (an admin's image server on loopback, tests).
    pub allowed: Vec<IpNet>,
    /// When not empty, the only host names (exact, lower case) images may come from.
    pub hosts: Vec<String>,
    /// Largest image, bytes.
    pub max_bytes: u64,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            denied: vec![],
            allowed: vec![],
            hosts: vec![],
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Why a destination is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not http(s).
    #[error("only http and https image URLs are allowed, not {0:?}")]
    Scheme(String),
    /// The URL has no host.
    #[error("the image URL has no host")]
    NoHost,
    /// The host is not on the allow-list.
    #[error("image host {0:?} is not on the agent's allow-list (--image-host)")]
    Host(String),
    /// The address is in a refused range.
    #[error(
        "image host {host:?} resolves to {addr}, a {kind} address downloads may not reach \
         (an admin may allow a range with --image-allow-cidr)"
    )]
    Address {
        /// The host as written.
        host: String,
        /// The address.
        addr: IpAddr,
        /// loopback, link-local, ….
        kind: &'static str,
    },
}

/// The built-in class of an address downloads never reach, if any.
fn builtin_class(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => Some("multicast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        _ => None,
    }
}

impl FetchPolicy {
    /// Whether `addr` (reached for `host`) may be connected to.
    pub fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), Refused> {
        if self.allowed.iter().any(|n| n.contains(&addr)) {
            return Ok(());
        }
        let kind = builtin_class(addr).or_else(|| {
            self.denied
                .iter()
                .any(|n| n.contains(&addr))
                .then_some("cluster-internal")
        });
        match kind {
            None => Ok(()),
            Some(kind) => Err(Refused::Address {
                host: host.to_owned(),
                addr,
                kind,
            }),
        }
    }

    /// Whether a URL (the first one or a redirect's target) may be fetched, before any
    /// connection: scheme, allow-list, and the address when the host is an IP literal (those
    /// never reach the resolver).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.scheme().to_owned()));
        }
        let host = url.host().ok_or(Refused::NoHost)?;
        let name = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.hosts.is_empty() && !self.hosts.contains(&name) {
            return Err(Refused::Host(name));
        }
        match host {
            url::Host::Ipv4(v4) => self.check_addr(&name, IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => self.check_addr(&name, IpAddr::V6(v6)),
            url::Host::Domain(_) => Ok(()),
        }
    }

    /// A reqwest client that enforces the policy on every connection and redirect.
    pub fn client(self: &Arc<Self>) -> reqwest::Client {
        let redirects = self.clone();
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            .read_timeout(std::time::Duration::from_secs(60))
            .no_proxy()
            .dns_resolver(Arc::new(Resolver(self.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if let Err(e) = redirects.check_url(attempt.url()) {
                    attempt.error(e)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .unwrap_or_default()
    }
}

/// Resolves host names and keeps only the addresses the policy allows; none left is an error
/// that names the first refused address.
struct Resolver(Arc<FetchPolicy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check_addr(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(e) => Box::new(e),
                    None => format!("{host} resolves to no address").into(),
                };
                return Err(err);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_and_unspecified_literals_are_refused_by_default() {
        let p = FetchPolicy::default();
        for u in [
            "http://127.0.0.1/x",
            "http://127.1.2.3:8080/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
            "http://0.0.0.0/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            assert!(
                matches!(p.check_url(&url(u)), Err(Refused::Address { .. })),
                "{u}"
            );
        }
        assert_eq!(
            p.check_url(&url("https://images.example.com/a.qcow2")),
            Ok(())
        );
        assert_eq!(p.check_url(&url("http://203.0.113.7/a.qcow2")), Ok(()));
    }

    #[test]
    fn only_http_and_https_are_fetched() {
        let p = FetchPolicy::default();
        assert_eq!(
            p.check_url(&url("file:///etc/shadow")),
            Err(Refused::Scheme("file".into()))
        );
        assert!(matches!(
            p.check_url(&url("ftp://example.com/x")),
            Err(Refused::Scheme(_))
        ));
    }

    #[test]
    fn cluster_ranges_are_refused_and_an_allowed_range_wins() {
        let p = FetchPolicy {
            denied: vec!["10.96.0.0/12".parse().unwrap()],
            allowed: vec!["127.0.0.2/32".parse().unwrap()],
            ..Default::default()
        };
        let err = p.check_url(&url("http://10.96.0.1/x")).unwrap_err();
        assert!(err.to_string().contains("cluster-internal"), "{err}");
        assert_eq!(p.check_url(&url("http://127.0.0.2:9000/x")), Ok(()));
        assert!(p.check_url(&url("http://127.0.0.1/x")).is_err());
        assert_eq!(p.check_url(&url("http://10.0.0.5/x")), Ok(()));
    }

    #[test]
    fn an_allow_list_of_hosts_narrows_the_sources() {
        let p = FetchPolicy {
            hosts: vec!["images.example.com".into()],
            ..Default::default()
        };
        assert_eq!(p.check_url(&url("https://IMAGES.example.com/x")), Ok(()));
        assert_eq!(
            p.check_url(&url("https://evil.example.com/x")),
            Err(Refused::Host("evil.example.com".into()))
        );
    }
}
