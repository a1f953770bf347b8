//! `ivctl host check` end to end: the real binary against this machine's /proc, /sys, /dev
//! and the real libvirtd on qemu:///system (started by hack/start-libvirtd.sh, as CI does).
//!
//! This machine kind has no vmx/svm (nested, KVM guests hang): development qualifies with
//! warnings, production does not. Broken inputs (a root-only directory on the state path,
//! no virsh, an unreachable libvirt) are made per test, never by changing the host.

mod broken;
mod common;
mod machine;
