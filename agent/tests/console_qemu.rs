//! The console port bridged to a real guest under QEMU (TCG) through `qemu:///system`: a
//! line sent through mTLS + WebSocket reaches the guest's serial port and the guest's
//! kernel echoes it back; the VNC display (the default, listening nowhere) greets two
//! viewers at once with the RFB version through the bridge, connected by libvirt
//! (`virDomainOpenGraphicsFD`); a wrong uid is not found.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does).

mod common;
mod console_support;

use common::*;
use console_support::*;
use ironvisor_agent::console::backend::LibvirtBackend;
use ironvisor_agent::console::metrics::ConsoleMetrics;
use ironvisor_agent::console::server::{self, Port};
use ironvisor_agent::console::tls::{TlsState, server_config};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::hypervisor::Hypervisor as _;
use ironvisor_agent::reconcile::engine::CloudInitData;
use ironvisor_crds::vm::Phase;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";

#[tokio::test]
async fn serial_and_vnc_of_a_running_guest_are_bridged_over_mtls_websockets() {
    let guest = guest_dir();
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-console-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_dir = tmp.path().join("state");
    let (libvirt, engine) = engine(URI, &state_dir, &guest);
    let pid = std::process::id();
    let uid = format!("0c0ffee0-0000-4000-8000-{pid:012}");
    let (ns, name) = ("console", format!("tiny-{pid}"));
    let spec = serde_json::json!({
        "runStrategy": "Always",
        "memory": {"size": "128Mi"},
        "kernelBoot": {
            "kernel": {"hostPath": {"path": guest.join("vmlinuz").to_str().unwrap()}},
            "initrd": {"hostPath": {"path": guest.join("initrd.gz").to_str().unwrap()}},
            "cmdline": "console=ttyS0 quiet ironvisor.stay"
        }
    });
    let v = vm(ns, &name, &uid, spec);
    let ci = CloudInitData::default();
    let o = engine.converge(&v, &ci, now()).await.unwrap();
    assert_eq!(
        o.status.phase,
        Some(Phase::Running),
        "{:?}",
        o.status.conditions
    );
    let domain = domain_name(ns, &name);
    let cleanup = Cleanup(libvirt.clone(), domain.clone());

    // The guest is up (and idle in its shell loop) once it printed its marker.
    let log = state_dir.join("vms").join(&uid).join("console.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("IRONVISOR-GUEST-UP")
    {
        assert!(Instant::now() < deadline, "the guest never came up");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let ca = TestCa::new("console test CA");
    let tls = Arc::new(TlsState::default());
    tls.set(Some(
        server_config(&ca.material(&ca.server("host-a"))).unwrap(),
    ));
    let port = Arc::new(Port {
        tls,
        backend: Arc::new(LibvirtBackend {
            libvirt: libvirt.clone(),
            uri: URI.into(),
            node: String::new(),
        }),
        counter: None,
        limit: Arc::new(tokio::sync::Semaphore::new(8)),
        metrics: Arc::new(ConsoleMetrics::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, port));
    let client = connector(&ca.pem(), Some(&ca.client("ironvisor-console")));
    let base = format!("/v1/namespaces/{ns}/virtualmachines/{name}");

    // Serial: the guest's tty echoes the line back.
    let line = format!("ironvisor-hello-{pid}");
    let mut ws = connect(addr, &client, &format!("{base}/console?uid={uid}"))
        .await
        .unwrap();
    send(&mut ws, format!("{line}\r").as_bytes()).await;
    let got = read_until(&mut ws, line.as_bytes(), Duration::from_secs(30)).await;
    assert!(
        String::from_utf8_lossy(&got).contains(&line),
        "no echo from the guest: {:?}",
        String::from_utf8_lossy(&got)
    );
    // One serial console at a time: a second connection is told it is busy.
    match connect(addr, &client, &format!("{base}/console?uid={uid}")).await {
        Err(Refused::Http(409, body)) => assert!(body.contains("in use"), "{body}"),
        other => panic!("a second serial connection: expected 409, got {other:?}"),
    }
    drop(ws);

    // VNC: the RFB greeting arrives through the bridge, for two viewers at once.
    let mut vnc = connect(addr, &client, &format!("{base}/vnc?uid={uid}"))
        .await
        .unwrap();
    let mut second = connect(addr, &client, &format!("{base}/vnc?uid={uid}"))
        .await
        .unwrap();
    for viewer in [&mut vnc, &mut second] {
        let greeting = read_until(viewer, b"\n", Duration::from_secs(30)).await;
        assert_eq!(greeting, b"RFB 003.008\n");
    }
    drop((vnc, second));

    // The display listens nowhere: no socket of ours, no port, nothing in the VM directory.
    let live = virsh_dumpxml(&domain);
    assert!(
        live.contains("<listen type='none'/>") && !live.contains("socket="),
        "{live}"
    );
    assert!(!state_dir.join("vms").join(&uid).join("display").exists());

    // The same name with another uid is not this VM.
    let other = "0c0ffee0-0000-4000-8000-ffffffffffff";
    match connect(addr, &client, &format!("{base}/console?uid={other}")).await {
        Err(Refused::Http(404, _)) => {}
        other => panic!("wrong uid: expected 404, got {other:?}"),
    }
    // The serial console is free again once the first client went away.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match connect(addr, &client, &format!("{base}/console?uid={uid}")).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("the serial console stayed busy: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    drop(cleanup);
}

/// The live definition of `domain`, as libvirt reports it.
fn virsh_dumpxml(domain: &str) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-c", URI, "dumpxml", domain])
        .output()
        .unwrap();
    assert!(out.status.success(), "virsh dumpxml {domain}");
    String::from_utf8(out.stdout).unwrap()
}

/// Destroys and undefines the guest however the test ends.
struct Cleanup(ironvisor_agent::hypervisor::libvirt::Libvirt, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (lv, name) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = lv.destroy(&name).await;
                let _ = lv.undefine(&name).await;
            });
        })
        .join();
    }
}
