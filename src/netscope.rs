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

pub fn parse(text: &str) -> Result<IpNet, String> {
    text.trim()
        .parse::<IpNet>()
        .map_err(|e| format!("network `{text}`: {e} (expected a CIDR such as 10.231.0.0/24)"))
}

/// The addresses `host` names: itself when it is an IP, else what the resolver answers.
pub fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
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
    Ok(resolve(host)?
        .iter()
        .all(|ip| ip.is_loopback() || network.is_some_and(|n| n.contains(ip))))
}

/// `is_internal_with` the environment's cluster network.
pub fn is_internal(host: &str) -> Result<bool, String> {
    is_internal_with(host, cluster_network()?.as_ref())
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
        assert!(resolve("no-such-host.invalid").is_err());
        assert_eq!(bind_ip("localhost"), "127.0.0.1");
        assert_eq!(bind_ip("10.231.0.12"), "10.231.0.12");
    }
}
