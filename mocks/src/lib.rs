//! Fakes of everything outside the controller, for tests and the `simulate`
//! command: an in-memory cloud model, an Alibaba OpenAPI HTTP front on it,
//! and a kube-apiserver with a scheduler and a kubelet stand-in.
pub mod alibaba;
pub mod cloud;
pub mod kubeapi;
