//! The in-memory cloud model: one world (VPCs, vSwitches with real free-IP
//! accounting, instances with real instance-type limits, ENIs with states,
//! route tables with quotas and asynchronous entries) with per-API fault,
//! latency and rate-limit injection.
//!
//! - [`World`]: the raw model, implements `providers::Cloud` without retries;
//! - [`MemCloud`]: a `World` behind the shared `providers::call::Caller`, what
//!   the controller uses against the model;
//! - [`WorldSpec`]: the YAML seed; [`instance_types`]: the type catalogue.

pub mod faults;
pub mod flavor;
pub mod instance_types;
pub mod memcloud;
mod routes;
pub mod snapshot;
pub mod spec;
mod state;
mod subnet;
pub mod world;

pub use faults::{ApiFault, Delays, FaultKind, FaultsSpec, ALL_APIS, MUTATING_APIS};
pub use flavor::Flavor;
pub use memcloud::MemCloud;
pub use snapshot::{TableSnapshot, WorldSnapshot};
pub use spec::{AccessKey, InstanceSpec, SpecError, WorldSpec, EXAMPLE_YAML};
pub use world::World;
