//! The `network` object of a create request (E2B's `SandboxNetworkConfig`).
//!
//! burrow's sandboxes have open egress; their URLs are public, or private behind a traffic access
//! token (`allowPublicTraffic: false`). A config asking for that is accepted. Anything else is
//! valid E2B input burrow does not implement yet: the caller gets a 501 naming the fields, never
//! a sandbox with a policy it did not ask for. Malformed input is a 400 first.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

use crate::error::ApiError;

/// `denyOut` entry that blocks all egress (E2B's `ALL_TRAFFIC`).
const ALL_TRAFFIC: &str = "0.0.0.0/0";
/// envd's port: E2B refuses it in `httpsPorts`.
const ENVD_PORT: u16 = 49983;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkConfig {
    allow_public_traffic: Option<bool>,
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    dns_servers: Option<Vec<Ipv4Addr>>,
    egress_proxy: Option<BTreeMap<String, serde_json::Value>>,
    mask_request_host: Option<String>,
    https_ports: Option<Vec<u16>>,
    rules: Option<BTreeMap<String, serde_json::Value>>,
    /// Fields this version of burrow does not know.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

/// What a create's `network` asks for.
#[derive(Debug)]
pub struct Checked {
    /// `allowPublicTraffic` (default true).
    pub public_traffic: bool,
    /// A 501 to return once the rest of the request is validated: it asks for something burrow
    /// does not do yet.
    pub unsupported: Option<ApiError>,
}

/// Checks `network`: `Err` (400) when it is malformed.
pub fn check(network: Option<&serde_json::Value>) -> Result<Checked, ApiError> {
    let config: NetworkConfig = match network {
        None | Some(serde_json::Value::Null) => NetworkConfig::default(),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid network: {e}")))?,
    };
    validate(&config)?;
    Ok(Checked {
        public_traffic: config.allow_public_traffic.unwrap_or(true),
        unsupported: unsupported(&config),
    })
}

fn unsupported(config: &NetworkConfig) -> Option<ApiError> {
    let mut unsupported = Vec::new();
    let non_empty = [
        (
            "allowOut",
            config.allow_out.as_ref().is_some_and(|l| !l.is_empty()),
        ),
        (
            "denyOut",
            config.deny_out.as_ref().is_some_and(|l| !l.is_empty()),
        ),
        // Even `[]` changes E2B's default (8.8.8.8 allowed), so any value is a policy.
        ("dnsServers", config.dns_servers.is_some()),
        ("egressProxy", config.egress_proxy.is_some()),
        ("maskRequestHost", config.mask_request_host.is_some()),
        (
            "httpsPorts",
            config.https_ports.as_ref().is_some_and(|l| !l.is_empty()),
        ),
        (
            "rules",
            config.rules.as_ref().is_some_and(|r| !r.is_empty()),
        ),
    ];
    unsupported.extend(
        non_empty
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(field, _)| field.to_owned()),
    );
    unsupported.extend(config.unknown.keys().cloned());
    if unsupported.is_empty() {
        return None;
    }
    Some(ApiError::not_implemented(format!(
        "network.{} not supported by burrow yet: its sandboxes have unrestricted egress (omit \
         these fields; allowPublicTraffic is supported)",
        match unsupported.as_slice() {
            [one] => format!("{one} is"),
            many => format!("{{{}}} are", many.join(", ")),
        }
    )))
}

/// E2B's own 400s: deny lists take addresses only, an allow list with domains needs a deny-all.
fn validate(config: &NetworkConfig) -> Result<(), ApiError> {
    let deny_out = config.deny_out.as_deref().unwrap_or_default();
    for entry in deny_out {
        if !is_ip_or_cidr(entry) {
            return Err(ApiError::bad_request(format!(
                "invalid network.denyOut entry {entry:?}: expected an IP address or CIDR block \
                 (domains can only be allowed)"
            )));
        }
    }
    for entry in config.allow_out.as_deref().unwrap_or_default() {
        if is_ip_or_cidr(entry) {
            continue;
        }
        if !is_domain_pattern(entry) {
            return Err(ApiError::bad_request(format!(
                "invalid network.allowOut entry {entry:?}: expected an IP address, CIDR block, \
                 domain or *.domain"
            )));
        }
        if !deny_out.iter().any(|d| d == ALL_TRAFFIC) {
            return Err(ApiError::bad_request(format!(
                "network.allowOut contains the domain {entry:?}: allowing domains requires \
                 denyOut to contain {ALL_TRAFFIC:?}"
            )));
        }
    }
    for &port in config.https_ports.as_deref().unwrap_or_default() {
        if port == 0 || port == ENVD_PORT {
            return Err(ApiError::bad_request(format!(
                "invalid network.httpsPorts entry {port}: expected a port from 1 to 65535 other \
                 than envd's {ENVD_PORT}"
            )));
        }
    }
    Ok(())
}

fn is_ip_or_cidr(entry: &str) -> bool {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let Ok(ip) = address.parse::<IpAddr>() else {
        return false;
    };
    let max_prefix = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| {
        p.parse::<u8>()
            .is_ok_and(|bits| bits <= max_prefix && !p.starts_with('+'))
    })
}

/// `example.com` or `*.example.com`: DNS labels of letters, digits and inner hyphens.
fn is_domain_pattern(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_domains_are_told_apart() {
        for ok in ["10.0.0.0/8", "1.2.3.4", "0.0.0.0/0", "::1", "fd00::/8"] {
            assert!(is_ip_or_cidr(ok), "{ok}");
        }
        for bad in [
            "10.0.0.0/33",
            "example.com",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "::/129",
        ] {
            assert!(!is_ip_or_cidr(bad), "{bad}");
        }
        for ok in ["example.com", "*.example.com", "a-b.c.d"] {
            assert!(is_domain_pattern(ok), "{ok}");
        }
        for bad in [
            "*",
            "localhost",
            "*.com.",
            "-a.com",
            "a..com",
            "ex ample.com",
        ] {
            assert!(!is_domain_pattern(bad), "{bad}");
        }
    }
}
