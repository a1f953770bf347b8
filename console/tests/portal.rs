//! The "My desktops" portal in headless Chromium (driven by console/web/tests/portal.mjs):
//! two users with their own tokens, the shipped RBAC (ClusterRole ironvisor-desktop-user)
//! and admission policy (ironvisor-desktop-claims) applied with real kubectl. Alice claims
//! a desktop through the page, sees it Bound with Connect, connects (the VNC view against a
//! stand-in agent that speaks the RFB handshake) and releases it; Bob's list never shows it.
//!
//! The operator's part is played by the test: the pool, its desktop VMs and the statuses
//! are written as the operator (and the agent) would write them, and a claim is bound (its
//! status, and the per-claim Role that grants its user the desktop's consoles) as soon as
//! it appears. The operator's own pool logic is tested in tests/tests/desktops.rs.
//!
//! Needs hack/install-deps.sh (chromium, kubectl) and hack/web-assets.sh (playwright-core).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironvisor_crds::desktop::{DesktopClaim, DesktopPool};
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::agent::EchoAgent;
use support::{ALICE, BOB, Env, events, eventually};

const NS: &str = "team-a";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// `kubectl apply -f` of shipped manifests, as the devcluster's admin (off the runtime's
/// thread: the devcluster serves on it).
async fn kubectl_apply(env: &Env, dir: &Path, files: &'static [&'static str]) {
    let kubeconfig = dir.join("kubeconfig");
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster: {{server: \"{}\"}}\n\
         users:\n- name: admin\n  user: {{}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: admin}}\n\
         current-context: dev\n",
        env.cluster.url()
    );
    std::fs::write(&kubeconfig, cfg).unwrap();
    tokio::task::spawn_blocking(move || {
        for f in files {
            let out = Command::new("kubectl")
                .env("KUBECONFIG", &kubeconfig)
                .args(["apply", "-f"])
                .arg(repo().join(f))
                .output()
                .expect("run kubectl (hack/install-deps.sh installs it)");
            assert!(out.status.success(), "kubectl apply -f {f}: {out:?}");
        }
    })
    .await
    .unwrap();
}

async fn create<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let o: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &o).await.unwrap()
}

/// A desktop VM of pool office, running on host-1 with a display; returns its uid.
async fn desktop(env: &Env, name: &str) -> String {
    let api: Api<VirtualMachine> = Api::namespaced(env.client.clone(), NS);
    let vm = create(
        &api,
        json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
               "metadata": {"name": name, "labels": {"ironvisor.io/desktop-pool": "office"}},
               "spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}, "graphics": "vnc"}}),
    )
    .await;
    env.vm_status(NS, name, "Running", "host-1").await;
    vm.uid().unwrap()
}

