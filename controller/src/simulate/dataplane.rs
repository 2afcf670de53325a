//! `simulate --dataplane` (root only): the lab (`mocks::lab`, a VPC of
//! network namespaces) follows the act's cloud while it plays, and at the end
//! packets check what the controller says:
//!
//! - routes: an address of every node's podCIDR, placed in the node, answers
//!   the VPC's VM through the VPC route table exactly when the node's
//!   `NetworkUnavailable` condition is `False` (a node reported unrouted,
//!   e.g. for a conflicting foreign route, must not answer);
//! - ENI pods: for every allocated pod, a link with the annotation's MAC is
//!   in its node, and set up in a pod namespace the way the CNI plugin does
//!   (the annotation's IP and prefix, default route via its gateway) it
//!   answers the VM.
//!
//! The lab's follower shares the machine with the simulation, so an act's
//! figures include its load; it makes one namespace per node.

use super::{instance_for, report, Sim};
use ipam::allocation::PodAllocation;
use ipam::ids::InstanceId;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use mocks::cloud::World;
use mocks::lab::{Lab, LabConfig, Netns};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The lab's prefix (a second `simulate --dataplane` on the machine waits
/// for the first to finish its act).
const PREFIX: &str = "vsim";
/// How long an address may take to answer (a sync pass, ARP).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Whether `--dataplane` can run here; the reason when not.
pub fn available() -> anyhow::Result<()> {
    Lab::available().map_err(|reason| anyhow::anyhow!("simulate --dataplane: {reason}"))
}

/// One line of the dataplane table.
pub struct Check {
    pub what: String,
    pub expected: bool,
    pub answered: bool,
    pub note: String,
}

/// What packets showed at the end of an act.
#[derive(Default)]
pub struct DataplaneReport {
    pub vm: Option<Ipv4Net>,
    pub routes: Vec<Check>,
    pub enis: Vec<Check>,
}

impl DataplaneReport {
    /// Every check agreed with what the controller says.
    pub fn agrees(&self) -> bool {
        self.routes
            .iter()
            .chain(&self.enis)
            .all(|c| c.expected == c.answered)
    }

