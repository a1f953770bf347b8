//! Snapshots, restores and merges on real QEMU domains through `qemu:///system`.
//!
//! The domain is a 32 MiB BIOS-only guest with one qcow2 data disk: its firmware finds
//! nothing to boot and idles, while QEMU keeps the disk chain open as for any guest. The
//! "guest" writes through QEMU's own block layer (HMP `qemu-io` on the disk's device), and
//! the data is checked with `qemu-io` on the files once the domain is gone.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does).

mod common;

use ironvisor_agent::hypervisor::libvirt::Libvirt;
use ironvisor_agent::snapshot::chain::{ROOT, Step, Tree};
use ironvisor_agent::snapshot::domain_disks::parse_live_disks;
use ironvisor_agent::snapshot::files::layer_file;
use ironvisor_agent::snapshot::merge::{Where, merge, remove_layer};
use ironvisor_agent::snapshot::restore::restore_offline;
use ironvisor_agent::snapshot::state::read_active;
use ironvisor_agent::snapshot::take::{Request, take_offline, take_online};
use ironvisor_crds::snapshot::{Consistency, FreezePolicy};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use virt::domain::Domain;

const URI: &str = "qemu:///system";
const DISK: &str = "data";

/// A VM directory QEMU's user can reach, a data disk holding `A` in its first 64 KiB, and
/// (once started) a running domain on it.
struct Guest {
    _tmp: tempfile::TempDir,
    vm_dir: PathBuf,
    name: String,
    domain: Option<Domain>,
    lv: Libvirt,
    disks: Vec<String>,
}

impl Guest {
    fn new(tag: &str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("ironvisor-snap-")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let vm_dir = tmp.path().to_owned();
        let root = layer_file(&vm_dir, DISK, ROOT);
        qemu_img(&["create", "-q", "-f", "qcow2", root.to_str().unwrap(), "64M"]);
        assert!(qemu_io(&root, &["write -P 0x41 0 64k"], false));
        Self {
            _tmp: tmp,
            vm_dir,
            name: format!("iv-snap-{tag}-{}", std::process::id()),
            domain: None,
            lv: Libvirt::new(URI),
            disks: vec![DISK.to_owned()],
        }
    }

    fn start(&mut self) {
        let file = layer_file(&self.vm_dir, DISK, &read_active(&self.vm_dir));
        let xml = format!(
            "<domain type='qemu'><name>{}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
            self.name,
            file.display()
        );
        let conn = common::admin(URI);
        self.domain = Some(conn.create_domain_xml(&xml, 0).unwrap());
    }

    /// A write by the "guest": through QEMU, to whatever layer the disk writes to now.
    fn guest_write(&self, pattern: u8, offset_k: u32) {
        let cmd = format!(
            "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P {pattern:#x} {offset_k}k 64k\""
        );
        // The `virt` crate is built without its qemu feature: virsh sends the HMP command.
        let out = Command::new("virsh")
            .args(["-c", URI, "qemu-monitor-command", "--hmp", &self.name, &cmd])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.trim().is_empty(), "qemu-io said {said:?}");
    }

    fn stop(&mut self) {
        if let Some(d) = self.domain.take() {
            d.destroy().unwrap();
        }
    }

    fn request<'a>(&'a self, active: &'a str, new_layer: &'a str) -> Request<'a> {
        Request {
            vm_dir: &self.vm_dir,
            disks: &self.disks,
            active,
            new_layer,
            freeze: FreezePolicy::Auto,
        }
    }

    fn file(&self, layer: &str) -> PathBuf {
        layer_file(&self.vm_dir, DISK, layer)
    }

    /// The running chain, top first, as libvirt reports it.
    async fn live_chain(&self) -> Vec<PathBuf> {
        let xml = self.lv.live_xml(&self.name).await.unwrap();
        let d = parse_live_disks(&xml).unwrap().remove(0);
        std::iter::once(d.source.unwrap())
            .chain(d.backing)
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(d) = self.domain.take() {
            let _ = d.destroy();
        }
        self.lv.close();
    }
}

