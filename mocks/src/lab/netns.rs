//! The lab's names and namespaces: the per-lab prefix and every namespace and
//! link name derived from it, the one command runner the lab shells out
//! through (`ip`, `sh`), creating and deleting network namespaces, the claim
//! that keeps two labs from sharing a prefix, and the check whether this
//! machine can run a lab at all.
//!
//! Naming: with prefix `p` the namespaces are `p-vsw` (the vSwitch bridges),
//! `p-rtr` (the VPC router), `p-vm`, `p-n<k>` (node `k`) and `p-pod-<name>`;
//! links are `p<kind><n>` (see [`Names`]) and never longer than the kernel's
//! 15 characters. Everything named `p-*` under `/run/netns` belongs to the
//! lab holding the claim on `p`, so a lab sweeps what a killed run of the same
//! prefix left behind before it builds.

use super::LabError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `ip netns` pins named namespaces (`/var/run` is a link to it).
pub const NETNS_DIR: &str = "/run/netns";
/// Where a lab claims its prefix with a lock file.
const CLAIM_DIR: &str = "/run/vpc-eni-lab";
/// Longest prefix: the longest link name is the prefix, two letters and a
/// counter, within the kernel's 15 characters.
pub const MAX_PREFIX: usize = 8;
/// Linux `IFNAMSIZ - 1`.
const MAX_LINK_NAME: usize = 15;