    pub fn print(&self) {
        let vm = self
            .vm
            .map(|v| v.addr().to_string())
            .unwrap_or_else(|| "?".into());
        println!("\ndataplane (packets from the VPC's VM {vm}):");
        let rows: Vec<Vec<String>> = self
            .routes
            .iter()
            .chain(&self.enis)
            .map(|c| {
                vec![
                    c.what.clone(),
                    yes_no(c.expected).into(),
                    yes_no(c.answered).into(),
                    if c.expected == c.answered {
                        "ok".into()
                    } else {
                        format!("MISMATCH {}", c.note)
                    },
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("  nothing to check (no routed node, no allocated ENI pod)");
            return;
        }
        print!(
            "{}",
            report::table(&["TARGET", "SHOULD ANSWER", "ANSWERED", "RESULT"], &rows)
        );
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The lab of one act.
pub struct Dataplane {
    lab: Lab,
}

impl Dataplane {
    /// Build the lab from the act's world and follow it.
    pub async fn start(world: World) -> anyhow::Result<Dataplane> {
        let lab = Lab::start(world, LabConfig::new(PREFIX)).await?;
        Ok(Dataplane { lab })
    }

    /// Check the act's end state with packets.
    pub async fn check(&self, sim: &Sim) -> anyhow::Result<DataplaneReport> {
        self.lab.sync().await?;
        let mut out = DataplaneReport {
            vm: self.lab.vm_addr(),
            ..Default::default()
        };
        // The lab's router follows the VPC route table; a BGP act's routes
        // reach routers, not the VPC, so its packets are checked against
        // FRR's zebra in `tests/bgp_frr.rs` instead.
        if sim.scenario.routes.enabled && sim.bgp.is_none() {
            out.routes = self.routes(sim).await?;
        }
        if sim.scenario.eni_enabled() {
            out.enis = self.enis(sim).await?;
        }
        Ok(out)
    }

    fn node_ns(&self, node: &str) -> Option<Netns> {
        self.lab.node_netns(&InstanceId::new(instance_for(node)))
    }

    async fn routes(&self, sim: &Sim) -> anyhow::Result<Vec<Check>> {
        let nodes: Api<Node> = Api::all(sim.client().clone());
        let mut checks = Vec::new();
        for node in nodes.list(&ListParams::default()).await?.items {
            let name = node.name_any();
            let Some(cidr) =
                crate::kubeutil::pod_cidr(&node).and_then(|c| c.parse::<Ipv4Net>().ok())
            else {
                continue;
            };
            let (expected, reason) = match crate::kubeutil::network_unavailable(&node) {
                Some((status, reason)) => (status == "False", reason),
                None => (false, "no condition".into()),
            };
            let Some(first) = cidr.hosts().next() else {
                continue;
            };
            let what = format!("node {name} podCIDR {cidr} ({first})");
            let Some(ns) = self.node_ns(&name) else {
                checks.push(Check {
                    what,
                    expected,
                    answered: false,
                    note: "the node's instance is not in the lab".into(),
                });
                continue;
            };
            let addr = format!("{first}/32");
            let placed = self
                .lab
                .exec(&ns, &["ip", "addr", "replace", &addr, "dev", "lo"])
                .await?;
            anyhow::ensure!(placed.success(), "{addr} on {ns}: {}", placed.stderr);
            let answered = self.answers(first, expected).await;
            checks.push(Check {
                what,
                expected,
                answered,
                note: format!("(NetworkUnavailable reason {reason})"),
            });
        }
        Ok(checks)
    }

    /// Whether `ip` answers the VM; when it is expected not to, one try.
    async fn answers(&self, ip: Ipv4Addr, expected: bool) -> bool {
        let vm = self.lab.vm_netns();
        if expected {
            self.lab.ping_until(&vm, ip, true, ANSWER_WITHIN).await
        } else {
            self.lab.ping(&vm, ip).await
        }
    }

    async fn enis(&self, sim: &Sim) -> anyhow::Result<Vec<Check>> {
        let pods: Api<Pod> = Api::all(sim.client().clone());
        let mut checks = Vec::new();
        for (i, pod) in pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .enumerate()
        {
            // A pod being deleted gives its ENI back: nothing to answer.
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(alloc) = PodAllocation::from_annotations(pod.annotations()) else {
                continue;
            };
            let eni = &alloc.first;
            let what = format!("pod {} ENI {} ({})", pod.name_any(), eni.eni_id, eni.ip);
            let mut check = Check {
                what,
                expected: true,
                answered: false,
                note: String::new(),
            };
            match self.configure_like_the_plugin(i, &alloc).await {
                Ok(ip) => check.answered = self.answers(ip, true).await,
                Err(e) => check.note = e.to_string(),
            }
            checks.push(check);
        }
        Ok(checks)
    }

    /// What the CNI plugin does on ADD of an ENI pod, by hand: the link with
    /// the annotation's MAC, from its node into a new pod namespace as eth0,
    /// with the annotation's address and a default route via its gateway.
    async fn configure_like_the_plugin(
        &self,
        i: usize,
        alloc: &PodAllocation,
    ) -> anyhow::Result<Ipv4Addr> {
        let eni = &alloc.first;
        let ip: Ipv4Addr = eni.ip.parse()?;
        let subnet: Ipv4Net = eni.subnet_cidr.parse()?;
        let node = self
            .node_ns(&eni.node)
            .ok_or_else(|| anyhow::anyhow!("node {} is not in the lab", eni.node))?;
        let (at, link) = self.lab.find_mac(&eni.mac).await?.ok_or_else(|| {
            anyhow::anyhow!("no link with the annotation's MAC {} in the lab", eni.mac)
        })?;
        anyhow::ensure!(
            at == node,
            "the link with MAC {} is in {at}, not in node {}",
            eni.mac,
            eni.node
        );
        let pod = self.lab.pod_netns(&format!("{i}")).await?;
        let addr = format!("{ip}/{}", subnet.prefix_len());
        let steps: [(&Netns, Vec<&str>); 5] = [
            (
                &node,
                vec!["ip", "link", "set", &link.name, "netns", pod.name()],
            ),
            (&pod, vec!["ip", "link", "set", &link.name, "name", "eth0"]),
            (&pod, vec!["ip", "addr", "add", &addr, "dev", "eth0"]),
            (&pod, vec!["ip", "link", "set", "eth0", "up"]),
            (
                &pod,
                vec!["ip", "route", "add", "default", "via", &eni.gateway],
            ),
        ];
        for (ns, argv) in steps {
            let out = self.lab.exec(ns, &argv).await?;
            anyhow::ensure!(out.success(), "{}: {}", argv.join(" "), out.stderr.trim());
        }
        Ok(ip)
    }

    /// Remove the lab (also done when dropped).
    pub async fn teardown(self) -> anyhow::Result<()> {
        Ok(self.lab.teardown().await?)
    }
}