fn qemu_img(args: &[&str]) {
    let st = Command::new("qemu-img").args(args).status().unwrap();
    assert!(st.success(), "qemu-img {args:?}");
}

/// Run qemu-io commands on a file; whether they all succeeded (a pattern mismatch fails).
fn qemu_io(file: &Path, cmds: &[&str], read_only: bool) -> bool {
    let mut c = Command::new("qemu-io");
    if read_only {
        c.arg("-r");
    }
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(file).output().unwrap().status.success()
}

#[tokio::test]
async fn a_snapshot_of_a_running_vm_restores_the_data_it_held() {
    let mut g = Guest::new("restore");
    let mut tree = Tree::new();
    g.start();
    let consistency = take_online(&g.lv, &g.name, &g.request(ROOT, "s-1"))
        .await
        .unwrap();
    // The bare firmware has no guest agent: crash-consistent, all disks at one instant.
    assert_eq!(consistency, Consistency::Crash);
    tree.snapshot("snap1", "s-1").unwrap();
    assert_eq!(g.live_chain().await, [g.file("s-1"), g.file(ROOT)]);
    assert_eq!(read_active(&g.vm_dir), "s-1");
    g.guest_write(0x42, 0);
    take_online(&g.lv, &g.name, &g.request("s-1", "s-2"))
        .await
        .unwrap();
    tree.snapshot("snap2", "s-2").unwrap();
    g.guest_write(0x43, 0);
    g.stop();
    assert!(qemu_io(&g.file("s-2"), &["read -P 0x43 0 64k"], true));

    // Restore the first snapshot: the VM reads A again, the second snapshot still reads B.
    restore_offline(&g.vm_dir, &g.disks, tree.layer_of("snap1").unwrap(), "r-1")
        .await
        .unwrap();
    tree.restore("snap1", "r-1").unwrap();
    assert_eq!(read_active(&g.vm_dir), "r-1");
    assert!(qemu_io(&g.file("r-1"), &["read -P 0x41 0 64k"], true));
    assert!(qemu_io(&g.file("s-1"), &["read -P 0x42 0 64k"], true));
    // The overwritten active layer is nobody's now: it is the one step left.
    assert_eq!(
        tree.next_step(),
        Some(Step::Remove {
            layer: "s-2".into()
        })
    );
    remove_layer(&g.vm_dir, &g.disks, "s-2").await.unwrap();
    assert!(!g.file("s-2").exists());

    // The restored VM boots on its new layer and writes there.
    g.start();
    assert_eq!(g.live_chain().await, [g.file("r-1"), g.file(ROOT)]);
    g.guest_write(0x44, 0);
    g.stop();
    assert!(qemu_io(&g.file("r-1"), &["read -P 0x44 0 64k"], true));
    assert!(qemu_io(&g.file(ROOT), &["read -P 0x41 0 64k"], true));
}

