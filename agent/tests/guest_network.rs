//! A real guest on a user-mode interface, before and after the host guard: the tiny guest
//! (hack/build-guest.sh, `ironvisor.probe=`) tries TCP connections to its gateway 10.0.2.2,
//! which QEMU's SLIRP maps to the host's 127.0.0.1, and to an address outside the host.
//!
//! Everything runs in network namespaces this test creates: "host" (QEMU, as libvirt's QEMU
//! user, with the user-mode arguments the agent renders; a listener on its 127.0.0.1) and
//! "outside" (a listener on 198.51.100.2, reached through a veth pair), so the guard's rules
//! land in the test's namespace only and no packet leaves the machine. Needs root, QEMU and
//! iptables (hack/install-deps.sh).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ironvisor_agent::domain_xml::{DomainType, Owner, PlanInput, build_plan, render};
use ironvisor_agent::host_guard::{CHAIN, Firewall};
use ironvisor_crds::vm::VirtualMachineSpec;

const LOOPBACK_PORT: u16 = 40125;
const OUTSIDE_PORT: u16 = 40126;
const OUTSIDE_ADDR: &str = "198.51.100.2";

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed (with what runs in them) on drop.
struct Namespaces {
    host: String,
    outside: String,
    children: Vec<Child>,
}

impl Namespaces {
    fn new() -> Self {
        let pid = std::process::id();
        let ns = Namespaces {
            host: format!("ivt-gnet-host-{pid}"),
            outside: format!("ivt-gnet-out-{pid}"),
            children: Vec::new(),
        };
        let (a, b) = (format!("ivg{pid}a"), format!("ivg{pid}b"));
        let (h, o) = (ns.host.as_str(), ns.outside.as_str());
        sh(&["ip", "netns", "add", h]);
        sh(&["ip", "netns", "add", o]);
        sh(&[
            "ip", "link", "add", &a, "netns", h, "type", "veth", "peer", "name", &b, "netns", o,
        ]);
        for (n, dev, addr) in [(h, &a, "198.51.100.1/24"), (o, &b, "198.51.100.2/24")] {
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", n, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", n, "link", "set", dev, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            h,
            "route",
            "add",
            "default",
            "via",
            OUTSIDE_ADDR,
        ]);
        ns
    }

    /// A one-connection listener in `netns` on `port`: its process ends once a client came.
    fn listen(&mut self, netns: &str, port: u16) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "busybox", "nc", "-l", "-p"])
            .arg(port.to_string())
            .args(["-e", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("busybox nc runs");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Whether the listener got its connection.
    fn connected(&mut self, listener: usize) -> bool {
        matches!(self.children[listener].try_wait(), Ok(Some(s)) if s.success())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in [&self.host, &self.outside] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// The `-netdev`/`-device` arguments the agent renders for one user-mode interface.
fn user_nic_args(vm_dir: &Path) -> Vec<String> {
    let spec: VirtualMachineSpec = serde_json::from_value(serde_json::json!({
        "memory": {"size": "256Mi"},
        "networks": [{"name": "default", "user": {}}]
    }))
    .expect("valid spec");
    let plan = build_plan(&PlanInput {
        owner: Owner {
            uid: "guest-net".into(),
            namespace: "t".into(),
            name: "guest-net".into(),
            generation: 1,
            node: String::new(),
        },
        spec: &spec,
        domain_type: DomainType::Qemu,
        vm_dir,
        kernel: None,
        initrd: None,
    })
    .expect("plan");
    let xml = render(&plan).xml;
    xml.split("<qemu:arg value=\"")
        .skip(1)
        .map(|s| s[..s.find('"').expect("closed")].to_owned())
        .collect()
}

fn qemu_user() -> (u32, u32) {
    let u = nix::unistd::User::from_name("libvirt-qemu")
        .ok()
        .flatten()
        .expect("user libvirt-qemu exists (libvirt-daemon-system)");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Boot the guest in the host namespace as the QEMU user; return its probe lines.
fn boot_and_probe(ns: &Namespaces, guest: &Path, targets: &[String]) -> Vec<String> {
    let (uid, gid) = qemu_user();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.host, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args([
            "--clear-groups",
            "qemu-system-x86_64",
            "-machine",
            "q35,accel=tcg",
        ])
        .args(["-m", "256", "-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(guest.join("vmlinuz"))
        .arg("-initrd")
        .arg(guest.join("initrd.gz"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet ironvisor.probe={}",
            targets.join(",")
        ))
        .args(user_nic_args(Path::new("/nonexistent")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut qemu = cmd.spawn().expect("qemu-system-x86_64 runs");
    let (tx, rx) = mpsc::channel();
    let out = qemu.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut probes = Vec::new();
    let mut console = String::new();
    while probes.len() < targets.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
                if let Some(p) = line.trim().strip_prefix("IRONVISOR-PROBE ") {
                    probes.push(p.to_owned());
                }
            }
            Err(_) => break,
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert_eq!(probes.len(), targets.len(), "guest console:\n{console}");
    probes
}

#[test]
fn a_user_mode_guest_reaches_the_hosts_loopback_until_the_guard_refuses_it_and_outbound_still_works()
 {
    let guest = common::guest_dir();
    let mut ns = Namespaces::new();
    let gateway = format!("10.0.2.2:{LOOPBACK_PORT}");
    let outside = format!("{OUTSIDE_ADDR}:{OUTSIDE_PORT}");
    let targets = [gateway.clone(), outside.clone()];
    let (host, out) = (ns.host.clone(), ns.outside.clone());

    // Without the guard, SLIRP hands the gateway to the host's loopback service.
    let lo = ns.listen(&host, LOOPBACK_PORT);
    let far = ns.listen(&out, OUTSIDE_PORT);
    std::thread::sleep(Duration::from_millis(300));
    let before = boot_and_probe(&ns, &guest, &targets);
    assert_eq!(
        before,
        vec![
            format!("{gateway} CONNECTED"),
            format!("{outside} CONNECTED")
        ]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ns.connected(lo),
        "the host's loopback listener saw the guest"
    );
    assert!(ns.connected(far));

    // With the guard (installed twice: idempotent), the same guest is refused at the host's
    // loopback, and still reaches the outside.
    let fw = Firewall {
        prefix: vec!["ip".into(), "netns".into(), "exec".into(), host.clone()],
    };
    let (uid, _) = qemu_user();
    fw.ensure(uid).expect("guard installed");
    fw.ensure(uid).expect("guard installed again");
    for tool in ["iptables", "ip6tables"] {
        let rules = Command::new("ip")
            .args(["netns", "exec", &host, tool, "-w", "-S"])
            .output()
            .expect("iptables runs");
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        assert_eq!(
            rules.matches(&format!("-A OUTPUT -j {CHAIN}")).count(),
            1,
            "{rules}"
        );
        assert_eq!(rules.matches(&format!("-A {CHAIN} ")).count(), 1, "{rules}");
    }
    let lo = ns.listen(&host, LOOPBACK_PORT);
    let far = ns.listen(&out, OUTSIDE_PORT);
    std::thread::sleep(Duration::from_millis(300));
    let after = boot_and_probe(&ns, &guest, &targets);
    assert_eq!(
        after,
        vec![format!("{gateway} REFUSED"), format!("{outside} CONNECTED")]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ns.connected(lo), "the host's loopback listener saw no one");
    assert!(ns.connected(far));
}
