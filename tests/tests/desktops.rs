//! VDI desktop pools end to end: the local control plane, the operator and an agent on
//! `qemu:///system` (the tiny guest, TCG) as processes; users with their own tokens claim
//! desktops with `ivctl desktop get` and real kubectl.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::attack::{apply_as, assert_allowed, assert_refused, kubectl_as};
use ironvisor_tests::system::{
    System, bin, guest_cache, require_libvirtd, tiny_guest, uid, wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);

/// A pool whose desktops boot the tiny guest; `extra` adds spec lines (indented by 2).
fn pool(ns: &str, name: &str, images: &Path, extra: &str, disks: &str) -> String {
    let images = images.display();
    format!(
        r##"apiVersion: ironvisor.io/v1alpha1
kind: DesktopPool
metadata: {{name: {name}, namespace: {ns}}}
spec:
{extra}  template:
    spec:
      cpu: {{cores: 1}}
      memory: {{size: 128Mi}}
      terminationGracePeriodSeconds: 2
      kernelBoot:
        kernel: {{hostPath: {{path: {images}/vmlinuz}}}}
        initrd: {{hostPath: {{path: {images}/initrd.gz}}}}
        cmdline: console=ttyS0 panic=-1 ironvisor.stay
{disks}"##
    )
}

fn claim(ns: &str, name: &str, pool: &str, user: &str) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: DesktopClaim\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {{poolName: {pool}, user: {user}}}\n"
    )
}

/// A tenant namespace whose users may claim desktops.
fn desktop_users(sys: &System, ns: &str, users: &[&str], hard: &str) {
    sys.tenant(ns, ns, hard);
    let subjects: String = users
        .iter()
        .map(|u| format!("- {{kind: User, apiGroup: rbac.authorization.k8s.io, name: {u}}}\n"))
        .collect();
    sys.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: desktop-users, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ironvisor-desktop-user}}\n\
         subjects:\n{subjects}"
    ));
}

fn pool_status(sys: &System, ns: &str, name: &str) -> Value {
    sys.get("desktoppool", Some(ns), name).expect("the pool")["status"].clone()
}

fn wait_pool(sys: &System, ns: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("pool {name}: {what}"), BOOT, || {
        let s = pool_status(sys, ns, name);
        if ok(&s) { Ok(s) } else { Err(s.to_string()) }
    })
}

fn wait_claim(sys: &System, ns: &str, name: &str, phase: &str) -> Value {
    wait_for(&format!("claim {name} {phase}"), BOOT, || {
        let c = sys.get("desktopclaim", Some(ns), name).ok_or("no claim")?;
        if c["status"]["phase"] == phase {
            Ok(c)
        } else {
            Err(c["status"].to_string())
        }
    })
}

/// `ivctl desktop get POOL` as whoever `kubeconfig` authenticates: the desktop's VM name.
fn ivctl_get(kubeconfig: &Path, ns: &str, pool: &str) -> String {
    let out = Command::new(bin("ivctl"))
        .env("KUBECONFIG", kubeconfig)
        .args(["desktop", "get", pool, "-n", ns, "--timeout", "4m"])
        .output()
        .expect("run ivctl");
    let text = assert_allowed("ivctl desktop get", &out);
    assert!(text.contains("ivctl vnc"), "{text}");
    text.split_whitespace()
        .nth(1)
        .expect("desktop <vm> ...")
        .to_owned()
}

/// Whether RBAC lets `user` open the desktop's VNC console (a SubjectAccessReview, as the
/// console server makes one for every connection).
fn can_i_console(sys: &System, user: &str, ns: &str, vm: &str) -> bool {
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:authenticated"], "resourceAttributes": {
            "group": "subresources.ironvisor.io", "resource": "virtualmachines",
            "subresource": "vnc", "verb": "get", "namespace": ns, "name": vm}},
    });
    let file = sys.dir.path().join(format!("sar-{user}-{vm}.json"));
    std::fs::write(&file, review.to_string()).unwrap();
    let out = sys.kubectl_ok(&[
        "create",
        "--raw",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "-f",
        file.to_str().unwrap(),
    ]);
    let answer: Value = serde_json::from_str(&out).unwrap();
    answer["status"]["allowed"] == true
}

