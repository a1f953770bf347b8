//! The browser console in headless Chromium (Debian's `chromium`, driven by playwright-core
//! from console/web): token login, the VM list read with the user's token, and the serial
//! terminal, whose typed line goes through the console server and the agent's port contract
//! (an echo agent here) and back into xterm.js.
//!
//! Needs hack/install-deps.sh (chromium) and hack/web-assets.sh (playwright-core).

mod support;

use std::path::Path;
use std::process::Command;

use support::agent::EchoAgent;
use support::{ALICE, Env};

#[tokio::test]
async fn the_page_logs_in_lists_the_vm_and_its_serial_terminal_round_trips() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: run hack/install-deps.sh"
    );
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run hack/web-assets.sh"
    );
    let env = Env::start().await;
    let uid = env.vm("team-a", "web", "Running", "host-1").await;
    let agent = EchoAgent::start(
        &env.ca,
        &env.ca.leaf("hypervisor:host-1", &["host-1"]),
        &uid,
    )
    .await;
    env.host("host-1", &agent.addr.to_string(), true).await;
    env.allow("alice", "team-a", &["console"], &[]).await;
    // alice lists VMs in her namespace with her own token.
    let roles: kube::Api<k8s_openapi::api::rbac::v1::Role> =
        kube::Api::namespaced(env.client.clone(), "team-a");
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vm-reader"},
        "rules": [{"apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"], "verbs": ["list", "get"]}]
    }))
    .unwrap();
    roles.create(&Default::default(), &role).await.unwrap();
    let rbs: kube::Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        kube::Api::namespaced(env.client.clone(), "team-a");
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    }))
    .unwrap();
    rbs.create(&Default::default(), &rb).await.unwrap();

    let page_url = format!("https://localhost:{}/", env.server.addr.port());
    let line = format!("hello-from-the-browser-{}", std::process::id());
    let script = web.join("tests/browser.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([&page_url, ALICE, "team-a", "web", &line])
            .output()
            .expect("run node (hack/install-deps.sh installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the browser: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        report["error"].is_null(),
        "the browser test failed: {report:#}"
    );
    assert_eq!(report["listed"], true, "{report:#}");
    assert_eq!(report["echoed"], true, "{report:#}");
    assert_eq!(report["sessionToken"], true, "{report:#}");
}
