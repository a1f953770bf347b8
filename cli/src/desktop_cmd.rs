//! `ivctl desktop get|list|release`: claim a desktop of a pool and wait for it, list your
//! claims, release them. Who you are comes from a SelfSubjectReview (the API server's view
//! of your credentials); admission refuses a claim made out for anyone else.
//!
//! Exit codes: 0 done, 1 failed (refused, Failed claim, timed out, cluster error), 2 usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ironvisor_crds::desktop::{ClaimPhase, DesktopClaim, DesktopPool};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::cluster::ClusterArgs;
use crate::vm::args::parse_duration;
use crate::vm::cmd::{VmError, block_on};

/// The `desktop` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum DesktopCommand {
    /// Claim a desktop of POOL (or reuse your live claim there), wait until it is bound, and
    /// print how to connect.
    Get(GetArgs),
    /// Your desktop claims in the namespace: pool, phase, desktop VM.
    List,
    /// Release your claims in POOL (a Floating desktop is reset; a Dedicated one stays yours).
    Release(ReleaseArgs),
}

/// Options of `desktop get`.
#[derive(Clone, Debug, clap::Args)]
pub struct GetArgs {
    /// The pool.
    pub pool: String,
    /// How long to wait for a desktop.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Options of `desktop release`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The pool.
    pub pool: String,
}

/// Who the API server says the caller is.
async fn whoami(client: &Client) -> Result<String, VmError> {
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
    }))
    .map_err(|e| VmError::Render(e.to_string()))?;
    let answer = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| VmError::Render("the SelfSubjectReview named no user".into()))
}

/// A claim's name: the pool, the user's name as far as a name allows, and a random tail.
pub fn claim_name(pool: &str, user: &str, tail: &str) -> String {
    let user: String = user
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    let stem: String = format!("{pool}-{user}").chars().take(200).collect();
    let stem = stem.trim_matches(|c: char| c == '-' || c == '.');
    format!("{stem}-{tail}")
}

/// The caller's claims on `pool` that still hold or wait for a desktop.
pub fn live_claims<'a>(
    claims: &'a [DesktopClaim],
    pool: &str,
    user: &str,
) -> Vec<&'a DesktopClaim> {
    claims
        .iter()
        .filter(|c| c.spec.pool_name == pool && c.spec.user == user)
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| !phase(c).is_terminal())
        .collect()
}

