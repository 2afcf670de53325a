//! Code shared by the `mocks` test targets (a module, not a target of its
//! own: Cargo builds only `tests/*.rs` as tests).

pub mod alibaba_client;
