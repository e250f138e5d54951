//! Where servetest may listen and send without `--allow-remote`: loopback, and the private network
//! of the cluster a job runs on when its profile names one (`network:` → `SERVETEST_CLUSTER_NETWORK`
//! in the job's environment, e.g. the multi-node test cluster's 10.231.0.0/24). Host names are
//! resolved first, and every address they resolve to must be inside.

use std::net::{IpAddr, ToSocketAddrs};

use ipnet::IpNet;

/// Set by job scripts from the cluster profile's `network`.
pub const CLUSTER_NETWORK: &str = "SERVETEST_CLUSTER_NETWORK";

/// The cluster network named in the environment; a malformed value is an error, not "none".
pub fn cluster_network() -> Result<Option<IpNet>, String> {
    match std::env::var(CLUSTER_NETWORK) {
        Ok(v) if !v.trim().is_empty() => parse(&v).map(Some),
        _ => Ok(None),
    }
}

/// A cluster network: private addresses only (RFC 1918, shared 100.64/10, unique-local fc00::/7),
/// at most a /8, so an environment variable cannot open servetest to the internet or every address.
pub fn parse(text: &str) -> Result<IpNet, String> {
    let net = text
        .trim()
        .parse::<IpNet>()
        .map_err(|e| format!("network `{text}`: {e} (expected a CIDR such as 10.231.0.0/24)"))?;
    let private = match net {
        IpNet::V4(n) => {
            n.prefix_len() >= 8
                && (n.addr().is_private()
                    || "100.64.0.0/10"
                        .parse::<ipnet::Ipv4Net>()
                        .unwrap()
                        .contains(&n))
        }
        IpNet::V6(n) => {
            n.prefix_len() >= 7 && "fc00::/7".parse::<ipnet::Ipv6Net>().unwrap().contains(&n)
        }
    };
    if !private {
        return Err(format!(
            "network `{text}`: not a private network of at most /8 (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)"
        ));
    }
    Ok(net)
}

/// `[::1]` → `::1`: one pair of URL brackets around an IPv6 address.
pub fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The address roles and aggregated servers bind and advertise: `SERVETEST_SERVE_HOST`, `hostname`
/// meaning this node's own name, default 127.0.0.1.
pub fn serve_host() -> Result<String, String> {
    match crate::env::serve_host().as_deref() {
        None => Ok("127.0.0.1".to_owned()),
        Some("hostname") => nix::unistd::gethostname()
            .map_err(|e| format!("gethostname: {e}"))
            .map(|h| h.to_string_lossy().into_owned()),
        Some(h) => {
            check_serve_host(h, None).map_err(|r| format!("{}: {r}", crate::env::SERVE_HOST))?;
            Ok(h.to_owned())
        }
    }
}

/// A profile's `serve_host` (an IP, a name, or `hostname`): never the unspecified address, which
/// binds every interface and which no other role can connect to; with a cluster network, an IP must
/// be loopback or inside it. (Names resolve on the nodes, not here.)
pub fn check_serve_host(host: &str, network: Option<&IpNet>) -> Result<(), String> {
    let Ok(ip) = unbracket(host).parse::<IpAddr>() else {
        return Ok(());
    };
    if ip.is_unspecified() {
        return Err(format!(
            "{host} binds every interface and is no address other roles can reach; give the node's address or `hostname`"
        ));
    }
    match network {
        Some(n) if !ip.is_loopback() && !n.contains(&ip) => {
            Err(format!("{host} is outside the profile's network {n}"))
        }
        _ => Ok(()),
    }
}

/// The addresses `host` names: itself when it is an IP, else what the resolver answers.
pub fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    let bare = unbracket(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs: Vec<IpAddr> = (bare, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host `{host}`: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!("host `{host}` resolves to no address"));
    }
    Ok(addrs)
}

/// The address to bind for `host`: itself when it is an IP, else its first resolved address (IPv4
/// first), else the name unchanged for the program to resolve.
pub fn bind_ip(host: &str) -> String {
    let Ok(mut addrs) = resolve(host) else {
        return host.to_owned();
    };
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .first()
        .map_or_else(|| host.to_owned(), IpAddr::to_string)
}

/// True when every address of `host` is loopback or inside `network`.
pub fn is_internal_with(host: &str, network: Option<&IpNet>) -> Result<bool, String> {
    Ok(resolve(host)?.iter().all(|ip| {
        ip.is_loopback() || (!ip.is_unspecified() && network.is_some_and(|n| n.contains(ip)))
    }))
}

/// `is_internal_with` the environment's cluster network.
pub fn is_internal(host: &str) -> Result<bool, String> {
    is_internal_with(host, cluster_network()?.as_ref())
}

/// Whether a client servetest starts inside a job needs `--allow-remote` to reach `host`: when the
/// host is not loopback (written as such; no lookup) and the job names no cluster network. With a
/// network, the client checks the host against it itself.
pub fn client_needs_allow_remote(host: &str) -> Result<bool, String> {
    let bare = unbracket(host);
    let loopback = bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    Ok(!loopback && cluster_network()?.is_none())
}

/// The refusal every listener and client shares, naming what would make `host` acceptable.
pub fn check(host: &str, allow_remote: bool, what: &str) -> Result<(), String> {
    if allow_remote || is_internal(host)? {
        return Ok(());
    }
    let scope = match cluster_network()? {
        Some(n) => format!("loopback or the cluster network {n}"),
        None => "loopback".to_owned(),
    };
    Err(format!(
        "refusing to {what} {host}: it is not {scope}; pass --allow-remote to allow it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_the_cluster_network_are_internal_and_nothing_else() {
        let net = parse("10.231.0.0/24").unwrap();
        for host in ["127.0.0.1", "::1", "[::1]", "localhost"] {
            assert!(is_internal_with(host, None).unwrap(), "{host}");
        }
        assert!(is_internal_with("10.231.0.12", Some(&net)).unwrap());
        assert!(!is_internal_with("10.231.0.12", None).unwrap());
        assert!(!is_internal_with("10.231.1.12", Some(&net)).unwrap());
        assert!(!is_internal_with("192.0.2.2", Some(&net)).unwrap());
        assert!(!is_internal_with("0.0.0.0", Some(&net)).unwrap());
        assert!(parse("10.231.0.0/33").is_err());
        for wide in [
            "0.0.0.0/0",
            "0.0.0.0/8",
            "8.8.8.0/24",
            "10.0.0.0/7",
            "::/0",
            "2001:db8::/32",
        ] {
            assert!(parse(wide).is_err(), "{wide} accepted");
        }
        for ok in [
            "10.0.0.0/8",
            "172.16.5.0/24",
            "192.168.1.0/24",
            "100.64.0.0/16",
            "fd00::/64",
        ] {
            assert!(parse(ok).is_ok(), "{ok} refused");
        }
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("[[::1]]"), "[::1]");
        assert!(resolve("no-such-host.invalid").is_err());
        assert_eq!(bind_ip("localhost"), "127.0.0.1");
        assert_eq!(bind_ip("10.231.0.12"), "10.231.0.12");
        for host in ["127.0.0.1", "localhost", "[::1]"] {
            assert!(!client_needs_allow_remote(host).unwrap(), "{host}");
        }
    }
}
