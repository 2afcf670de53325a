//! vpc-eni-controller: the kube plumbing, reconcilers, metrics and CLI
//! commands. Reconcilers observe, ask `ipam` for a plan, apply it through a
//! `providers::Cloud`, and record the result in kube.

pub mod cache;
pub mod config;
pub mod context;
pub mod eni;
pub mod events;
pub mod explain;
pub mod fence;
#[cfg(feature = "simulate")]
pub mod harness;
pub mod kubeutil;
pub mod leader;
pub mod logging;
pub mod maxpods;
pub mod metrics;
pub mod rbac;
pub mod routes;
pub mod routes_bgp;
pub mod run;
pub mod server;
pub mod shared;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod status;
pub mod tasks;
pub mod terway;
