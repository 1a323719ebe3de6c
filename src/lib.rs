//! imagepush: push OCI image layouts to container registries with `docker push` semantics.

pub mod atomic_file;
pub mod auth;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod digest;
pub mod layout;
pub mod oci;
pub mod platform;
pub mod push;
pub mod reference;
pub mod registry;
pub mod shutdown;
pub mod source;
pub mod worker;