/// A network namespace of a lab, by name. Only a lab makes one, so every
/// `Netns` a caller holds is inside some lab.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Netns { name: name.into() }
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount a runtime passes as `CNI_NETNS`: `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Every name of one lab, derived from its prefix.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// A prefix is 1 to [`MAX_PREFIX`] lowercase letters and digits, starting
    /// with a letter (no `-`, so `p-` never matches another lab's names).
    pub fn new(prefix: &str) -> Result<Names, LabError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(LabError::Prefix(format!(
                "{prefix:?}: use 1 to {MAX_PREFIX} lowercase letters and digits, starting with a letter"
            )));
        }
        Ok(Names {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn ns(&self, role: &str) -> Netns {
        Netns::new(format!("{}-{role}", self.prefix))
    }

    pub fn vswitch_ns(&self) -> Netns {
        self.ns("vsw")
    }

    pub fn router_ns(&self) -> Netns {
        self.ns("rtr")
    }

    pub fn vm_ns(&self) -> Netns {
        self.ns("vm")
    }

    pub fn node_ns(&self, k: u32) -> Netns {
        self.ns(&format!("n{k}"))
    }

    /// A pod's namespace; `name` is 1 to 40 of `[A-Za-z0-9._-]`.
    pub fn pod_ns(&self, name: &str) -> Result<Netns, LabError> {
        let ok = !name.is_empty()
            && name.len() <= 40
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(LabError::Invalid(format!(
                "pod namespace name {name:?}: use 1 to 40 of [A-Za-z0-9._-]"
            )));
        }
        Ok(self.ns(&format!("pod-{name}")))
    }

    /// Whether a namespace name is one of this lab's.
    pub fn owns_ns(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with('-'))
    }

    /// `p<kind><n>`: `b` bridge (vSwitch), `r`/`rb` router leg and its bridge
    /// port, `n`/`nb` node primary interface and port, `e`/`eb` ENI and port,
    /// `vm`/`vmb` the VM's interface and port.
    pub fn link(&self, kind: &str, n: Option<u32>) -> Result<String, LabError> {
        let name = match n {
            Some(n) => format!("{}{kind}{n}", self.prefix),
            None => format!("{}{kind}", self.prefix),
        };
        if name.len() > MAX_LINK_NAME {
            return Err(LabError::Invalid(format!(
                "link name {name} is longer than {MAX_LINK_NAME} characters: use a shorter prefix"
            )));
        }
        Ok(name)
    }
}

/// Run a command to its end; its stdout, or its stderr as the error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    tracing::trace!(program, ?args, "lab command");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n <ns> <args>`.
pub(crate) fn ip_in(ns: &Netns, args: &[&str]) -> Result<String, LabError> {
    let mut all = vec!["-n", ns.name()];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Write a sysctl inside a namespace (`sh`, so no procps is needed).
pub(crate) fn sysctl_in(ns: &Netns, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let script = format!("echo {value} > {path}");
    run("ip", &["netns", "exec", ns.name(), "sh", "-c", &script]).map(|_| ())
}

/// A new namespace with its loopback up, as a container runtime makes one.
pub(crate) fn create(ns: &Netns) -> Result<(), LabError> {
    run("ip", &["netns", "add", ns.name()])?;
    ip_in(ns, &["link", "set", "lo", "up"]).map(|_| ())
}

/// Delete a namespace; one that is gone already counts as deleted.
pub(crate) fn delete(ns: &Netns) -> Result<(), LabError> {
    if !Path::new(NETNS_DIR).join(ns.name()).exists() {
        return Ok(());
    }
    run("ip", &["netns", "del", ns.name()]).map(|_| ())
}

/// Names of every pinned namespace on the machine.
pub(crate) fn list_all() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// This lab's namespaces (`p-*`).
pub(crate) fn list_owned(names: &Names) -> Vec<Netns> {
    list_all()
        .into_iter()
        .filter(|n| names.owns_ns(n))
        .map(Netns::new)
        .collect()
}

/// Delete every namespace of the lab; the names still there afterwards.
/// Deleting the vSwitch namespace first takes every veth pair with it, since
/// each has one end on a bridge there.
pub(crate) fn delete_all(names: &Names) -> Vec<String> {
    let mut owned = list_owned(names);
    owned.sort_by_key(|n| *n != names.vswitch_ns());
    for ns in &owned {
        if let Err(e) = delete(ns) {
            tracing::warn!(ns = ns.name(), error = %e, "lab namespace not deleted");
        }
    }
    list_owned(names)
        .into_iter()
        .map(|n| n.name().to_owned())
        .collect()
}

/// An exclusive claim on a prefix, held for the life of the lab: a second lab
/// with the same prefix (another test, another engineer's run on the same
/// machine) waits for it instead of sweeping its namespaces away.
pub(crate) struct Claim {
    file: File,
    path: PathBuf,
}

impl Claim {
    pub fn take(names: &Names, wait: Duration) -> Result<Claim, LabError> {
        std::fs::create_dir_all(CLAIM_DIR)?;
        let path = Path::new(CLAIM_DIR).join(format!("{}.lock", names.prefix()));
        let deadline = Instant::now() + wait;
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            match file.try_lock() {
                Ok(()) => {
                    // The holder before us removes the file on release: a lock
                    // on a file no longer at `path` claims nothing.
                    if same_file(&file, &path) {
                        return Ok(Claim { file, path });
                    }
                }
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(LabError::Prefix(format!(
                    "{}: another lab holds it ({} is locked); pick another prefix",
                    names.prefix(),
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Whether a lab can run here; the reason in one line when not. Checked once
/// per process.
pub fn available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("the lab needs Linux network namespaces".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    if uid != "0" {
        return Err(format!(
            "the lab needs root for network namespaces (effective uid {uid})"
        ));
    }
    if run("ip", &["-V"]).is_err() {
        return Err("`ip` not found: apt-get install iproute2".into());
    }
    if run("ping", &["-V"]).is_err() {
        return Err("`ping` not found: apt-get install iputils-ping".into());
    }
    let ns = Netns::new(format!("vpcenilab-probe-{}", std::process::id()));
    let result = create(&ns)
        .and_then(|_| ip_in(&ns, &["link", "add", "probe0", "type", "bridge"]))
        .and_then(|_| {
            ip_in(
                &ns,
                &[
                    "link", "add", "probe1", "type", "veth", "peer", "name", "probe2",
                ],
            )
        });
    let _ = delete(&ns);
    result.map(|_| ()).map_err(|e| {
        let line = e.to_string();
        let line = line.lines().next().unwrap_or_default();
        format!("network namespaces with bridge and veth links do not work here: {line}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_lowercase_and_without_dashes() {
        assert!(Names::new("lab1").is_ok());
        assert!(Names::new("abcdefgh").is_ok());
        for bad in ["", "abcdefghi", "1lab", "la-b", "Lab", "la b"] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_name_carries_the_prefix_and_links_fit_the_kernel() {
        let n = Names::new("abcdefgh").unwrap();
        assert_eq!(n.vswitch_ns().name(), "abcdefgh-vsw");
        assert_eq!(n.node_ns(3).path(), Path::new("/var/run/netns/abcdefgh-n3"));
        assert_eq!(n.pod_ns("web-1").unwrap().name(), "abcdefgh-pod-web-1");
        assert!(n.pod_ns("a/b").is_err());
        assert_eq!(n.link("eb", Some(99999)).unwrap(), "abcdefgheb99999");
        assert!(n.link("eb", Some(100000)).is_err());
        assert!(n.owns_ns("abcdefgh-n1"));
        assert!(!n.owns_ns("abcdefghx-n1"));
        assert!(!n.owns_ns("abcdefgh"));
    }
}
