//! The cloud contract and its backends.
//!
//! - [`cloud::Cloud`]: the async trait the controller programs against;
//! - [`error`]: error kinds every backend maps its codes into;
//! - [`model`]: cloud-neutral shapes;
//! - [`call`]: the one rate-limited, retrying, counting call wrapper;
//! - `alibaba` and `aws`: the backends.

pub mod alibaba;
#[cfg(feature = "aws")]
pub mod aws;
pub mod call;
pub mod cloud;
pub mod error;
pub mod model;
pub mod wait;

pub use cloud::Cloud;
pub use error::{CloudError, CloudResult, ErrorKind, LimitKind};
pub use ipam::ids;
