//! The lab: a VPC made of network namespaces on this machine, driven by the
//! in-memory cloud's state, so packets (not API calls) prove the data path.
//!
//! ```text
//!   p-vm ──┐                     p-rtr (forwarding; its routes = the VPC route table)
//!          │                      │ leg per vSwitch, holding the vSwitch gateway
//!   p-vsw: bridge pb0 ─────────── bridge pb1 ...       (one bridge per vSwitch)
//!          │         │              │
//!   p-n0: pn0 (primary, MAC/IP of the instance)   pe3 (an attached ENI: its MAC, down)
//!   p-pod-<name>: made as a runtime makes it; the CNI plugin moves an ENI in
//! ```
//!
//! The VPC delivers an address to the ENI the cloud assigned it to: each
//! private IP of an in-use ENI (primary, and every secondary IP
//! `AssignPrivateIpAddresses` gave it) is a permanent neighbour entry on the
//! router's leg, IP -> that ENI's MAC, kept in step with the cloud by
//! [`sync`] ([`Lab::delivers`] reads one back). So a shared-ENI pod's
//! secondary IP is routed to its node's ENI link, however hosts answer ARP;
//! on one vSwitch, hosts (the VM) still find each other by ARP.
//!
//! - [`netns`]: names from the per-lab prefix, namespaces, the prefix claim,
//!   [`Lab::available`];
//! - [`topology`]: bridges, router legs, nodes, the VM, ENI links, read-back;
//! - [`sync`]: the picture of the world and the loop that follows it;
//! - [`pod`]: pod namespaces and running a CNI plugin as a runtime does;
//! - [`probe`]: commands and bounded pings inside the lab.
//!
//! Everything the lab makes is named after its prefix and removed when the
//! [`Lab`] is dropped (also while a test panics) or by [`Lab::teardown`].
//! Traffic starts only inside the lab's namespaces: the router has no route
//! out, and the host namespace is never the source of a ping.

pub mod netns;
pub mod pod;
pub mod probe;
pub mod sync;
pub mod topology;

pub use netns::Netns;
pub use pod::{plugin_config, CniCall, CniCommand, CniOutcome, PodRef, HOST_NETNS_ENV};
pub use probe::ExecOutput;
pub use topology::{Link, RouteTarget};

use crate::cloud::World;
use ipam::ids::{InstanceId, SubnetId, VpcId};
use ipnet::Ipv4Net;
use netns::{Claim, Names};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sync::{Built, Shared};
use tokio::task::JoinHandle;

/// Why the lab could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab unavailable: {0}")]
    Unavailable(String),
    #[error("lab prefix {0}")]
    Prefix(String),
    #[error("lab: {0}")]
    Invalid(String),
    #[error("lab command `{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("lab: cannot parse {0}")]
    Parse(String),
    #[error("lab: timed out: {0}")]
    Timeout(String),
    #[error("lab: {0}")]
    Io(#[from] std::io::Error),
    #[error("lab teardown left namespaces behind: {0:?}")]
    Leftovers(Vec<String>),
    #[error("lab: background work failed: {0}")]
    Join(String),
}

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Every namespace (`<prefix>-...`) and link (`<prefix>...`) carries it:
    /// 1 to 8 lowercase letters and digits, starting with a letter, unique
    /// per test.
    pub prefix: String,
    /// The VPC to build; `None`: the world's only VPC.
    pub vpc: Option<VpcId>,
    /// The vSwitch the VM sits on; `None`: the VPC's first by id.
    pub vm_vswitch: Option<SubnetId>,
    /// How often the follower reads the world; `None`: only on
    /// [`Lab::sync`].
    pub poll: Option<Duration>,
    /// How long to wait for another lab holding the same prefix to end.
    pub claim_wait: Duration,
}

impl LabConfig {
    /// Defaults: the only VPC, the VM on its first vSwitch, a pass every
    /// 100 ms, up to 2 minutes' wait for the prefix.
    pub fn new(prefix: impl Into<String>) -> LabConfig {
        LabConfig {
            prefix: prefix.into(),
            vpc: None,
            vm_vswitch: None,
            poll: Some(Duration::from_millis(100)),
            claim_wait: Duration::from_secs(120),
        }
    }
}

/// A running lab. Dropping it removes everything it made.
pub struct Lab {
    shared: Arc<Shared>,
    follower: Option<JoinHandle<()>>,
    _claim: Claim,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LabError> + Send + 'static,
) -> Result<T, LabError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LabError::Join(e.to_string()))?
}

impl Lab {
    /// Whether a lab can run on this machine (root, network namespaces with
    /// bridge and veth links, `ip` and `ping`); the reason in one line when
    /// not, for a test to print as it skips.
    pub fn available() -> Result<(), String> {
        netns::available()
    }