/// What the operator writes for a bound claim: the status and the Role and RoleBinding that
/// let its user open the desktop's consoles (operator/src/desktops/access.rs).
async fn bind(client: &kube::Client, c: &DesktopClaim, vm: &str) {
    let (name, user, uid) = (c.name_any(), c.spec.user.clone(), c.uid().unwrap());
    let now = "2026-11-30T10:00:00Z";
    Api::<DesktopClaim>::namespaced(client.clone(), NS)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Bound", "user": user, "vmName": vm,
                "boundTime": now, "conditions": [{"type": "Ready", "status": "True",
                "reason": "Bound", "message": format!("bound to desktop {vm}"),
                "lastTransitionTime": now}]}}),
            ),
        )
        .await
        .unwrap();
    let access = format!("ironvisor-desktop-{uid}");
    let owner = json!([{"apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
                        "name": name, "uid": uid}]);
    create(
        &Api::<Role>::namespaced(client.clone(), NS),
        json!({"metadata": {"name": access, "ownerReferences": owner},
               "rules": [{"apiGroups": ["subresources.ironvisor.io"],
                          "resources": ["virtualmachines/console", "virtualmachines/vnc"],
                          "verbs": ["get"], "resourceNames": [vm]}]}),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(client.clone(), NS),
        json!({"metadata": {"name": access, "ownerReferences": owner},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": access},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await;
}

/// Binds every new claim to its user's desktop (alice: office-1, bob: office-2); records
/// (claim, user) of each.
fn operator(
    client: kube::Client,
    bound: Arc<Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = Api::<DesktopClaim>::namespaced(client.clone(), NS);
        loop {
            for c in api.list(&ListParams::default()).await.unwrap().items {
                if c.status.is_some() || c.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let vm = if c.spec.user == "alice" {
                    "office-1"
                } else {
                    "office-2"
                };
                bind(&client, &c, vm).await;
                bound
                    .lock()
                    .unwrap()
                    .push((c.name_any(), c.spec.user.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// A kube client that authenticates with `token` (the devcluster's plain port).
fn as_user(env: &Env, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(env.cluster.url().parse().unwrap());
    cfg.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn my_desktops_claims_connects_and_releases_and_shows_each_user_only_their_own() {
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
    let dir = tempfile::tempdir().unwrap();
    kubectl_apply(
        &env,
        dir.path(),
        &[
            "manifests/rbac/user-roles.yaml",
            "manifests/policies/desktop-claims.yaml",
        ],
    )
    .await;
    let rbs: Api<RoleBinding> = Api::namespaced(env.client.clone(), NS);
    create(
        &rbs,
        json!({"metadata": {"name": "desktop-users"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "ironvisor-desktop-user"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
                            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}),
    )
    .await;
    // The pool, with a status message that is HTML: the page must show it as text.
    let pools: Api<DesktopPool> = Api::namespaced(env.client.clone(), NS);
    create(
        &pools,
        json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopPool",
               "metadata": {"name": "office"},
               "spec": {"size": 3, "minSpare": 1,
                        "template": {"spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}}}}}),
    )
    .await;
    let hostile = "<img src=x onerror=\"window.pwned=1\">2 desktop(s) claimed";
    pools
        .patch_status(
            "office",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"total": 3, "spare": 1, "claimed": 1, "running": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                    "message": hostile, "lastTransitionTime": "2026-11-30T10:00:00Z"}]}}),
            ),
        )
        .await
        .unwrap();
    let uid = desktop(&env, "office-1").await;
    desktop(&env, "office-2").await;
    let agent = EchoAgent::start_with_display(
        &env.ca,
        &env.ca.leaf("hypervisor:host-1", &["host-1"]),
        &uid,
    )
    .await;
    env.host("host-1", &agent.addr.to_string(), true).await;
    let bound = Arc::new(Mutex::new(Vec::new()));
    let _operator = operator(env.client.clone(), bound.clone());
    // Bob's own claim, made with his token (admission checks spec.user against it), once
    // his RoleBinding is in force.
    let bobs: DesktopClaim = serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
        "metadata": {"name": "office-bob-1"},
        "spec": {"poolName": "office", "user": "bob"}}))
    .unwrap();
    let as_bob = Api::<DesktopClaim>::namespaced(as_user(&env, BOB), NS);
    eventually("bob claims a desktop", || async {
        match as_bob.create(&PostParams::default(), &bobs).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 403 => false,
            Err(e) => panic!("bob's claim: {e}"),
        }
    })
    .await;

    let page_url = format!("https://localhost:{}/", env.server.addr.port());
    let script = web.join("tests/portal.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([&page_url, ALICE, BOB, NS, "office"])
            .output()
            .expect("run node (hack/install-deps.sh installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the browser: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(r["error"].is_null(), "the browser test failed: {r:#}");

    // Alice may not list claims everywhere: the page says so and asks for namespaces.
    let first = r["allNamespaces"].as_str().unwrap_or_default();
    assert!(first.contains("name the namespaces"), "{r:#}");
    // Bob's claim is in the namespace, but not in Alice's list.
    assert_eq!(r["claimsBefore"], json!([]), "{r:#}");
    // The hostile message is text: no element, no script.
    assert!(r["poolText"].as_str().unwrap().contains(hostile), "{r:#}");
    assert_eq!(r["images"], 0, "{r:#}");
    assert_eq!(r["scriptRan"], false, "{r:#}");

    // The page's claim: made for alice (the admission policy checked it), bound, listed.
    let claimed = bound.lock().unwrap().clone();
    let alices: Vec<_> = claimed.iter().filter(|(_, u)| u == "alice").collect();
    assert_eq!(alices.len(), 1, "{claimed:?}");
    let name = &alices[0].0;
    assert!(name.starts_with("office-alice-"), "{name}");
    assert_eq!(
        r["mine"],
        json!([{"claim": name, "phase": "Bound", "desktop": "office-1"}]),
        "{r:#}"
    );
    // Bob sees his own desktop only.
    assert_eq!(
        r["bClaims"],
        json!([{"claim": "office-bob-1", "phase": "Bound", "desktop": "office-2"}]),
        "{r:#}"
    );
    // Connect opened the VNC view of alice's desktop, through the console server.
    assert_eq!(r["connectedTo"], format!("{NS}/office-1 (vnc)"), "{r:#}");
    assert_eq!(r["canvas"], 1, "{r:#}");
    let opened = events(&env.client, NS, "ConsoleConnected").await;
    assert!(
        opened
            .iter()
            .any(|n| n.contains("user alice opened the vnc console")),
        "{opened:?}"
    );
    // Release deleted the claim.
    assert_eq!(r["released"], json!(name), "{r:#}");
    assert_eq!(r["claimsAfter"], json!([]), "{r:#}");
    let gone = Api::<DesktopClaim>::namespaced(env.client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap();
    assert!(gone.is_none(), "{gone:?}");
}