fn phase(c: &DesktopClaim) -> ClaimPhase {
    c.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn ready_message(c: &DesktopClaim) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

async fn get(cluster: &ClusterArgs, a: &GetArgs) -> Result<(), VmError> {
    let ns = cluster.namespace().await;
    let client = cluster.client().await?;
    let user = whoami(&client).await?;
    if Api::<DesktopPool>::namespaced(client.clone(), &ns)
        .get_opt(&a.pool)
        .await?
        .is_none()
    {
        return Err(VmError::Render(format!(
            "no desktop pool {:?} in namespace {ns:?}",
            a.pool
        )));
    }
    let api = Api::<DesktopClaim>::namespaced(client, &ns);
    let claims = api.list(&ListParams::default()).await?.items;
    let name = match live_claims(&claims, &a.pool, &user).first() {
        Some(c) => c.name_any(),
        None => {
            let tail = &uuid::Uuid::new_v4().simple().to_string()[..5];
            let claim: DesktopClaim = serde_json::from_value(json!({
                "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
                "metadata": {"name": claim_name(&a.pool, &user, tail), "namespace": ns},
                "spec": {"poolName": a.pool, "user": user},
            }))
            .map_err(|e| VmError::Render(e.to_string()))?;
            let made = api.create(&PostParams::default(), &claim).await?;
            eprintln!("desktopclaim {ns}/{} created for {user}", made.name_any());
            made.name_any()
        }
    };
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < a.timeout {
        let c = api.get(&name).await?;
        let msg = ready_message(&c);
        if msg != last {
            eprintln!("{name}: {msg}");
            last = msg.clone();
        }
        match (phase(&c), c.status.as_ref().and_then(|s| s.vm_name.clone())) {
            (ClaimPhase::Bound, Some(vm)) => {
                println!("desktop {vm} (claim {name}) is yours");
                println!("connect: ivctl vnc {vm} -n {ns}    (serial: ivctl console {vm} -n {ns})");
                return Ok(());
            }
            (p, _) if p.is_terminal() => {
                return Err(VmError::Render(format!("claim {name} is {p:?}: {msg}")));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    Err(VmError::Render(format!(
        "claim {name} not bound after {}s: {last}",
        a.timeout.as_secs()
    )))
}

async fn list(cluster: &ClusterArgs) -> Result<(), VmError> {
    let ns = cluster.namespace().await;
    let client = cluster.client().await?;
    let user = whoami(&client).await?;
    let claims = Api::<DesktopClaim>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await?
        .items;
    println!(
        "{:<40} {:<20} {:<9} {:<30}",
        "CLAIM", "POOL", "PHASE", "DESKTOP"
    );
    for c in claims.iter().filter(|c| c.spec.user == user) {
        let vm = c
            .status
            .as_ref()
            .and_then(|s| s.vm_name.clone())
            .unwrap_or("-".into());
        println!(
            "{:<40} {:<20} {:<9} {:<30}",
            c.name_any(),
            c.spec.pool_name,
            format!("{:?}", phase(c)),
            vm
        );
    }
    Ok(())
}

async fn release(cluster: &ClusterArgs, a: &ReleaseArgs) -> Result<(), VmError> {
    let ns = cluster.namespace().await;
    let client = cluster.client().await?;
    let user = whoami(&client).await?;
    let api = Api::<DesktopClaim>::namespaced(client, &ns);
    let claims = api.list(&ListParams::default()).await?.items;
    let mine: Vec<_> = claims
        .iter()
        .filter(|c| c.spec.pool_name == a.pool && c.spec.user == user)
        .collect();
    if mine.is_empty() {
        return Err(VmError::Render(format!(
            "{user} holds no claim in pool {:?} of namespace {ns:?}",
            a.pool
        )));
    }
    for c in mine {
        api.delete(&c.name_any(), &DeleteParams::default()).await?;
        println!("desktopclaim {ns}/{} released", c.name_any());
    }
    Ok(())
}

/// Run a `desktop` verb.
pub fn run(cluster: &ClusterArgs, cmd: &DesktopCommand) -> ExitCode {
    match cmd {
        DesktopCommand::Get(a) => block_on(get(cluster, a)),
        DesktopCommand::List => block_on(list(cluster)),
        DesktopCommand::Release(a) => block_on(release(cluster, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, pool: &str, user: &str, phase: &str) -> DesktopClaim {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
            "metadata": {"name": name, "namespace": "n"},
            "spec": {"poolName": pool, "user": user},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn claim_names_are_valid_object_names_whatever_the_user_name() {
        assert_eq!(claim_name("office", "alice", "ab12c"), "office-alice-ab12c");
        assert_eq!(
            claim_name("office", "Alice@Example.com", "ab12c"),
            "office-alice-example-com-ab12c"
        );
        assert_eq!(
            claim_name("office", "system:serviceaccount:x:y", "z"),
            "office-system-serviceaccount-x-y-z"
        );
    }

    #[test]
    fn only_the_callers_live_claims_on_the_pool_are_reused() {
        let claims = [
            claim("a", "office", "alice", "Bound"),
            claim("b", "office", "bob", "Bound"),
            claim("c", "office", "alice", "Released"),
            claim("d", "lab", "alice", "Pending"),
        ];
        let names: Vec<_> = live_claims(&claims, "office", "alice")
            .into_iter()
            .map(|c| c.name_any())
            .collect();
        assert_eq!(names, ["a"]);
    }
}
