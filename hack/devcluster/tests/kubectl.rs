//! The real kubectl 1.32 against a running devcluster, asserting exact output.

mod common;

use common::{Harness, mask_ages};
use pretty_assertions::assert_eq;
use std::time::Duration;

fn vm(name: &str, size: &str, extra_labels: &str) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: {name}\n  labels:\n    app: demo\n{extra_labels}spec:\n  memory:\n    size: {size}\n"
    )
}

async fn ready() -> Harness {
    let h = Harness::start().await;
    h.apply_crds().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_then_configures_then_leaves_unchanged() {
    let h = ready().await;
    let f = h.file("web.yaml", &vm("web", "512Mi", ""));
    assert_eq!(
        h.ok(&["apply", "-f", &f]).await,
        "virtualmachine.ironvisor.io/web created\n"
    );
    assert_eq!(
        h.ok(&["apply", "-f", &f]).await,
        "virtualmachine.ironvisor.io/web unchanged\n"
    );
    let f = h.file("web.yaml", &vm("web", "1Gi", ""));
    assert_eq!(
        h.ok(&["apply", "-f", &f]).await,
        "virtualmachine.ironvisor.io/web configured\n"
    );
    let size = h
        .ok(&[
            "get",
            "vm",
            "web",
            "-o",
            "jsonpath={.spec.memory.size} {.metadata.generation} {.spec.cpu.cores}",
        ])
        .await;
    assert_eq!(
        size, "1Gi 2 1",
        "updated, generation bumped once, defaults applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_reports_conflicts_and_force_takes_ownership() {
    let h = ready().await;
    let f = h.file("a.yaml", &vm("ssa", "512Mi", ""));
    assert_eq!(
        h.ok(&["apply", "--server-side", "-f", &f]).await,
        "virtualmachine.ironvisor.io/ssa serverside-applied\n"
    );
    h.ok(&[
        "patch",
        "vm",
        "ssa",
        "--type=merge",
        "-p",
        r#"{"spec":{"memory":{"size":"2Gi"}}}"#,
        "--field-manager=editor",
    ])
    .await;
    let out = h.kubectl(&["apply", "--server-side", "-f", &f]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"conflict with "editor" using ironvisor.io/v1alpha1: .spec.memory.size"#),
        "{err}"
    );
    let forced = h
        .ok(&["apply", "--server-side", "--force-conflicts", "-f", &f])
        .await;
    assert_eq!(
        forced,
        "virtualmachine.ironvisor.io/ssa serverside-applied\n"
    );
    assert_eq!(
        h.ok(&["get", "vm", "ssa", "-o", "jsonpath={.spec.memory.size}"])
            .await,
        "512Mi"
    );
    let managers = h
        .ok(&[
            "get",
            "vm",
            "ssa",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager} {.metadata.managedFields[*].operation}",
        ])
        .await;
    assert_eq!(
        managers, "kubectl Apply",
        "forcing took the only field the editor owned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_our_printer_columns_and_selects_by_label() {
    let h = ready().await;
    let f = h.file(
        "a.yaml",
        &format!(
            "{}---\n{}",
            vm("a", "512Mi", "    tier: db\n"),
            vm("b", "2Gi", "")
        ),
    );
    h.ok(&["apply", "-f", &f]).await;
    h.ok(&["patch", "vm", "a", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"printableStatus":"Running","nodeName":"node-1","vcpus":2,"conditions":[{"type":"Ready","status":"True","reason":"Running","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#]).await;
    let out = mask_ages(&h.ok(&["get", "vm"]).await);
    assert_eq!(
        out,
        "NAME   STATUS    NODE     VCPUS   MEMORY   READY   AGE\n\
         a      Running   node-1   2       512Mi    True    <age>\n\
         b                                 2Gi              <age>\n"
    );
    let out = mask_ages(&h.ok(&["get", "vm", "-l", "tier=db"]).await);
    assert_eq!(
        out,
        "NAME   STATUS    NODE     VCPUS   MEMORY   READY   AGE\na      Running   node-1   2       512Mi    True    <age>\n"
    );
    let out = h
        .ok(&["get", "vm", "-l", "tier notin (db)", "-o", "name"])
        .await;
    assert_eq!(out, "virtualmachine.ironvisor.io/b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_of_the_status_subresource_changes_status_only() {
    let h = ready().await;
    h.ok(&["apply", "-f", &h.file("a.yaml", &vm("a", "512Mi", ""))])
        .await;
    let out = h
        .ok(&[
            "patch",
            "vm",
            "a",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"printableStatus":"Starting"},"spec":{"memory":{"size":"9Gi"}}}"#,
        ])
        .await;
    assert_eq!(out, "virtualmachine.ironvisor.io/a patched\n");
    let got = h
        .ok(&[
            "get",
            "vm",
            "a",
            "-o",
            "jsonpath={.status.printableStatus} {.spec.memory.size} {.metadata.generation}",
        ])
        .await;
    assert_eq!(got, "Starting 512Mi 1");
    let out = h
        .ok(&[
            "patch",
            "vm",
            "a",
            "--type=merge",
            "-p",
            r#"{"status":{"printableStatus":"Nope"}}"#,
        ])
        .await;
    assert_eq!(out, "virtualmachine.ironvisor.io/a patched (no change)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_the_field_docs_of_our_crd() {
    let h = ready().await;
    // kubectl's first explain after a CRD appears misses it in its discovery cache
    // (kubernetes/kubernetes#95601, same on a real cluster); any get refreshes the cache.
    h.ok(&["get", "vm"]).await;
    let out = h.ok(&["explain", "vm.spec.cpu"]).await;
    assert!(out.starts_with("GROUP:      ironvisor.io\nKIND:       VirtualMachine\nVERSION:    v1alpha1\n\nFIELD: cpu <Object>\n"), "{out}");
    assert!(out.contains("    Virtual CPU topology and model."), "{out}");
    assert!(
        out.contains("  cores\t<integer>\n    Cores per socket."),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_new_rows_as_objects_change() {
    let h = ready().await;
    h.ok(&["apply", "-f", &h.file("a.yaml", &vm("a", "512Mi", ""))])
        .await;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&h.kubeconfig)
        .args(["get", "vm", "-w", "--request-timeout=0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.ok(&["apply", "-f", &h.file("b.yaml", &vm("b", "1Gi", ""))])
        .await;
    h.ok(&[
        "patch",
        "vm",
        "a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"printableStatus":"Running"}}"#,
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let text = mask_ages(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        text,
        "NAME   STATUS   NODE   VCPUS   MEMORY   READY   AGE\n\
         a                              512Mi            <age>\n\
         b                              1Gi              <age>\n\
         a      Running                  512Mi            <age>\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_condition_ready_returns_when_the_status_says_so() {
    let h = ready().await;
    h.ok(&["apply", "-f", &h.file("a.yaml", &vm("a", "512Mi", ""))])
        .await;
    let waiter = h.kubectl(&["wait", "--for=condition=Ready", "vm/a", "--timeout=30s"]);
    let setter = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        h.ok(&["patch", "vm", "a", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Running","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#]).await
    };
    let (out, _) = tokio::join!(waiter, setter);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "virtualmachine.ironvisor.io/a condition met\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_the_last_finalizer_and_wait_for_delete_sees_it_go() {
    let h = ready().await;
    let f = h.file(
        "a.yaml",
        &vm("a", "512Mi", "").replace(
            "metadata:\n",
            "metadata:\n  finalizers:\n  - ironvisor.io/test\n",
        ),
    );
    h.ok(&["apply", "-f", &f]).await;
    assert_eq!(
        h.ok(&["delete", "vm", "a", "--wait=false"]).await,
        "virtualmachine.ironvisor.io \"a\" deleted\n"
    );
    let still = h
        .ok(&[
            "get",
            "vm",
            "a",
            "-o",
            "jsonpath={.metadata.finalizers[0]} {.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(still.starts_with("ironvisor.io/test 20"), "{still}");
    let waiter = h.kubectl(&["wait", "--for=delete", "vm/a", "--timeout=30s"]);
    let remover = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        h.ok(&[
            "patch",
            "vm",
            "a",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .await
    };
    let (out, _) = tokio::join!(waiter, remover);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "virtualmachine.ironvisor.io/a condition met\n"
    );
    let gone = h.kubectl(&["get", "vm", "a"]).await;
    assert_eq!(
        String::from_utf8_lossy(&gone.stderr),
        "Error from server (NotFound): virtualmachines.ironvisor.io \"a\" not found\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_and_server_dry_run_show_changes_without_making_them() {
    let h = ready().await;
    h.ok(&["apply", "-f", &h.file("a.yaml", &vm("a", "512Mi", ""))])
        .await;
    let changed = h.file("a2.yaml", &vm("a", "1Gi", ""));
    let out = h.kubectl(&["diff", "-f", &changed]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\n-    size: 512Mi\n+    size: 1Gi\n"),
        "{text}"
    );
    assert!(
        text.contains("-  generation: 1\n+  generation: 2\n"),
        "{text}"
    );

    let dry = h.ok(&["apply", "--dry-run=server", "-f", &changed]).await;
    assert_eq!(
        dry,
        "virtualmachine.ironvisor.io/a configured (server dry run)\n"
    );
    let new = h
        .ok(&[
            "apply",
            "--dry-run=server",
            "-f",
            &h.file("n.yaml", &vm("fresh", "1Gi", "")),
        ])
        .await;
    assert_eq!(
        new,
        "virtualmachine.ironvisor.io/fresh created (server dry run)\n"
    );
    let del = h.ok(&["delete", "vm", "a", "--dry-run=server"]).await;
    assert_eq!(
        del,
        "virtualmachine.ironvisor.io \"a\" deleted (server dry run)\n"
    );
    assert_eq!(
        h.ok(&[
            "get",
            "vm",
            "-o",
            "jsonpath={.items[*].metadata.name} {.items[*].spec.memory.size}"
        ])
        .await,
        "a 512Mi"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_rejected_with_the_field_named() {
    let h = ready().await;
    let out = h
        .kubectl(&["apply", "-f", &h.file("s.yaml", &vm("small", "32Mi", ""))])
        .await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "The VirtualMachine \"small\" is invalid: spec.memory.size: Invalid value: \"object\": size must be at least 64Mi\n"
    );
    let bogus = vm("bogus", "1Gi", "").replace("spec:\n", "spec:\n  colour: red\n");
    let out = h.kubectl(&["apply", "-f", &h.file("b.yaml", &bogus)]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("strict decoding error: unknown field \"spec.colour\""),
        "{err}"
    );
    let cores = vm("cores", "1Gi", "").replace("spec:\n", "spec:\n  cpu:\n    cores: 0\n");
    let out = h.kubectl(&["apply", "-f", &h.file("c.yaml", &cores)]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.cpu.cores: Invalid value: 0: spec.cpu.cores in body should be greater than or equal to 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_become_established_and_take_their_objects_with_them() {
    let h = ready().await;
    let out = h
        .ok(&[
            "wait",
            "--for",
            "condition=established",
            "crd/virtualmachines.ironvisor.io",
            "--timeout=10s",
        ])
        .await;
    assert_eq!(
        out,
        "customresourcedefinition.apiextensions.k8s.io/virtualmachines.ironvisor.io condition met\n"
    );
    h.ok(&["apply", "-f", &h.file("a.yaml", &vm("a", "512Mi", ""))])
        .await;
    let crd = common::crds_dir().join("virtualmachines.ironvisor.io.yaml");
    h.ok(&["delete", "-f", crd.to_str().unwrap()]).await;
    h.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    let mut left = String::from("?");
    for _ in 0..50 {
        left = h.ok(&["get", "vm", "-o", "name"]).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "", "the VM went with its CRD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_kinds_apply_and_print_like_a_cluster() {
    let h = Harness::start().await;
    let f = h.file(
        "b.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: team\ndata:\n  a: \"1\"\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: team\nstringData:\n  x: hello\n---\napiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: l\n  namespace: team\nspec:\n  holderIdentity: me\n",
    );
    assert_eq!(
        h.ok(&["apply", "-f", &f]).await,
        "namespace/team created\nconfigmap/cfg created\nsecret/s created\nlease.coordination.k8s.io/l created\n"
    );
    let out = mask_ages(&h.ok(&["get", "cm,secret,lease", "-n", "team"]).await);
    assert_eq!(
        out,
        "NAME            DATA   AGE\nconfigmap/cfg   1      <age>\n\n\
         NAME       TYPE     DATA   AGE\nsecret/s   Opaque   1      <age>\n\n\
         NAME                          HOLDER   AGE\nlease.coordination.k8s.io/l   me       <age>\n"
    );
    assert_eq!(
        h.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.x}"
        ])
        .await,
        "aGVsbG8="
    );
    assert_eq!(
        h.ok(&["label", "cm", "cfg", "-n", "team", "tier=db"]).await,
        "configmap/cfg labeled\n"
    );
    assert_eq!(
        h.ok(&["delete", "ns", "team"]).await,
        "namespace \"team\" deleted\n"
    );
    let gone = h.kubectl(&["get", "ns", "team"]).await;
    assert_eq!(
        String::from_utf8_lossy(&gone.stderr),
        "Error from server (NotFound): namespaces \"team\" not found\n"
    );
}
