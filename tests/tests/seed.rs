//! Cloud-init data from a Secret, through the whole system: the operator copies it into
//! `ironvisor-seeds`, the agent builds the seed from the copy, the guest (the tiny guest on
//! `qemu:///system`) prints it; a changed Secret reaches the guest at its next start; the copy
//! goes with the VM. Driven with kubectl, as a user does. The copy is sealed to the host's
//! seed key: only the key in that agent's state directory opens it.

use std::time::Duration;

use base64::Engine as _;
use crypto_box::SecretKey;
use ironvisor_tests::system::{
    Agent, System, console, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, uid,
    wait_for,
};

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(60);

fn secret(ns: &str, marker: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: web-init, namespace: {ns}}}\n\
         stringData:\n  userdata: \"#cloud-config\\nmarker: {marker}\\n\"\n"
    )
}

fn vm(ns: &str, images: &std::path::Path) -> String {
    tiny_vm_manifest(
        ns,
        "web",
        images,
        "  cloudInit:\n    userDataSecretRef: {name: web-init}\n",
    )
}

/// The copy's user data as kubectl reads it, opened with the seed key of `agent`'s host
/// (`None` when the copy does not exist or that key cannot open it).
fn copy_user_data(sys: &System, agent: &Agent, uid: &str) -> Option<String> {
    let name = format!("ironvisor-seed-{uid}");
    let out = sys.kubectl(&[
        "get",
        "secret",
        &name,
        "-n",
        "ironvisor-seeds",
        "-o",
        "go-template={{.data.userData}}",
    ]);
    if !out.status.success() {
        return None;
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(out.stdout.trim_ascii())
        .ok()?;
    let raw: [u8; 32] = std::fs::read(agent.state_dir.join("seed-key"))
        .ok()?
        .try_into()
        .ok()?;
    let opened = SecretKey::from_bytes(raw).unseal(&sealed).ok()?;
    Some(String::from_utf8_lossy(&opened).into_owned())
}

#[test]
fn user_data_from_a_secret_reaches_the_guest_through_the_seed_copy_only() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let node = format!("e2e-seed-{}", std::process::id());
    let agent = sys.agent(&node, "qemu:///system", &images);
    let ns = format!("e2eseed{}", std::process::id());
    sys.tenant(&ns, &ns, "{virtualMachines: 2, vcpus: 2}");
    let one = format!("one-{}", std::process::id());
    sys.apply(&secret(&ns, &one));
    sys.apply(&vm(&ns, &images));

    let web = sys.wait_phase(&ns, "web", "Running", BOOT);
    let id = uid(&web);
    let text = wait_for("the Secret's marker on the console", BOOT, || {
        let text = console(&agent, &id);
        if text.contains(&format!("marker: {one}")) {
            Ok(text)
        } else {
            Err(format!("{} bytes so far", text.len()))
        }
    });
    assert!(text.contains("IRONVISOR-GUEST-BOOTED"), "{text}");
    assert_eq!(
        copy_user_data(&sys, &agent, &id).as_deref(),
        Some(format!("#cloud-config\nmarker: {one}\n").as_str())
    );
    let seed_ready = &sys.vm(&ns, "web")["status"]["conditions"];
    assert!(
        seed_ready.as_array().is_some_and(|cs| cs
            .iter()
            .any(|c| c["type"] == "SeedReady" && c["status"] == "True" && c["reason"] == "Copied")),
        "{seed_ready}"
    );

    // The Secret changes: the copy follows, the agent rebuilds the seed, and the guest reads
    // it at its next start.
    let two = format!("two-{}", std::process::id());
    sys.apply(&secret(&ns, &two));
    wait_for(
        "the copy to follow the Secret",
        QUICK,
        || match copy_user_data(&sys, &agent, &id) {
            Some(t) if t.contains(&two) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let seed = agent.vm_dir(&id).join("seed.iso");
    wait_for("the agent to rebuild the seed", QUICK, || {
        let bytes = std::fs::read(&seed).unwrap_or_default();
        if String::from_utf8_lossy(&bytes).contains(&two) {
            Ok(())
        } else {
            Err("old seed".into())
        }
    });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .to_string();
    sys.kubectl_ok(&[
        "annotate",
        "vm",
        "web",
        "-n",
        &ns,
        "--overwrite",
        &format!("ironvisor.io/restartedAt={stamp}"),
    ]);
    wait_for("the new marker on the console", BOOT, || {
        let text = console(&agent, &id);
        if text.contains(&format!("marker: {two}")) {
            Ok(())
        } else {
            Err(format!("{} bytes so far", text.len()))
        }
    });

    sys.kubectl_ok(&["delete", "vm", "web", "-n", &ns, "--wait=true"]);
    wait_for(
        "the copy to go with the VM",
        QUICK,
        || match copy_user_data(&sys, &agent, &id) {
            None => Ok(()),
            Some(t) => Err(t),
        },
    );
}
