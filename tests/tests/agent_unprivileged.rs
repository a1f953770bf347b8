//! The agent needs one capability, as its DaemonSet promises (`capabilities: drop: [ALL],
//! add: [NET_ADMIN]` for the host guard's iptables rule, no privilege escalation, root only to
//! own libvirt's socket and the state directory): run as root with NET_ADMIN as its only
//! capability in every set (util-linux `setpriv`, as a container runtime leaves it), on the
//! real libvirtd, it runs the examples — a kernel-boot
//! guest with its cloud-init seed and a guest with a qcow2 disk made from an image and a host
//! port, both with their default VNC display, which answers through the agent's console port
//! — and removes a deleted VM's domain, disks and directory.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::console_port::{console_server_identity, open_and_read};
use ironvisor_tests::repo_root;
use ironvisor_tests::system::{
    System, console, describe, free_port, require_libvirtd, tiny_guest, uid, wait_for,
};

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(60);

/// The capability sets of process `pid` (`CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb`).
fn capabilities(pid: u32) -> Vec<(String, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_agent_runs_and_removes_guests_with_net_admin_as_its_only_capability() {
    require_libvirtd();
    let images = tiny_guest(Path::new("/var/lib/ironvisor/images"));
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let pid = std::process::id();
    let node = format!("e2e-nocaps-{pid}");
    let no_caps: Vec<OsString> = [
        "setpriv",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin",
        "--no-new-privs",
        "--",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let console_address = format!("127.0.0.1:{}", free_port());
    let agent = sys.agent_full(
        &node,
        "qemu:///system",
        &images,
        &no_caps,
        &["--console-address".to_owned(), console_address.clone()],
    );

    // setpriv execs the agent in place: the process is the agent, with NET_ADMIN only.
    let caps = wait_for("the agent runs with NET_ADMIN only", QUICK, || {
        let caps = capabilities(agent.proc.pid());
        let exe = std::fs::read_link(format!("/proc/{}/exe", agent.proc.pid()))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if exe.ends_with("ironvisor-agent") {
            Ok(caps)
        } else {
            Err(format!("still {exe}"))
        }
    });
    // CAP_NET_ADMIN is bit 12.
    for (set, value) in &caps {
        assert_eq!(value, "0000000000001000", "{set} of the agent: {caps:?}");
    }

    let ns = format!("e2enocaps{pid}");
    let port = free_port().to_string();
    let dir = sys.dir.path().join("examples");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo_root().join("manifests/examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("demo", &ns).replace("2222", &port);
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    sys.kubectl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    let tiny = sys.wait_phase(&ns, "tiny", "Running", BOOT);
    let web = sys.wait_phase(&ns, "web", "Running", BOOT);
    let tiny_uid = uid(&tiny);
    let text = wait_for("tiny's guest is up", BOOT, || {
        let text = console(&agent, &tiny_uid);
        if text.contains("IRONVISOR-GUEST-UP") {
            Ok(text)
        } else {
            Err(format!("{} bytes of console", text.len()))
        }
    });
    assert!(
        text.contains(&format!("\"instance-id\":\"{tiny_uid}\"")),
        "the guest read its cloud-init seed: {text}"
    );

    // Its display answers through the console port: libvirt hands the agent a connected
    // socket, so nothing of it needed a capability the agent lacks.
    let identity = console_server_identity(&sys, &node, sys.dir.path(), QUICK);
    let vnc = format!("/v1/namespaces/{ns}/virtualmachines/tiny/vnc?uid={tiny_uid}");
    let answer = open_and_read(&identity, &console_address, &vnc, "RFB 003.008", QUICK);
    assert!(
        answer.starts_with("HTTP/1.1 101") && answer.contains("RFB 003.008"),
        "tiny's VNC display through the console port: {answer}"
    );
    assert!(
        !agent.vm_dir(&tiny_uid).join("display").exists(),
        "no display directory"
    );

    let web_dir = agent.vm_dir(&uid(&web));
    assert!(web_dir.join("disk-root.qcow2").exists(), "{web_dir:?}");
    sys.kubectl_ok(&["delete", "vm", "web", "-n", &ns, "--timeout=60s"]);
    wait_for("web's directory to go", QUICK, || {
        if web_dir.exists() {
            Err(format!("{web_dir:?} still there"))
        } else {
            Ok(())
        }
    });
    let web_domain = web["status"]["domainUUID"].as_str().expect("domain UUID");
    let dominfo = Command::new("virsh")
        .args(["-c", "qemu:///system", "dominfo", web_domain])
        .output()
        .unwrap();
    assert!(!dominfo.status.success(), "web's domain is still defined");
    let tiny = sys.vm(&ns, "tiny");
    assert_eq!(tiny["status"]["phase"], "Running", "{}", describe(&tiny));
}
