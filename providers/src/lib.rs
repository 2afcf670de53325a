//! The cloud contract and its backends.
//!
//! - [`cloud::Cloud`]: the async trait the controller programs against;
//! - [`error`]: error kinds every backend maps its codes into;
//! - [`model`]: cloud-neutral shapes;
//! - [`call`]: the one rate-limited, retrying, counting call wrapper;
//! - `alibaba` and `aws`: the backends, laid out alike; each exports
//!   `API_NAMES`, the APIs it calls (see `api_names`).

#[macro_use]
mod api_names;

pub mod alibaba;
#[cfg(feature = "aws")]
pub mod aws;
/// Without the `aws` feature the AWS backend is not built, but its API names
/// are: a config for AWS is validated in any build.
#[cfg(not(feature = "aws"))]
pub mod aws {
    pub mod api;
    pub use api::API_NAMES;
}
pub mod call;
pub mod cloud;
pub mod error;
pub mod model;
pub mod wait;

pub use cloud::Cloud;
pub use error::{CloudError, CloudResult, ErrorKind, LimitKind};
pub use ipam::ids;