    /// Claim the prefix, sweep what an earlier run with it left behind, build
    /// the lab from the world's current state and start following it.
    pub async fn start(world: World, config: LabConfig) -> Result<Lab, LabError> {
        Lab::available().map_err(LabError::Unavailable)?;
        let names = Names::new(&config.prefix)?;
        let snap = world.snapshot();
        let vpc = match config.vpc.clone() {
            Some(vpc) => vpc,
            None => {
                let mut vpcs: Vec<&VpcId> = snap.subnets.iter().map(|s| &s.vpc_id).collect();
                vpcs.sort();
                vpcs.dedup();
                match vpcs.as_slice() {
                    [one] => (*one).clone(),
                    [] => return Err(LabError::Invalid("the world has no vSwitch".into())),
                    _ => {
                        return Err(LabError::Invalid(format!(
                            "the world has VPCs {vpcs:?}: name one in LabConfig::vpc"
                        )))
                    }
                }
            }
        };
        let mut in_vpc: Vec<&SubnetId> = snap
            .subnets
            .iter()
            .filter(|s| s.vpc_id == vpc)
            .map(|s| &s.id)
            .collect();
        in_vpc.sort();
        let vm_vswitch = match config.vm_vswitch.clone() {
            Some(id) if in_vpc.contains(&&id) => id,
            Some(id) => {
                return Err(LabError::Invalid(format!(
                    "vSwitch {id} for the VM is not in VPC {vpc}"
                )))
            }
            None => in_vpc
                .first()
                .map(|id| (*id).clone())
                .ok_or_else(|| LabError::Invalid(format!("VPC {vpc} has no vSwitch")))?,
        };
        let claim = {
            let (names, wait) = (names.clone(), config.claim_wait);
            blocking(move || Claim::take(&names, wait)).await?
        };
        let shared = Arc::new(Shared {
            names,
            world,
            vpc,
            vm_vswitch,
            built: parking_lot::Mutex::new(Built::default()),
        });
        // From here on, dropping `lab` removes whatever was made.
        let mut lab = Lab {
            shared: shared.clone(),
            follower: None,
            _claim: claim,
        };
        blocking(move || {
            let stale = netns::list_owned(&shared.names);
            if !stale.is_empty() {
                tracing::info!(
                    lab = shared.names.prefix(),
                    ?stale,
                    "sweeping namespaces of an earlier run"
                );
            }
            let left = netns::delete_all(&shared.names);
            if !left.is_empty() {
                return Err(LabError::Leftovers(left));
            }
            topology::create_base(&shared.names)?;
            shared.reconcile(true)
        })
        .await?;
        if let Some(every) = config.poll {
            lab.follower = Some(tokio::spawn(sync::follow(lab.shared.clone(), every)));
        }
        Ok(lab)
    }

    /// Make the lab match the world now (and re-read the kernel).
    pub async fn sync(&self) -> Result<(), LabError> {
        let shared = self.shared.clone();
        blocking(move || shared.reconcile(true)).await
    }

    pub fn prefix(&self) -> &str {
        self.shared.names.prefix()
    }

    /// The namespace holding one bridge per vSwitch.
    pub fn vswitch_netns(&self) -> Netns {
        self.shared.names.vswitch_ns()
    }

    /// The VPC router: one leg per vSwitch, routes = the VPC route table.
    pub fn router_netns(&self) -> Netns {
        self.shared.names.router_ns()
    }

    /// A host in the VPC that is no node: where "the rest of the VPC" pings from.
    pub fn vm_netns(&self) -> Netns {
        self.shared.names.vm_ns()
    }

    /// The VM's address (with the vSwitch's prefix length), once built.
    pub fn vm_addr(&self) -> Option<Ipv4Net> {
        self.shared.built.lock().vm.as_ref().map(|(_, a)| *a)
    }

    /// The namespace of an instance's node, once built.
    pub fn node_netns(&self, instance: &InstanceId) -> Option<Netns> {
        self.shared
            .built
            .lock()
            .nodes
            .get(instance)
            .map(|n| n.ns.clone())
    }

    /// The primary address of a built node.
    pub fn node_ip(&self, instance: &InstanceId) -> Option<Ipv4Addr> {
        self.shared.built.lock().nodes.get(instance).map(|n| n.ip)
    }

    /// Every namespace of this lab now (pods included).
    pub fn namespaces(&self) -> Vec<Netns> {
        netns::list_owned(&self.shared.names)
    }

    fn check_owned(&self, ns: &Netns) -> Result<(), LabError> {
        if self.shared.names.owns_ns(ns.name()) {
            Ok(())
        } else {
            Err(LabError::Invalid(format!(
                "{ns} is not a namespace of lab {}",
                self.prefix()
            )))
        }
    }

