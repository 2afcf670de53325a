//! Every decision of the controller as a plain function: which podCIDR a node
//! gets, which routes to create or delete, how many ENIs a node may still take,
//! which subnet an ENI comes from, how a warm pool grows or shrinks, when a
//! subnet runs out.
//!
//! No I/O, no async, no kube or cloud SDK types: callers observe the world,
//! hand it here, and apply what comes back.

pub mod allocation;
pub mod backoff;
pub mod bgp;
pub mod cidr;
pub mod eni;
pub mod forecast;
pub mod ids;
pub mod instance_types;
pub mod ledger;
pub mod pool;
pub mod provider_id;
pub mod route_tables;
pub mod routes;
pub mod subnet;
