//! Whole-system tests: the local control plane, the operator and agents run as processes, and
//! everything is driven with the real kubectl (and ivctl), as a user does.
//!
//! Guests that must really run use the tiny guest from `hack/build-guest.sh` on
//! `qemu:///system` (libvirtd started by `hack/start-libvirtd.sh`); the rest use libvirt's
//! `test:///default` driver inside the agent process. Every test has its own control plane,
//! node names and state directories, so they run in parallel with each other and with the
//! demo.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::repo_root;
use ironvisor_tests::system::{
    System, console, describe, domain_id, free_port, guest_cache, require_libvirtd, tiny_guest,
    tiny_vm_manifest, uid, wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(60);

/// A name no other test (or the demo) on this machine uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

/// A VM booting the tiny guest, which stays up (`ironvisor.stay`), with its hostname in
/// cloud-init.
fn tiny_vm(ns: &str, name: &str, images: &Path, extra: &str) -> String {
    let cloud_init =
        format!("  cloudInit:\n    userData: \"#cloud-config\\nhostname: {name}\\n\"\n{extra}");
    tiny_vm_manifest(ns, name, images, &cloud_init)
}

/// A control plane, the operator, one agent on `test:///default` and a tenant (named like
/// its namespace) with the quota `hard`.
struct OneHost {
    sys: System,
    ns: String,
    images: std::path::PathBuf,
    _operator: ironvisor_tests::system::Proc,
    _agent: ironvisor_tests::system::Agent,
}

impl OneHost {
    fn start(prefix: &str, hard: &str) -> Self {
        let images = tiny_guest(&guest_cache());
        let sys = System::start();
        let (operator, _) = sys.operator();
        let agent = sys.agent(
            &unique(&format!("e2e-{prefix}-")),
            "test:///default",
            &images,
        );
        let ns = unique(&format!("e2e{prefix}"));
        sys.tenant(&ns, &ns, hard);
        Self {
            sys,
            ns,
            images,
            _operator: operator,
            _agent: agent,
        }
    }
}

fn set_run_strategy(sys: &System, ns: &str, name: &str, strategy: &str) {
    let patch = format!(r#"{{"spec":{{"runStrategy":"{strategy}"}}}}"#);
    sys.kubectl_ok(&["patch", "vm", name, "-n", ns, "--type=merge", "-p", &patch]);
}

fn phase(vm: &Value) -> &str {
    vm["status"]["phase"].as_str().unwrap_or("")
}

fn wait_console(agent: &ironvisor_tests::system::Agent, uid: &str, marker: &str) -> String {
    wait_for(
        &format!("{marker} on the serial console of {uid}"),
        BOOT,
        || {
            let text = console(agent, uid);
            if text.contains(marker) {
                Ok(text)
            } else {
                Err(format!("{} bytes so far", text.len()))
            }
        },
    )
}

/// The demo's flow with assertions: the example manifests (in a namespace of their own) on
/// one agent with QEMU; both VMs run and the first guest prints its marker; applying the same
/// manifests again changes nothing; the agent killed and restarted adopts the running guests
/// without rebooting them; deleting a VM removes its disks and keeps the images.
#[test]
fn the_demo_flow_runs_the_examples_and_survives_reapply_agent_restart_and_delete() {
    require_libvirtd();
    let images = tiny_guest(Path::new("/var/lib/ironvisor/images"));
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let node = unique("e2e-demo-");
    let mut agent = sys.agent(&node, "qemu:///system", &images);

    // The examples as they are, moved to a namespace (and tenant) of their own and to a free
    // host port, so the test can run next to the demo on the same libvirtd.
    let ns = unique("e2edemo");
    let port = free_port().to_string();
    let dir = sys.dir.path().join("examples");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo_root().join("manifests/examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("demo", &ns).replace("2222", &port);
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    let examples = dir.to_str().unwrap();
    sys.kubectl_ok(&["apply", "-f", examples]);

    let tiny = sys.wait_phase(&ns, "tiny", "Running", BOOT);
    sys.wait_phase(&ns, "web", "Running", BOOT);
    assert_eq!(tiny["status"]["nodeName"], node.as_str());
    let table = sys.kubectl_ok(&["get", "vm,hypervisor,tenant,vmq", "-A"]);
    for want in [
        format!("virtualmachine.ironvisor.io/tiny   Running   {node}"),
        format!("hypervisor.ironvisor.io/{node}"),
        format!("tenant.ironvisor.io/{ns}"),
        format!("quota.ironvisor.io/{ns}-compute"),
    ] {
        assert!(table.contains(&want), "{want:?} missing from:\n{table}");
    }
    let tiny_uid = uid(&tiny);
    let text = wait_console(&agent, &tiny_uid, "IRONVISOR-GUEST-UP");
    assert!(text.contains("IRONVISOR-GUEST-BOOTED"), "{text}");
    assert!(
        text.contains(&format!("\"instance-id\":\"{tiny_uid}\"")),
        "the guest read its cloud-init seed: {text}"
    );

    // GitOps: applying the same manifests again changes nothing.
    let generations = |sys: &System| -> Vec<(String, i64)> {
        ["tiny", "web"]
            .iter()
            .map(|n| {
                let vm = sys.vm(&ns, n);
                (
                    vm["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    vm["metadata"]["generation"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let before: Vec<i64> = generations(&sys).into_iter().map(|g| g.1).collect();
    let again = sys.kubectl_ok(&["apply", "-f", examples]);
    for line in again.lines() {
        assert!(
            line.ends_with(" unchanged"),
            "second apply changed something: {again}"
        );
    }
    let diff = sys.kubectl(&["diff", "-f", examples]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff finds drift: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    let after: Vec<i64> = generations(&sys).into_iter().map(|g| g.1).collect();
    assert_eq!(before, after, "generations moved on a no-op apply");

    // The agent killed with SIGKILL and started again adopts the running guests.
    let tiny = wait_for("tiny's domain UUID in its status", QUICK, || {
        let vm = sys.vm(&ns, "tiny");
        match vm["status"]["domainUUID"].as_str() {
            Some(_) => Ok(vm),
            None => Err(describe(&vm)),
        }
    });
    let domain = tiny["status"]["domainUUID"].as_str().unwrap().to_owned();
    let id_before = domain_id("qemu:///system", &domain).expect("tiny's domain runs");
    let started_before = tiny["status"]["startedAt"].clone();
    let boots_before = console(&agent, &tiny_uid)
        .matches("IRONVISOR-GUEST-BOOTED")
        .count();
    sys.restart_agent(&mut agent);
    // Two resyncs of the restarted agent (--resync-interval 10s) and its heartbeat.
    std::thread::sleep(Duration::from_secs(22));
    agent.proc.assert_alive();
    let tiny_after = sys.vm(&ns, "tiny");
    assert_eq!(phase(&tiny_after), "Running", "{}", describe(&tiny_after));
    assert_eq!(
        domain_id("qemu:///system", &domain).as_deref(),
        Some(id_before.as_str()),
        "the guest was restarted (its domain id changed)"
    );
    assert_eq!(tiny_after["status"]["startedAt"], started_before);
    assert_eq!(
        console(&agent, &tiny_uid)
            .matches("IRONVISOR-GUEST-BOOTED")
            .count(),
        boots_before,
        "the guest booted again"
    );

    // Deleting a VM removes its disks and seed, never the images it was made from.
    let web = sys.vm(&ns, "web");
    let web_uid = uid(&web);
    let web_dir = agent.vm_dir(&web_uid);
    assert!(web_dir.join("disk-root.qcow2").exists(), "{web_dir:?}");
    let image = images.join("root.qcow2");
    let image_before = std::fs::read(&image).unwrap();
    sys.kubectl_ok(&["delete", "vm", "web", "-n", &ns, "--timeout=60s"]);
    wait_for("web's directory to go", QUICK, || {
        if web_dir.exists() {
            Err(format!("{web_dir:?} still there"))
        } else {
            Ok(())
        }
    });
    let web_domain = web["status"]["domainUUID"].as_str().unwrap();
    let dominfo = Command::new("virsh")
        .args(["-c", "qemu:///system", "dominfo", web_domain])
        .output()
        .unwrap();
    assert!(!dominfo.status.success(), "web's domain is still defined");
    assert_eq!(
        std::fs::read(&image).unwrap(),
        image_before,
        "the image changed"
    );
    assert!(images.join("vmlinuz").exists() && images.join("initrd.gz").exists());
    assert!(sys.get("vm", Some(&ns), "web").is_none());
}

/// Three agents with different host names, two on `test:///default` and one on QEMU: three
/// VMs of one `antiAffinityGroup` land on three different hosts, and the one on the QEMU host
/// really boots.
#[test]
fn an_anti_affinity_group_spreads_over_three_agents_two_test_drivers_and_one_qemu() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let hosts = [
        unique("e2e-spread-a-"),
        unique("e2e-spread-b-"),
        unique("e2e-spread-q-"),
    ];
    let _a = sys.agent(&hosts[0], "test:///default", &images);
    let _b = sys.agent(&hosts[1], "test:///default", &images);
    let q = sys.agent(&hosts[2], "qemu:///system", &images);
    wait_for("three Ready hosts", QUICK, || {
        let list: Value =
            serde_json::from_str(&sys.kubectl_ok(&["get", "hypervisor", "-o", "json"])).unwrap();
        let ready = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| {
                h["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    });
    let ns = unique("e2espread");
    sys.tenant(&ns, &ns, "{virtualMachines: 10}");
    for name in ["s1", "s2", "s3"] {
        sys.apply(&tiny_vm(
            &ns,
            name,
            &images,
            "  antiAffinityGroup: spread\n",
        ));
    }
    let mut placed = BTreeSet::new();
    let mut on_qemu = None;
    for name in ["s1", "s2", "s3"] {
        let vm = sys.wait_phase(&ns, name, "Running", BOOT);
        let host = vm["status"]["nodeName"].as_str().unwrap().to_owned();
        if host == hosts[2] {
            on_qemu = Some(uid(&vm));
        }
        placed.insert(host);
    }
    assert_eq!(placed, hosts.iter().cloned().collect::<BTreeSet<_>>());
    let on_qemu = on_qemu.expect("one VM on the QEMU host");
    wait_console(&q, &on_qemu, "IRONVISOR-GUEST-UP");
}

/// runStrategy Halted stops the guest (ACPI, then destroy after the grace period) and
/// Always starts it again.
#[test]
fn halting_and_starting_through_run_strategy() {
    let OneHost {
        sys,
        ns,
        images,
        _operator,
        _agent,
    } = OneHost::start("halt", "{virtualMachines: 2, vcpus: 2}");
    sys.apply(&tiny_vm(&ns, "h", &images, ""));
    let first = sys.wait_phase(&ns, "h", "Running", QUICK);
    set_run_strategy(&sys, &ns, "h", "Halted");
    let stopped = sys.wait_phase(&ns, "h", "Stopped", QUICK);
    let quota: Value = serde_json::from_str(&sys.kubectl_ok(&[
        "get",
        "vmq",
        &format!("{ns}-quota"),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        quota["status"]["used"]["vcpus"]
            .as_i64()
            .or_else(|| quota["status"]["used"]["vcpus"]
                .as_str()
                .and_then(|s| s.parse().ok())),
        Some(0),
        "a halted VM holds no vCPUs: {}",
        quota["status"]
    );
    assert_ne!(stopped["status"]["conditions"], Value::Null);
    // test:///default halts and starts within a second; start times are in seconds.
    std::thread::sleep(Duration::from_millis(1100));
    set_run_strategy(&sys, &ns, "h", "Always");
    let again = sys.wait_phase(&ns, "h", "Running", QUICK);
    assert_ne!(
        again["status"]["startedAt"], first["status"]["startedAt"],
        "started anew"
    );
}

/// `ivctl restart` restarts the guest: a new start time, the request recorded.
#[test]
fn restarting_through_ivctl() {
    let OneHost {
        sys,
        ns,
        images,
        _operator,
        _agent,
    } = OneHost::start("restart", "{virtualMachines: 2}");
    sys.apply(&tiny_vm(&ns, "r", &images, ""));
    let first = sys.wait_phase(&ns, "r", "Running", QUICK);
    // test:///default starts guests within the same second; RFC 3339 times have seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let out = ironvisor_tests::run(
        Command::new(ironvisor_tests::system::bin("ivctl"))
            .env("KUBECONFIG", &sys.kubeconfig)
            .args(["-n", &ns, "restart", "r"]),
    );
    assert!(
        out.status.success(),
        "ivctl restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted = wait_for("r to start again", QUICK, || {
        let vm = sys.vm(&ns, "r");
        if phase(&vm) == "Running" && vm["status"]["startedAt"] != first["status"]["startedAt"] {
            Ok(vm)
        } else {
            Err(describe(&vm))
        }
    });
    assert!(
        restarted["status"]["lastRestartRequest"].is_string(),
        "{}",
        restarted["status"]
    );
}

/// A VM over its tenant's quota shows QuotaExceeded in `kubectl get vm` and starts by itself
/// once another VM is deleted.
#[test]
fn a_vm_over_quota_shows_quota_exceeded_and_starts_once_another_is_deleted() {
    let OneHost {
        sys,
        ns,
        images,
        _operator,
        _agent,
    } = OneHost::start("quota", "{virtualMachines: 1}");
    sys.apply(&tiny_vm(&ns, "first", &images, ""));
    sys.wait_phase(&ns, "first", "Running", QUICK);
    sys.apply(&tiny_vm(&ns, "second", &images, ""));
    let table = wait_for("second to show QuotaExceeded", QUICK, || {
        let table = sys.kubectl_ok(&["get", "vm", "-n", &ns]);
        let line = table
            .lines()
            .find(|l| l.starts_with("second "))
            .unwrap_or("")
            .to_owned();
        if line.contains("QuotaExceeded") {
            Ok(table)
        } else {
            Err(table)
        }
    });
    assert!(table.lines().next().unwrap().contains("STATUS"), "{table}");
    let second = sys.vm(&ns, "second");
    let scheduled = second["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Scheduled")
        .expect("Scheduled condition")
        .clone();
    assert_eq!(scheduled["reason"], "QuotaExceeded");
    assert!(
        scheduled["message"].as_str().unwrap().starts_with(&format!(
            "exceeded quota: {ns}-quota, requested: virtualMachines=1"
        )),
        "{scheduled}"
    );
    sys.kubectl_ok(&["delete", "vm", "first", "-n", &ns, "--timeout=60s"]);
    sys.wait_phase(&ns, "second", "Running", QUICK);
}

/// A VMware VM imported with `ivctl import vmware` is applied as is and runs under the agent
/// on QEMU with its converted disk.
#[test]
fn an_imported_vmware_vm_runs_under_the_agent() {
    require_libvirtd();
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let images = sys.dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let agent = sys.agent(&unique("e2e-import-"), "qemu:///system", &images);
    // ivctl writes the manifest for the tenant's namespace (-n); applied as it is.
    let ns = "e2eimport".to_owned();
    sys.tenant("e2eimport", &ns, "{virtualMachines: 2}");

    // A VMware VM: a VMX and a sparse VMDK made by qemu-img from known bytes.
    let src = sys.dir.path().join("vmware");
    std::fs::create_dir_all(&src).unwrap();
    let mut raw = vec![0u8; 8 << 20];
    raw[..16].copy_from_slice(b"IRONVISOR-IMPORT");
    std::fs::write(src.join("app.raw"), &raw).unwrap();
    let convert = ironvisor_tests::run(
        Command::new("qemu-img")
            .args([
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=monolithicSparse,adapter_type=lsilogic",
            ])
            .arg(src.join("app.raw"))
            .arg(src.join("app.vmdk")),
    );
    assert!(
        convert.status.success(),
        "{}",
        String::from_utf8_lossy(&convert.stderr)
    );
    std::fs::write(
        src.join("app.vmx"),
        r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "app01"
guestOS = "debian10-64"
numvcpus = "1"
memsize = "128"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "app.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
"#,
    )
    .unwrap();
    let out = ironvisor_tests::run(
        Command::new(ironvisor_tests::system::bin("ivctl"))
            .args(["import", "vmware", "-n", &ns])
            .arg(src.join("app.vmx"))
            .arg("--out")
            .arg(&images)
            .arg("--images-dir")
            .arg(&images)
            .args([
                "--network-map",
                "VM Network=user",
                "--run-strategy",
                "Always",
                "--offline",
            ]),
    );
    assert!(
        out.status.success(),
        "ivctl import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = images.join("app01/app01.yaml");
    sys.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let vm = sys.wait_phase(&ns, "app01", "Running", BOOT);
    let domain = vm["status"]["domainUUID"].as_str().unwrap();
    let blk = String::from_utf8_lossy(
        &Command::new("virsh")
            .args(["-c", "qemu:///system", "domblklist", domain])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let vm_dir = agent.vm_dir(&uid(&vm));
    assert!(blk.contains(vm_dir.to_str().unwrap()), "{blk}");
    // The guest's disk is an overlay on the converted image, with the VMware disk's bytes.
    let disk = blk
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|p| p.ends_with(".qcow2"))
        .expect("a qcow2 disk")
        .to_owned();
    let info = ironvisor_tests::run(Command::new("qemu-img").args([
        "info",
        "-U",
        "--backing-chain",
        &disk,
    ]));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(images.join("app01").to_str().unwrap()),
        "{info}"
    );
}
