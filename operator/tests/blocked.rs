//! An operator started before `kubectl apply -k manifests/` says plainly what is missing (its
//! namespace, the CRDs) in a metric and the `/readyz` text instead of failing vaguely, and
//! starts working as soon as they are created.

mod common;

use common::{Env, Operator, eventually, fast_config};
use ironvisor_crds::labels::SYSTEM_NAMESPACE;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_system_namespace_blocks_the_operator_with_the_remedy_until_it_is_created() {
    let env = Env::without_system_namespace().await;
    let op = Operator::start(env.client.clone(), fast_config("op-ns"));
    eventually("the operator reports itself blocked", || async {
        op.metrics.blocked.get() == 1
    })
    .await;
    assert_eq!(
        op.metrics.problem().as_deref(),
        Some(
            "namespace ironvisor-system does not exist: apply manifests/ \
             (kubectl apply -k manifests/) or create it"
        )
    );
    // It stays blocked (and never leads) while the namespace is missing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(op.metrics.blocked.get(), 1);
    assert_eq!(op.metrics.leader.get(), 0);

    env.namespace(SYSTEM_NAMESPACE).await;
    eventually("the operator leads once the namespace exists", || async {
        op.metrics.leader.get() == 1
    })
    .await;
    eventually("the operator is no longer blocked", || async {
        op.metrics.blocked.get() == 0
    })
    .await;
    assert_eq!(op.metrics.problem(), None);
    op.stop().await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_named_with_the_remedy_until_they_are_installed() {
    let env = Env::bare().await;
    let op = Operator::start(env.client.clone(), fast_config("op-crds"));
    eventually("the operator names the missing CRDs", || async {
        op.metrics
            .problem()
            .is_some_and(|p| p.contains("CustomResourceDefinitions"))
    })
    .await;
    let problem = op.metrics.problem().expect("a problem");
    assert!(
        problem.contains(
            "CustomResourceDefinitions virtualmachines.ironvisor.io, hypervisors.ironvisor.io, \
             tenants.ironvisor.io, quotas.ironvisor.io are not installed: apply manifests/ \
             (kubectl apply -k manifests/)"
        ),
        "{problem}"
    );
    assert_eq!(op.metrics.blocked.get(), 1);

    env.install_crds().await;
    env.namespace(SYSTEM_NAMESPACE).await;
    eventually("the operator is no longer blocked", || async {
        op.metrics.blocked.get() == 0
    })
    .await;
    assert_eq!(op.metrics.problem(), None);
    op.stop().await;
    env.cluster.shutdown().await;
}
