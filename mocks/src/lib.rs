//! Fakes of everything outside the controller, for tests and the `simulate`
//! command: an in-memory cloud model, an Alibaba OpenAPI HTTP front on it,
//! a kube-apiserver with a scheduler and a kubelet stand-in, the lab (a VPC
//! of network namespaces following the in-memory cloud), FRR's bgpd as a
//! real router for the BGP backend (`frr`), a small in-process BGP router
//! for `simulate` (`bgp_router`), a process's memory from procfs (`procfs`), and (feature `aws`) a launcher
//! of moto, a third-party EC2 emulator.
pub mod alibaba;
pub mod bgp_router;
pub mod cloud;
pub mod frr;
pub mod kubeapi;
pub mod lab;
#[cfg(feature = "aws")]
pub mod moto;
pub mod procfs;
