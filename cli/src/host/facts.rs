//! What gathering found on the host: plain data, no I/O, built by hand in the tests.

use std::path::PathBuf;
use std::time::Duration;

/// CPU flags from /proc/cpuinfo and the KVM modules' `nested` parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuFacts {
    /// Intel VT-x.
    pub vmx: bool,
    /// AMD-V.
    pub svm: bool,
    /// The `hypervisor` flag: this host is itself a virtual machine.
    pub hypervisor: bool,
    /// `/sys/module/kvm_intel/parameters/nested` or `kvm_amd`'s, when loaded.
    pub nested_param: Option<NestedParam>,
}

impl CpuFacts {
    /// Hardware virtualisation is offered to this kernel.
    pub fn has_virt_flags(&self) -> bool {
        self.vmx || self.svm
    }
}

/// A KVM module's `nested` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedParam {
    /// `kvm_intel` or `kvm_amd`.
    pub module: String,
    /// Its value (`Y`, `N`, `1`, `0`).
    pub value: String,
}

impl NestedParam {
    /// The module lets its guests run KVM themselves.
    pub fn enabled(&self) -> bool {
        matches!(self.value.trim(), "Y" | "y" | "1")
    }
}

/// Owner, group and mode of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner name (the uid as text when it has none).
    pub owner: String,
    /// Group name (the gid as text when it has none).
    pub group: String,
}

/// What /dev/kvm is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmDevice {
    /// No such file.
    Missing,
    /// Exists but is not a character device (e.g. a plain file made by hand).
    NotCharDevice(Ownership),
    /// A character device.
    CharDevice(Ownership),
    /// It could not be examined.
    Unreadable(String),
}

/// The user QEMU runs as, with the groups it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuUser {
    /// User name (or `+uid`).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group, supplementary groups and qemu.conf's `group`.
    pub gids: Vec<u32>,
}

/// IOMMU groups under /sys/kernel/iommu_groups (`None`: the directory does not exist).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IommuFacts {
    /// How many groups.
    pub groups: Option<usize>,
}

/// Hugepages from /proc/meminfo and /sys/kernel/mm/hugepages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HugepageFacts {
    /// `HugePages_Total`.
    pub total: u64,
    /// `HugePages_Free`.
    pub free: u64,
    /// `Hugepagesize` in KiB.
    pub size_kib: u64,
    /// Page sizes the kernel offers (KiB), from /sys/kernel/mm/hugepages.
    pub sizes_kib: Vec<u64>,
}

/// One NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// Its number.
    pub id: u32,
    /// Its CPUs as the kernel lists them (`0-1`).
    pub cpus: String,
    /// Its memory in KiB.
    pub mem_kib: Option<u64>,
}

/// Which cgroup hierarchy the host mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2 only, at /sys/fs/cgroup.
    Unified,
    /// v1 controllers with a v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 only.
    Legacy,
    /// Nothing recognisable at /sys/fs/cgroup.
    Unknown,
}

/// A version `major.minor.micro`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Why libvirt could not be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LibvirtUnavailable {
    /// No `virsh` on PATH.
    VirshMissing,
    /// `virsh` ran but could not reach the URI; libvirt's message.
    Unreachable(String),
}

/// What `virsh version --daemon` said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Versions {
    /// The libvirt daemon (falling back to the client library when not reported).
    pub libvirt: Option<Version>,
    /// The hypervisor (`Running hypervisor: QEMU 7.2.22`).
    pub qemu: Option<Version>,
}

/// The capability probe, timed twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeFacts {
    /// Both calls answered.
    Timed {
        /// `virsh domcapabilities` or `virsh capabilities`.
        command: String,
        /// The first call.
        first: Duration,
        /// The second call, which a healthy cache answers at once.
        second: Duration,
    },
    /// A call failed; libvirt's message.
    Failed(String),
}

/// The domain type the test domain (and the agent's `auto` rule) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtType {
    /// Hardware acceleration.
    Kvm,
    /// TCG software emulation.
    Qemu,
}

