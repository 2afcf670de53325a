//! ENI (exclusive) mode: each pod that requests the extended resource gets
//! whole secondary ENIs attached to its node's instance, and each node
//! advertises how many more ENIs it can take.
//!
//! Parts: [`capacity`] keeps node status right, [`allocate`] gives and
//! releases pods' ENIs, [`gc`] releases owned ENIs no pod holds and re-makes
//! allocations whose ENI vanished, [`waiter`] polls ENI states in batches.
//! Decisions live in `ipam::eni` and `ipam::subnet`.

pub mod annotation;
pub mod steps;

pub use annotation::{EniAllocation, PodAllocation, ALLOCATION_ANNOTATION, RELEASE_FINALIZER};
pub use steps::{CrashAt, Step, StepHook, Steps};