#[tokio::test]
async fn deleting_a_middle_snapshot_of_a_running_vm_keeps_the_data_and_shortens_the_chain() {
    let mut g = Guest::new("merge");
    let mut tree = Tree::new();
    g.start();
    for (i, pattern) in [(1, 0x42u8), (2, 0x43), (3, 0x44)] {
        let (active, new) = (tree.active().to_owned(), format!("s-{i}"));
        take_online(&g.lv, &g.name, &g.request(&active, &new))
            .await
            .unwrap();
        tree.snapshot(&format!("snap{i}"), &new).unwrap();
        g.guest_write(pattern, 64 * i);
    }
    assert_eq!(g.live_chain().await.len(), 4);

    // snap2 owns s-1 (A, then B at 64k); merging it commits s-2 (C at 128k) into s-1.
    tree.forget("snap2");
    let step = tree.next_step().unwrap();
    assert_eq!(
        step,
        Step::Merge {
            child: "s-2".into(),
            into: "s-1".into()
        }
    );
    assert!(tree.is_online(&step));
    let online = Where::Online(&g.lv, &g.name);
    merge(online, &g.vm_dir, &g.disks, &step, false, &["s-3".into()])
        .await
        .unwrap();
    tree.apply(&step);
    remove_layer(&g.vm_dir, &g.disks, "s-2").await.unwrap();
    assert_eq!(
        g.live_chain().await,
        [g.file("s-3"), g.file("s-1"), g.file(ROOT)]
    );
    assert_eq!(tree.layer_of("snap3"), Some("s-1"));

    // Deleting the newest snapshot commits the active layer down and pivots to it.
    tree.forget("snap3");
    let step = tree.next_step().unwrap();
    let online = Where::Online(&g.lv, &g.name);
    merge(online, &g.vm_dir, &g.disks, &step, true, &[])
        .await
        .unwrap();
    tree.apply(&step);
    remove_layer(&g.vm_dir, &g.disks, "s-3").await.unwrap();
    assert_eq!(g.live_chain().await, [g.file("s-1"), g.file(ROOT)]);
    assert_eq!(read_active(&g.vm_dir), "s-1");
    g.guest_write(0x45, 256);
    g.stop();
    let all = [
        "read -P 0x41 0 64k",
        "read -P 0x42 64k 64k",
        "read -P 0x43 128k 64k",
        "read -P 0x44 192k 64k",
        "read -P 0x45 256k 64k",
    ];
    assert!(qemu_io(&g.file("s-1"), &all, true));
    assert!(qemu_io(&g.file(ROOT), &["read -P 0x41 0 64k"], true));
}

#[tokio::test]
async fn a_snapshot_interrupted_by_a_crash_is_finished_by_the_next_run_with_no_extra_layer() {
    let mut g = Guest::new("crash");
    g.start();
    // A run that died after making the new layer, before libvirt switched the disk.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-u",
        "-b",
        g.file(ROOT).to_str().unwrap(),
        g.file("s-1").to_str().unwrap(),
        "64M",
    ]);
    take_online(&g.lv, &g.name, &g.request(ROOT, "s-1"))
        .await
        .unwrap();
    // A run that died after libvirt switched the disk, before it recorded the layer.
    std::fs::remove_file(g.vm_dir.join("active-layer")).unwrap();
    take_online(&g.lv, &g.name, &g.request(ROOT, "s-1"))
        .await
        .unwrap();
    assert_eq!(read_active(&g.vm_dir), "s-1");
    assert_eq!(g.live_chain().await, [g.file("s-1"), g.file(ROOT)]);
    let layers: Vec<_> = std::fs::read_dir(&g.vm_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".qcow2"))
        .collect();
    assert_eq!(layers.len(), 2, "{layers:?}");

    // A merge whose block commit was started by a run that died: the next run pivots it.
    g.guest_write(0x42, 0);
    g.lv.block_commit(
        &g.name,
        "vda".into(),
        g.file(ROOT).display().to_string(),
        None,
    )
    .await
    .unwrap();
    let step = Step::Merge {
        child: "s-1".into(),
        into: ROOT.into(),
    };
    let online = Where::Online(&g.lv, &g.name);
    merge(online, &g.vm_dir, &g.disks, &step, true, &[])
        .await
        .unwrap();
    assert_eq!(g.live_chain().await, [g.file(ROOT)]);
    g.stop();
    assert!(qemu_io(&g.file(ROOT), &["read -P 0x42 0 64k"], true));
}

#[tokio::test]
async fn a_halted_vm_is_snapshotted_and_merged_offline() {
    let g = Guest::new("offline");
    let c = take_offline(&g.request(ROOT, "s-1")).await.unwrap();
    assert_eq!(c, Consistency::Offline);
    assert!(qemu_io(&g.file("s-1"), &["write -P 0x42 0 64k"], false));
    let step = Step::Merge {
        child: "s-1".into(),
        into: ROOT.into(),
    };
    merge(Where::Offline, &g.vm_dir, &g.disks, &step, true, &[])
        .await
        .unwrap();
    remove_layer(&g.vm_dir, &g.disks, "s-1").await.unwrap();
    assert_eq!(read_active(&g.vm_dir), ROOT);
    assert!(qemu_io(&g.file(ROOT), &["read -P 0x42 0 64k"], true));
}