impl VirtType {
    /// The `<domain type=...>` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}

/// One timed step of the domain test: its duration, or libvirt's message.
pub type Step = Result<Duration, String>;

/// The define+start+destroy+undefine of a tiny diskless domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainTestFacts {
    /// `--skip-domain-test`.
    Skipped,
    /// It ran (a step after a failed one is `None`).
    Ran(DomainRun),
}

/// What each step of the domain test did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRun {
    /// The domain's name.
    pub name: String,
    /// Its type.
    pub virt_type: VirtType,
    /// `virsh define`.
    pub define: Step,
    /// `virsh start`.
    pub start: Option<Step>,
    /// `virsh destroy`.
    pub destroy: Option<Step>,
    /// Whether the domain is gone afterwards; libvirt's message when removing it failed.
    pub cleanup: Result<(), String>,
}

/// A directory the agent uses, and every directory on the path to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirFacts {
    /// The directory as given.
    pub path: PathBuf,
    /// It exists (else the agent will create it under its nearest existing ancestor).
    pub exists: bool,
    /// Free bytes for unprivileged users on its filesystem (or its nearest existing
    /// ancestor's); the error when it could not be measured.
    pub free_bytes: Result<u64, String>,
    /// `/`, then each existing directory down to it, with its ownership.
    pub components: Vec<(PathBuf, Ownership)>,
    /// A component that exists but is not a directory, or could not be examined.
    pub blocked: Option<(PathBuf, String)>,
}

/// What libvirt answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibvirtFacts {
    /// `virsh version --daemon`.
    pub versions: Versions,
    /// The capability probe.
    pub probe: ProbeFacts,
    /// The domain test.
    pub domain: DomainTestFacts,
}

/// Everything `host check` evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// CPU flags and nesting.
    pub cpu: CpuFacts,
    /// /dev/kvm.
    pub kvm: KvmDevice,
    /// Who QEMU runs as; why it could not be told.
    pub qemu_user: Result<QemuUser, String>,
    /// IOMMU groups.
    pub iommu: IommuFacts,
    /// Hugepages (`None`: /proc/meminfo unreadable).
    pub hugepages: Option<HugepageFacts>,
    /// NUMA nodes (empty: none reported).
    pub numa: Vec<NumaNode>,
    /// cgroup hierarchy.
    pub cgroup: CgroupMode,
    /// What libvirt answered, or why it could not be asked.
    pub libvirt: Result<LibvirtFacts, LibvirtUnavailable>,
    /// The state directory.
    pub state_dir: DirFacts,
    /// The images directory.
    pub images_dir: DirFacts,
}

/// Read, write and search bits as [`Ownership::allows`] takes them.
pub mod perm {
    /// Read.
    pub const R: u32 = 0o4;
    /// Write.
    pub const W: u32 = 0o2;
    /// Execute, or search for a directory.
    pub const X: u32 = 0o1;
}

impl Ownership {
    /// Whether `user` gets every bit of `want` ([`perm`]) from the owner, group or other bits,
    /// as the kernel picks them: the owner's bits for the owner even when the group's would
    /// allow more. POSIX ACLs are not consulted; root gets everything.
    pub fn allows(&self, user: &QemuUser, want: u32) -> bool {
        if user.uid == 0 {
            return true;
        }
        let bits = if user.uid == self.uid {
            self.mode >> 6
        } else if user.gids.contains(&self.gid) {
            self.mode >> 3
        } else {
            self.mode
        };
        bits & want == want
    }

    /// `ls -l` style: `crw------- root root`, with `kind` as the first letter.
    pub fn describe(&self, kind: char) -> String {
        let mut s = String::with_capacity(24);
        s.push(kind);
        for shift in [6, 3, 0] {
            let bits = (self.mode >> shift) & 0o7;
            s.push(if bits & perm::R != 0 { 'r' } else { '-' });
            s.push(if bits & perm::W != 0 { 'w' } else { '-' });
            s.push(if bits & perm::X != 0 { 'x' } else { '-' });
        }
        format!("{s} {} {}", self.owner, self.group)
    }
}
