//! Shared helpers for the libvirt integration tests.
#![allow(dead_code)]

use ironvisor_agent::domain_xml::DomainType;
use ironvisor_agent::hypervisor::libvirt::Libvirt;
use ironvisor_agent::metrics::Metrics;
use ironvisor_agent::reconcile::engine::{CloudInitData, Engine, Outcome};
use ironvisor_agent::storage::cache::ImageCache;
use ironvisor_agent::storage::prepare::StorageRoots;
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A host: state and images directories, and an engine over `uri`.
pub struct Host {
    pub uri: String,
    pub tmp: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub libvirt: Libvirt,
    pub engine: Engine,
}

impl Host {
    pub fn new(uri: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Self::in_dir(uri, tmp)
    }

    pub fn in_dir(uri: &str, tmp: tempfile::TempDir) -> Self {
        let state_dir = tmp.path().join("state");
        let images_dir = tmp.path().join("images");
        std::fs::create_dir_all(&images_dir).unwrap();
        let (libvirt, engine) = engine(uri, &state_dir, &images_dir);
        Self {
            uri: uri.to_owned(),
            tmp,
            state_dir,
            images_dir,
            libvirt,
            engine,
        }
    }

    /// A new engine on the same directories, as after an agent restart.
    pub fn restart(self) -> Self {
        self.libvirt.close();
        let (libvirt, engine) = engine(&self.uri, &self.state_dir, &self.images_dir);
        Self {
            libvirt,
            engine,
            ..self
        }
    }

    pub fn vm_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("vms").join(uid)
    }
}

pub fn engine(uri: &str, state_dir: &Path, images_dir: &Path) -> (Libvirt, Engine) {
    let libvirt = Libvirt::new(uri);
    let storage = StorageRoots {
        // The tests' image servers listen on loopback, which the default policy refuses.
        cache: ImageCache::with_policy(
            state_dir,
            ironvisor_agent::storage::fetch_policy::FetchPolicy {
                allowed: vec!["127.0.0.1/32".parse().expect("a CIDR")],
                ..Default::default()
            },
        ),
        state_dir: state_dir.to_owned(),
        images_dir: images_dir.to_owned(),
    };
    let engine = Engine::new(
        Arc::new(libvirt.clone()),
        storage,
        DomainType::Qemu,
        Arc::new(Metrics::new()),
    );
    (libvirt, engine)
}

static CLOCK: AtomicI64 = AtomicI64::new(1_800_000_000);

/// A strictly increasing fake clock, so startedAt changes are visible.
pub fn now() -> Time {
    Time(jiff::Timestamp::from_second(CLOCK.fetch_add(1, Ordering::SeqCst)).unwrap())
}

/// A VirtualMachine as the API server would hand it to the agent.
pub fn vm(ns: &str, name: &str, uid: &str, spec: serde_json::Value) -> VirtualMachine {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

/// Apply an outcome's status to the object, as the API server would after the patch.
pub fn with_status(mut vm: VirtualMachine, o: &Outcome) -> VirtualMachine {
    vm.status = Some(o.status.clone());
    vm
}

/// Converge and carry the status over.
pub async fn step(engine: &Engine, vm: VirtualMachine) -> (VirtualMachine, Outcome) {
    let o = engine
        .converge(&vm, &CloudInitData::default(), now())
        .await
        .unwrap();
    (with_status(vm, &o), o)
}

/// A raw libvirt connection for out-of-band changes (what an admin does with virsh).
pub fn admin(uri: &str) -> virt::connect::Connect {
    virt::connect::Connect::open(Some(uri)).unwrap()
}
pub mod cluster;
pub mod holders;

/// The tiny guest (kernel + initramfs) from `hack/build-guest.sh`, built once per machine
/// into `$IRONVISOR_GUEST_DIR` (default /var/tmp/ironvisor-guest, which QEMU's user can reach).
pub fn guest_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("IRONVISOR_GUEST_DIR").unwrap_or_else(|_| "/var/tmp/ironvisor-guest".into()),
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/build-guest.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&dir)
        .status()
        .expect("bash runs");
    assert!(status.success(), "hack/build-guest.sh failed");
    dir
}
