//! VM storage under `--state-dir`: per-VM directories, qcow2 disks and overlays, the image
//! cache. Never writes outside the state directory and never modifies an image.

pub mod cache;
pub mod cache_gc;
pub mod convert;
pub mod fetch_policy;
pub mod layout;
pub mod prepare;
pub mod qcow2;
pub mod qcow2_header;