/// Two users with their own tokens claim desktops of a Dedicated pool of 3 with 1 spare:
/// distinct desktops, the spare replenished, no claim for another user, no release of
/// another's claim, the per-user limit, console rights for the own desktop only, the same
/// desktop back after a release, and the pool that cannot grow saying it is the quota.
#[test]
fn two_users_get_distinct_dedicated_desktops_within_quota_and_rbac() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start_with_users(&["alice", "bob"]);
    let (_operator, _) = sys.operator();
    let _agent = sys.agent(
        &format!("desk-{}", std::process::id()),
        "qemu:///system",
        &images,
    );
    let ns = format!("e2edesk{}", std::process::id());
    desktop_users(&sys, &ns, &["alice", "bob"], "{virtualMachines: 2}");
    let extra = "  size: 3\n  minSpare: 1\n  assignment: Dedicated\n";
    sys.apply(&pool(&ns, "office", &images, extra, ""));
    wait_pool(&sys, &ns, "office", "a started spare", |s| {
        s["spare"] == 1 && s["running"] == 1
    });
    let (alice, bob) = (sys.user_kubeconfig("alice"), sys.user_kubeconfig("bob"));

    let forged = apply_as(&bob, &claim(&ns, "forged", "office", "alice"));
    assert_refused(
        "bob claiming for alice",
        &forged,
        &["spec.user must be bob"],
    );

    let alices = ivctl_get(&alice, &ns, "office");
    // The spare is replenished: a second desktop is made and started.
    wait_pool(&sys, &ns, "office", "the spare replenished", |s| {
        s["total"] == 2 && s["spare"] == 1 && s["claimed"] == 1 && s["running"] == 2
    });
    let bobs = ivctl_get(&bob, &ns, "office");
    assert_ne!(alices, bobs);
    assert!(can_i_console(&sys, "alice", &ns, &alices));
    assert!(!can_i_console(&sys, "alice", &ns, &bobs));
    assert!(can_i_console(&sys, "bob", &ns, &bobs));

    // A third desktop (the new spare) is beyond the tenant's quota of 2 VMs.
    let s = wait_pool(&sys, &ns, "office", "QuotaExceeded", |s| {
        s["conditions"][0]["reason"] == "QuotaExceeded"
    });
    let msg = s["conditions"][0]["message"].as_str().unwrap();
    // The ResourceQuota-style message of the refused desktop VM, saying it is the pool's.
    assert!(
        msg.starts_with("the pool cannot grow")
            && msg.contains("exceeded quota")
            && msg.contains("requested: virtualMachines=1"),
        "{msg}"
    );
    let table = sys.kubectl_ok(&["get", "dpool", "-n", &ns]);
    assert!(
        table.contains("QuotaExceeded") && table.contains("SPARE"),
        "{table}"
    );

    // One live claim per user.
    assert_allowed(
        "alice's second claim",
        &apply_as(&alice, &claim(&ns, "more", "office", "alice")),
    );
    let more = wait_claim(&sys, &ns, "more", "Failed");
    assert_eq!(
        more["status"]["conditions"][0]["reason"], "PerUserLimit",
        "{more}"
    );

    // Nobody releases another's desktop.
    let listed = kubectl_as(&bob, &["get", "dclaim", "-n", &ns, "-o", "json"]);
    let claims: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let alice_claim = claims["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["spec"]["user"] == "alice" && c["status"]["phase"] == "Bound")
        .expect("alice's bound claim")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = kubectl_as(&bob, &["delete", "dclaim", &alice_claim, "-n", &ns]);
    assert_refused("bob releasing alice's claim", &out, &["only alice"]);

    // Released and claimed again: the same desktop; the console right went with the claim.
    let out = Command::new(bin("ivctl"))
        .env("KUBECONFIG", &alice)
        .args(["desktop", "release", "office", "-n", &ns])
        .output()
        .unwrap();
    assert_allowed("ivctl desktop release", &out);
    wait_for("alice's console right revoked", BOOT, || {
        (!can_i_console(&sys, "alice", &ns, &alices))
            .then_some(())
            .ok_or(String::new())
    });
    assert_eq!(ivctl_get(&alice, &ns, "office"), alices);
}

/// The path of the desktop's data disk file QEMU writes to now.
fn data_file(uri: &str, domain: &str) -> String {
    let out = Command::new("virsh")
        .args(["-c", uri, "domblklist", domain])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .nth(1)
                .filter(|p| p.contains("disk-data"))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no data disk in {out:?}"))
}