    /// The links of one of the lab's namespaces.
    pub async fn links(&self, ns: &Netns) -> Result<Vec<Link>, LabError> {
        self.check_owned(ns)?;
        let ns = ns.clone();
        blocking(move || topology::links(&ns)).await
    }

    /// Where the link with this MAC is, among the lab's namespaces.
    pub async fn find_mac(&self, mac: &str) -> Result<Option<(Netns, Link)>, LabError> {
        let mac = mac.to_ascii_lowercase();
        let names = self.shared.names.clone();
        blocking(move || {
            for ns in netns::list_owned(&names) {
                let Ok(links) = topology::links(&ns) else {
                    continue;
                };
                if let Some(l) = links.into_iter().find(|l| l.mac == mac) {
                    return Ok(Some((ns, l)));
                }
            }
            Ok(None)
        })
        .await
    }

    /// The router's copy of the VPC route table, as the kernel holds it.
    pub async fn router_routes(&self) -> Result<Vec<(Ipv4Net, RouteTarget)>, LabError> {
        let names = self.shared.names.clone();
        blocking(move || topology::router_routes(&names)).await
    }

    /// The MAC the VPC delivers `ip` to now (the router's permanent
    /// neighbour entry, from the cloud's assigned IPs), if any.
    pub async fn delivers(&self, ip: Ipv4Addr) -> Result<Option<String>, LabError> {
        let rtr = self.shared.names.router_ns();
        blocking(move || topology::delivered_to(&rtr, ip)).await
    }

    /// A pod sandbox's namespace, made as a runtime makes it (pinned under
    /// `/var/run/netns`, loopback up); `name` becomes `<prefix>-pod-<name>`.
    pub async fn pod_netns(&self, name: &str) -> Result<Netns, LabError> {
        let ns = self.shared.names.pod_ns(name)?;
        let made = ns.clone();
        blocking(move || netns::create(&made)).await?;
        Ok(ns)
    }

    /// Remove a pod's namespace, as a runtime does after the sandbox stops.
    /// Links still in it are destroyed (an ENI link among them comes back in
    /// its node at the next sync while the ENI stays attached, as a NIC
    /// returns to its host).
    pub async fn delete_pod_netns(&self, ns: &Netns) -> Result<(), LabError> {
        self.check_owned(ns)?;
        let ns = ns.clone();
        blocking(move || netns::delete(&ns)).await
    }

    /// Run a command in one of the lab's namespaces (killed after
    /// [`probe::EXEC_TIMEOUT`]).
    pub async fn exec(&self, ns: &Netns, argv: &[&str]) -> Result<ExecOutput, LabError> {
        self.check_owned(ns)?;
        probe::exec(ns, argv).await
    }

    /// One bounded echo from a lab namespace: true if answered.
    pub async fn ping(&self, from: &Netns, ip: Ipv4Addr) -> bool {
        self.check_owned(from).is_ok() && probe::ping(from, ip).await
    }

    /// Ping until the answer is `expect` or `within` has passed; whether it
    /// became `expect`. For changes that take a sync pass or an ARP entry to
    /// show.
    pub async fn ping_until(
        &self,
        from: &Netns,
        ip: Ipv4Addr,
        expect: bool,
        within: Duration,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.ping(from, ip).await == expect {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Run a CNI plugin as a runtime does, with `call.node`'s namespace as
    /// the plugin's host namespace (`VPC_ENI_CNI_HOST_NETNS`).
    pub async fn run_cni(&self, call: &CniCall) -> Result<CniOutcome, LabError> {
        self.check_owned(&call.netns)?;
        if !pod::is_executable(&call.binary) {
            return Err(LabError::Invalid(format!(
                "CNI plugin {} is not an executable file",
                call.binary.display()
            )));
        }
        let host = self.node_netns(&call.node).ok_or_else(|| {
            LabError::Invalid(format!("instance {} has no node in the lab", call.node))
        })?;
        pod::run(call, &host).await
    }

    /// Stop following the world and remove every namespace (and so every
    /// link) of the lab; an error names what is left.
    pub async fn teardown(mut self) -> Result<(), LabError> {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        let shared = self.shared.clone();
        blocking(move || teardown(&shared)).await
    }
}

fn teardown(shared: &Shared) -> Result<(), LabError> {
    let mut built = shared.built.lock();
    if built.torn_down {
        return Ok(());
    }
    built.torn_down = true;
    let left = netns::delete_all(&shared.names);
    if left.is_empty() {
        Ok(())
    } else {
        Err(LabError::Leftovers(left))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        if let Err(e) = teardown(&self.shared) {
            tracing::error!(lab = self.prefix(), error = %e, "lab teardown incomplete");
            eprintln!("{e}");
        }
    }
}
