//! Ironvisor's release tooling, driven by `hack/release.sh`: reproducible OCI image
//! archives built from a root filesystem directory with no container runtime or registry,
//! and the release's SBOM.
#![forbid(unsafe_code)]

pub mod layer;
pub mod oci;
pub mod packages;
pub mod sbom;