/// The running domain whose definition carries the VM's uid.
fn domain_of(uri: &str, vm_uid: &str) -> Option<String> {
    let out = Command::new("virsh")
        .args(["-c", uri, "list", "--name"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|d| !d.is_empty())
        .find(|d| {
            let xml = Command::new("virsh")
                .args(["-c", uri, "dumpxml", d])
                .output()
                .unwrap();
            String::from_utf8_lossy(&xml.stdout).contains(vm_uid)
        })
        .map(str::to_owned)
}

/// Whether the first 64k of the disk (through its backing chain) hold `pattern`; read
/// while QEMU has it open (shared, read-only).
fn holds(file: &str, pattern: u8) -> bool {
    let out = Command::new("qemu-io")
        .args([
            "-r",
            "-U",
            "-c",
            &format!("read -P {pattern:#x} 0 64k"),
            file,
        ])
        .output()
        .unwrap();
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed")
}

/// A Floating desktop written to by its user is reset on release: the marker on its data
/// disk is gone and it serves the next claim clean.
#[test]
fn a_released_floating_desktop_is_reset_to_its_clean_snapshot() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start_with_users(&["alice"]);
    let (_operator, _) = sys.operator();
    let uri = "qemu:///system";
    let _agent = sys.agent(&format!("deskf-{}", std::process::id()), uri, &images);
    let ns = format!("e2edeskf{}", std::process::id());
    desktop_users(&sys, &ns, &["alice"], "{storage: 1Gi}");
    let extra = "  size: 1\n  minSpare: 1\n  assignment: Floating\n";
    let disks =
        "      disks:\n      - name: data\n        size: 64Mi\n        source: {blank: {}}\n";
    sys.apply(&pool(&ns, "kiosk", &images, extra, disks));
    wait_pool(&sys, &ns, "kiosk", "a clean spare", |s| {
        s["conditions"][0]["reason"] == "Ready" && s["spare"] == 1
    });
    let alice = sys.user_kubeconfig("alice");
    let vm = ivctl_get(&alice, &ns, "kiosk");
    let vm_uid = uid(&sys.vm(&ns, &vm));
    let domain = domain_of(uri, &vm_uid).expect("the desktop runs");
    let cmd = "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0x41 0 64k\"";
    let out = Command::new("virsh")
        .args(["-c", uri, "qemu-monitor-command", "--hmp", &domain, cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        holds(&data_file(uri, &domain), 0x41),
        "the marker was written"
    );

    let out = Command::new(bin("ivctl"))
        .env("KUBECONFIG", &alice)
        .args(["desktop", "release", "kiosk", "-n", &ns])
        .output()
        .unwrap();
    assert_allowed("ivctl desktop release", &out);
    wait_for(
        "the desktop reset and running as a clean spare",
        BOOT,
        || {
            let v = sys.vm(&ns, &vm);
            let dirty = !v["metadata"]["annotations"]["ironvisor.io/desktop-needs-reset"].is_null();
            let reset_gone = sys
                .get("vmrestore", Some(&ns), &format!("{vm}-reset"))
                .is_none();
            let running = v["status"]["phase"] == "Running";
            (!dirty && reset_gone && running)
                .then_some(())
                .ok_or(format!(
                    "dirty {dirty}, restore gone {reset_gone}, {}",
                    v["status"]["phase"]
                ))
        },
    );
    assert_eq!(
        uid(&sys.vm(&ns, &vm)),
        vm_uid,
        "the same VM, reset, not a new one"
    );
    let domain = domain_of(uri, &vm_uid).expect("the desktop runs again");
    let file = data_file(uri, &domain);
    assert!(
        !holds(&file, 0x41),
        "the marker survived the reset in {file}"
    );
    assert!(
        holds(&file, 0),
        "the reset disk reads as the blank template"
    );
}

/// A claimed desktop without a console connection for the pool's idleTimeout is powered
/// off and its claim released, saying why; a claim of a pool that does not exist says so.
#[test]
fn an_idle_desktop_is_powered_off_and_its_claim_released() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start_with_users(&["alice"]);
    let (_operator, _) = sys.operator();
    let _agent = sys.agent(
        &format!("deski-{}", std::process::id()),
        "qemu:///system",
        &images,
    );
    let ns = format!("e2edeski{}", std::process::id());
    desktop_users(&sys, &ns, &["alice"], "{virtualMachines: 2}");
    let extra = "  size: 1\n  minSpare: 1\n  idleTimeout: 20s\n";
    sys.apply(&pool(&ns, "lab", &images, extra, ""));
    wait_pool(&sys, &ns, "lab", "a started spare", |s| s["running"] == 1);
    let alice = sys.user_kubeconfig("alice");
    assert_allowed(
        "alice's claim",
        &apply_as(&alice, &claim(&ns, "mine", "lab", "alice")),
    );
    let bound = wait_claim(&sys, &ns, "mine", "Bound");
    let vm = bound["status"]["vmName"].as_str().unwrap().to_owned();
    // Not before the timeout.
    let early = sys.get("desktopclaim", Some(&ns), "mine").unwrap();
    assert_eq!(early["status"]["phase"], "Bound", "{early}");
    let released = wait_claim(&sys, &ns, "mine", "Released");
    let ready = &released["status"]["conditions"][0];
    assert_eq!(ready["reason"], "IdleTimeout", "{released}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("no console connection")
    );
    sys.wait_phase(&ns, &vm, "Stopped", BOOT);
    assert_eq!(sys.vm(&ns, &vm)["spec"]["runStrategy"], "Halted");
    // A claim of a pool that does not exist says which pool and what to do, with an Event.
    assert_allowed(
        "alice's claim of a missing pool",
        &apply_as(&alice, &claim(&ns, "typo", "labb", "alice")),
    );
    let typo = wait_for("claim typo: PoolNotFound", BOOT, || {
        let c = sys
            .get("desktopclaim", Some(&ns), "typo")
            .ok_or("no claim")?;
        let r = &c["status"]["conditions"][0];
        if r["reason"] == "PoolNotFound" {
            Ok(r.clone())
        } else {
            Err(c["status"].to_string())
        }
    });
    assert_eq!(
        sys.get("desktopclaim", Some(&ns), "typo").unwrap()["status"]["phase"],
        "Pending"
    );
    let msg = typo["message"].as_str().unwrap();
    assert!(
        msg.contains("\"labb\"") && msg.contains("kubectl get desktoppools"),
        "{msg}"
    );
    let events = sys.kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    assert!(events.contains("PoolNotFound"), "{events}");
}
