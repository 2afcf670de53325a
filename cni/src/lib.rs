//! `vpc-eni-cni`: the node half of vpc-eni-controller, a CNI plugin
//! (specification 1.0.0: ADD, DEL, CHECK, VERSION; STATUS and GC of 1.1.0).
//!
//! For each pod the runtime sets up, the plugin reads the pod through the
//! kube API and takes one of two paths:
//!
//! - **Exclusive ENI** (the pod asks for an ENI resource such as
//!   `aliyun/eni`, or carries the `vpc-eni.io/allocation` annotation): it
//!   waits for the controller's allocation (at most
//!   `allocationTimeoutSeconds`, then error code 11 "try again later"), finds
//!   the ENI's link in the node's namespace by MAC, moves it into the pod as
//!   `CNI_IFNAME` with the IP, the subnet's prefix length, the MTU and a
//!   default route via the subnet's gateway, and adds a pod<->node veth that
//!   carries the Service CIDR and node traffic ([`eni`]). DEL moves the link
//!   back under its old name, down, for the controller to detach.
//! - **Shared ENI** (the allocation says `"mode":"shared"`; on a node whose
//!   config sets `sharedEni`, every pod that asks for no exclusive ENI waits
//!   for one): a veth whose pod end holds the pod's secondary IP as /32,
//!   and on the node a route to it, policy rules sending its traffic out of
//!   the shared ENI through that ENI's own table, and a proxy ARP entry
//!   ([`shared`]). The ENI stays in the node.
//! - **Anything else**: the `delegate` plugin (e.g. `ptp` + `host-local`) in
//!   `CNI_PATH` runs with `usePodCidr` replaced by the node's
//!   `spec.podCIDR` ([`delegate`]).
//!
//! Network config keys (unknown keys are ignored):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `cniVersion`, `name`, `type` | required | as the spec says |
//! | `kubeconfig` | `/etc/cni/net.d/vpc-eni.kubeconfig` | how to reach the API (needs `get` on pods and nodes) |
//! | `allocationTimeoutSeconds` | `60` | how long ADD waits for the allocation (fractions allowed) |
//! | `mtu` | `1500` | MTU of the ENI link and the veth; passed to the delegate if it sets none |
//! | `serviceCidr` | `10.96.0.0/12` | routed over the veth from exclusive-ENI pods |
//! | `delegate` | none | the plugin config for pods without an ENI |
//! | `eniResourceNames` | `["aliyun/eni", "vpc.amazonaws.com/eni"]` | resources that mark a pod as an exclusive-ENI pod |
//! | `stateDir` | `/var/lib/cni/vpc-eni` | the delegate config of each attachment, kept from ADD to DEL; the shared-ENI lock |
//! | `sharedEni` | `false` | the node is in shared-ENI mode: pods without an exclusive ENI wait for a shared allocation instead of delegating |
//!
//! DEL needs neither the API nor a file for an exclusive-ENI or shared-ENI
//! pod: the ENI link carries its host-side name in its alias while the pod
//! holds it (see [`eni`]), a shared pod's host veth carries its IP in its
//! alias ([`shared`]), and the veths' names derive from the container id
//! ([`names`]).
//!
//! Lab and tests only: `VPC_ENI_CNI_HOST_NETNS=/path/to/netns` makes that
//! namespace "the host" (the node) instead of the one the plugin runs in;
//! kube I/O still happens where the plugin started ([`plugin::HOST_NETNS_ENV`]).
//! `VPC_ENI_CNI_LOG` sets the log filter (stderr, default `warn`).
//!
//! Modules: [`spec`] the CNI wire shapes, [`config`] the network config,
//! [`error`] failure -> spec code, [`kubeapi`] pod/node reads, [`netns`] and
//! [`netlink`] namespaces and links, [`names`] veth names and link marks,
//! [`eni`] the exclusive path, [`shared`] the shared-ENI path, [`delegate`]
//! the delegate path, [`plugin`]
//! one invocation, [`install`] the `install` subcommand the node
//! DaemonSet's init container runs.

pub mod config;
pub mod delegate;
pub mod eni;
pub mod error;
pub mod install;
pub mod kubeapi;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod shared;
pub mod spec;

pub use error::PluginError;
