//! Names and marks the plugin leaves on links so that a later DEL, CHECK or
//! GC (possibly from a newer binary, with no state but the kernel's) finds
//! them again: the pod<->node veth's names, derived from the container id,
//! the link alias (`IFLA_IFALIAS`) recording an ENI's host-side name, and
//! the alias on a shared-ENI pod's host veth recording the pod's IP (what
//! its policy rules are keyed on).

use sha1::{Digest, Sha1};

/// Prefix of the host-side veth of an exclusive-ENI pod.
pub const HOST_VETH_PREFIX: &str = "vec";
/// Prefix of the host-side veth of a shared-ENI pod.
pub const SHARED_VETH_PREFIX: &str = "ves";
/// Prefix of the veth's other end while it is still in the host namespace.
const PEER_TEMP_PREFIX: &str = "vep";

/// The address on the host side of every pod<->node veth: the pod's next hop
/// to the node and to Services, and the source of node -> pod traffic.
pub const HOST_VETH_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 1, 1);

const ALIAS_ENI: &str = "vpc-eni-cni:eni:";
const ALIAS_VETH: &str = "vpc-eni-cni:veth:";
const ALIAS_SHARED: &str = "vpc-eni-cni:shared:";

/// 12 hex digits of SHA-1 of the container id: stable across binaries and
/// releases (unlike `std`'s hasher), 48 bits so two pods of one node collide
/// with negligible odds.
fn digest12(container_id: &str) -> String {
    let d = Sha1::digest(container_id.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The host-side name of the pod's veth: `vec` + 12 hex digits (15 chars,
/// the kernel's limit).
pub fn host_veth(container_id: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", digest12(container_id))
}

/// The host-side name of a shared-ENI pod's veth: `ves` + the same 12 hex
/// digits (another prefix than [`host_veth`], so the two paths never take
/// each other's links).
pub fn shared_host_veth(container_id: &str) -> String {
    format!("{SHARED_VETH_PREFIX}{}", digest12(container_id))
}

/// The alias on a shared-ENI pod's host veth: the container and the pod's
/// IP, so DEL finds the pod's rules with nothing but the kernel's state.
pub fn shared_alias(container_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{ALIAS_SHARED}{container_id}:{ip}")
}

/// `(container id, pod IP)` from a shared-veth alias this plugin wrote.
pub fn parse_shared_alias(alias: &str) -> Option<(&str, std::net::Ipv4Addr)> {
    let rest = alias.strip_prefix(ALIAS_SHARED)?;
    let (cid, ip) = rest.split_once(':')?;
    let ip = ip.parse().ok()?;
    (!cid.is_empty()).then_some((cid, ip))
}

/// The pod end's name while it is created in the host namespace (it is
/// renamed as it moves into the pod, so parallel ADDs never clash).
pub fn peer_temp(container_id: &str) -> String {
    format!("{PEER_TEMP_PREFIX}{}", digest12(container_id))
}

/// The pod end's name inside the pod: `veth0`, or `veth1` if the runtime
/// named the ENI's interface `veth0`.
pub fn pod_veth(ifname: &str) -> &'static str {
    if ifname == "veth0" {
        "veth1"
    } else {
        "veth0"
    }
}

/// The alias put on an ENI link while a pod holds it: the container and the
/// name the link had in the host namespace.
pub fn eni_alias(container_id: &str, host_name: &str) -> String {
    format!("{ALIAS_ENI}{container_id}:{host_name}")
}

/// `(container id, host name)` from an ENI alias this plugin wrote.
pub fn parse_eni_alias(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix(ALIAS_ENI)?;
    let (cid, name) = rest.split_once(':')?;
    (!cid.is_empty() && !name.is_empty()).then_some((cid, name))
}

/// The alias on the host side of a pod's veth.
pub fn veth_alias(container_id: &str) -> String {
    format!("{ALIAS_VETH}{container_id}")
}

/// The container id from a veth alias this plugin wrote.
pub fn parse_veth_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(ALIAS_VETH).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "3f1d2c7be0a94c5e8f0e5a7d8c9b0a1f2e3d4c5b6a798877665544332211aabb";

    #[test]
    fn veth_names_fit_the_kernel_and_are_stable() {
        let h = host_veth(CID);
        assert_eq!(h.len(), 15);
        assert!(h.starts_with("vec"));
        assert!(h[3..].chars().all(|c| c.is_ascii_hexdigit()));
        // SHA-1 of the id, so the same on every build and release.
        assert_eq!(h, host_veth(CID));
        assert_eq!(host_veth("abc"), "veca9993e364706");
        assert_ne!(host_veth("abc"), host_veth("abd"));
        assert_eq!(peer_temp(CID).len(), 15);
        assert_eq!(&peer_temp(CID)[3..], &h[3..]);
        assert_ne!(peer_temp(CID), h);
    }

    #[test]
    fn pod_veth_never_takes_the_enis_name() {
        assert_eq!(pod_veth("eth0"), "veth0");
        assert_eq!(pod_veth("veth0"), "veth1");
    }

    #[test]
    fn aliases_round_trip() {
        let a = eni_alias(CID, "eth1");
        assert_eq!(parse_eni_alias(&a), Some((CID, "eth1")));
        assert!(a.len() < 256);
        assert_eq!(parse_eni_alias("something else"), None);
        assert_eq!(parse_eni_alias("vpc-eni-cni:eni::eth1"), None);
        assert_eq!(parse_veth_alias(&veth_alias(CID)), Some(CID));
        assert_eq!(parse_veth_alias(&a), None);
        assert_eq!(parse_eni_alias(&veth_alias(CID)), None);
        let ip = std::net::Ipv4Addr::new(192, 168, 0, 20);
        let s = shared_alias(CID, ip);
        assert_eq!(parse_shared_alias(&s), Some((CID, ip)));
        assert!(s.len() < 256);
        assert_eq!(parse_veth_alias(&s), None);
        assert_eq!(parse_eni_alias(&s), None);
        assert_eq!(parse_shared_alias(&veth_alias(CID)), None);
        assert_eq!(parse_shared_alias("vpc-eni-cni:shared:x:not-an-ip"), None);
    }

    #[test]
    fn shared_veths_never_take_the_exclusive_paths_names() {
        let s = shared_host_veth(CID);
        assert_eq!(s.len(), 15);
        assert!(s.starts_with("ves"));
        assert_ne!(s, host_veth(CID));
        assert_ne!(s, peer_temp(CID));
        assert_eq!(&s[3..], &host_veth(CID)[3..]);
    }
}
