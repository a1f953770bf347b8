//! The per-VM operation lock against the devcluster: of two operations racing for one VM
//! exactly one wins, only the holder releases, and a holder that no longer exists is taken
//! over — with the operator's own status writes never releasing it.

mod common;

use common::Env;
use ironvisor_crds::vm::{OperationKind, VmOperation};
use ironvisor_operator::oplock::{self, Acquired, Holder};
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "ops";

async fn vm_uid(env: &Env, name: &str) -> String {
    env.vms(NS).get(name).await.unwrap().uid().unwrap()
}

async fn held(env: &Env, name: &str) -> Option<VmOperation> {
    let vm = env.vms(NS).get(name).await.unwrap();
    vm.status.and_then(|s| s.operation)
}

fn holder(kind: OperationKind, name: &str, uid: &str) -> Holder {
    Holder {
        kind,
        name: name.into(),
        uid: uid.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_operations_exactly_one_holds_the_vm() {
    let env = Env::start().await;
    env.namespace(NS).await;
    env.vm(NS, "web", 1, "64Mi", json!({})).await;
    let uid = vm_uid(&env, "web").await;
    let now = jiff::Timestamp::now();

    for round in 0..10 {
        let resize = holder(OperationKind::Resize, "web", &uid);
        let reset = holder(OperationKind::Reset, "web", &uid);
        let (a, b) = tokio::join!(
            oplock::acquire(&env.client, NS, "web", &resize, now),
            oplock::acquire(&env.client, NS, "web", &reset, now),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let winners = [&a, &b]
            .iter()
            .filter(|o| matches!(o, Acquired::Held))
            .count();
        assert_eq!(winners, 1, "round {round}: {a:?} / {b:?}");
        let (winner, loser_saw) = if a == Acquired::Held {
            (resize, b)
        } else {
            (reset, a)
        };
        let Acquired::Busy(seen) = loser_saw else {
            panic!("round {round}: the loser did not see the winner: {loser_saw:?}");
        };
        assert!(winner.holds(&seen), "round {round}: {seen:?}");
        assert!(winner.holds(&held(&env, "web").await.unwrap()));

        // Asking again is idempotent; only the holder releases.
        let again = oplock::acquire(&env.client, NS, "web", &winner, now).await;
        assert_eq!(again.unwrap(), Acquired::Held);
        let other = holder(OperationKind::Migration, "m", "someone-else");
        assert!(
            !oplock::release(&env.client, NS, "web", &other)
                .await
                .unwrap()
        );
        assert!(held(&env, "web").await.is_some());
        assert!(
            oplock::release(&env.client, NS, "web", &winner)
                .await
                .unwrap()
        );
        assert_eq!(held(&env, "web").await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_no_longer_exists_is_taken_over_and_a_live_one_is_not() {
    let env = Env::start().await;
    env.namespace(NS).await;
    env.vm(NS, "db", 1, "64Mi", json!({})).await;
    let uid = vm_uid(&env, "db").await;
    let now = jiff::Timestamp::now();

    // A snapshot object that does not exist (no such object in the namespace) held the VM.
    let gone = holder(
        OperationKind::Snapshot,
        "before-upgrade",
        "uid-of-a-deleted-object",
    );
    assert_eq!(
        oplock::acquire(&env.client, NS, "db", &gone, now)
            .await
            .unwrap(),
        Acquired::Held
    );
    let reset = holder(OperationKind::Reset, "db", &uid);
    match oplock::acquire(&env.client, NS, "db", &reset, now)
        .await
        .unwrap()
    {
        Acquired::TookOver(old) => assert!(gone.holds(&old), "{old:?}"),
        other => panic!("expected a takeover, got {other:?}"),
    }

    // The VM itself (resize, reset) is alive while the VM exists: never taken over.
    let snap = holder(OperationKind::Snapshot, "nightly", "u-nightly");
    match oplock::acquire(&env.client, NS, "db", &snap, now)
        .await
        .unwrap()
    {
        Acquired::Busy(op) => {
            assert!(reset.holds(&op));
            let msg = oplock::busy_message("db", &op);
            assert!(msg.contains("Reset db holds it"), "{msg}");
        }
        other => panic!("expected busy, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_status_apply_leaves_the_lock_in_place() {
    use ironvisor_crds::vm::{Phase, VirtualMachine};
    use kube::api::{Api, Patch, PatchParams};

    let env = Env::start().await;
    env.namespace(NS).await;
    env.vm(NS, "app", 1, "64Mi", json!({})).await;
    let uid = vm_uid(&env, "app").await;
    let resize = holder(OperationKind::Resize, "app", &uid);
    let got = oplock::acquire(&env.client, NS, "app", &resize, jiff::Timestamp::now()).await;
    assert_eq!(got.unwrap(), Acquired::Held);

    // The operator's server-side apply of its status part does not name `operation`.
    let vms: Api<VirtualMachine> = env.vms(NS);
    let body = json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "app", "namespace": NS},
        "status": {"phase": Phase::Pending.as_str(), "printableStatus": "Pending"},
    });
    let pp = PatchParams::apply("ironvisor-operator").force();
    vms.patch_status("app", &pp, &Patch::Apply(&body))
        .await
        .unwrap();
    vms.patch_status("app", &pp, &Patch::Apply(&body))
        .await
        .unwrap();
    assert!(resize.holds(&held(&env, "app").await.expect("lock kept")));
}
