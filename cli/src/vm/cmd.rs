//! Glue for the VM verbs: the cluster round trips around the pure decisions in
//! [`super::power`], [`super::report`] and [`super::console`], and the exit codes.
//!
//! Exit codes: 0 done (also when nothing had to change), 1 failed (not found, refused,
//! timed out, cluster error), 2 usage.

use std::process::ExitCode;
use std::time::Duration;

use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::args::{OutputFormat, PowerArgs, StatusArgs};
use super::power::{self, FIELD_MANAGER, Plan, Refusal, Verb};
use super::report::Report;
use super::wait::{self, WaitError};
use crate::cluster::{ClusterArgs, ClusterError};

/// How often a write is decided again after a concurrent change (409).
const CONFLICT_RETRIES: usize = 3;

/// Why a VM verb failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No such VM.
    #[error("VirtualMachine {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// Namespace looked in.
        namespace: String,
        /// Name asked for.
        name: String,
    },
    /// The cluster could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A request failed.
    #[error("request to the cluster failed")]
    Api(#[from] kube::Error),
    /// The verb does not apply to the VM as it is.
    #[error("{key} {refusal}")]
    Refused {
        /// `namespace/name`.
        key: String,
        /// Why.
        refusal: Refusal,
    },
    /// The VM kept changing under us.
    #[error("{0} kept changing while ivctl wrote it; try again")]
    Conflict(String),
    /// `--wait` ended without the target.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// Rendering the report failed.
    #[error("cannot render the report: {0}")]
    Render(String),
    /// No async runtime.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The message and its causes, without repeating a cause the message already contains.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Run `f` on a fresh runtime and turn its result into an exit code.
pub fn block_on<F>(f: F) -> ExitCode
where
    F: Future<Output = Result<(), VmError>>,
{
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(VmError::Runtime)
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The VM, or [`VmError::NotFound`] naming it with its namespace.
pub async fn get_vm(
    api: &Api<VirtualMachine>,
    namespace: &str,
    name: &str,
) -> Result<VirtualMachine, VmError> {
    api.get_opt(name).await?.ok_or_else(|| VmError::NotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Now, as RFC 3339.
fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}

/// Decide and write, deciding again when the VM changed between the read and the write.
async fn decide_and_write(
    api: &Api<VirtualMachine>,
    namespace: &str,
    verb: Verb,
    name: &str,
) -> Result<(String, Plan), VmError> {
    for _ in 0..CONFLICT_RETRIES {
        let vm = get_vm(api, namespace, name).await?;
        let key = vm.key();
        let plan = power::plan(verb, &vm, &now_rfc3339()).map_err(|refusal| VmError::Refused {
            key: key.clone(),
            refusal,
        })?;
        let Some(change) = &plan.change else {
            return Ok((key, plan));
        };
        let patch = power::merge_patch(change, vm.metadata.resource_version.as_deref());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok((key, plan)),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Err(VmError::NotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(VmError::Conflict(format!("{namespace}/{name}")))
}

/// A client whose reads may idle as long as a watch does (the default one times out
/// after 5 s, which suits single requests only).
async fn watch_client(cluster: &ClusterArgs) -> Result<Client, VmError> {
    let mut config = cluster.config().await?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(300));
    Client::try_from(config).map_err(|e| VmError::Cluster(ClusterError::Api(e)))
}

/// `ivctl start|stop|restart`.
pub async fn power(cluster: &ClusterArgs, verb: Verb, a: &PowerArgs) -> Result<(), VmError> {
    let namespace = cluster.namespace().await;
    let client = if a.wait {
        watch_client(cluster).await?
    } else {
        cluster.client().await?
    };
    let api = Api::<VirtualMachine>::namespaced(client, &namespace);
    let (key, plan) = decide_and_write(&api, &namespace, verb, &a.name).await?;
    println!("{key}: {}", plan.message);
    if a.wait {
        wait::wait_for(&api, &key, &a.name, &plan.target, a.timeout).await?;
        println!("{key} is {}", wait::describe(&plan.target));
    }
    Ok(())
}

/// The Events about `vm` (both Event APIs are one store; the core one is read).
async fn events_of(client: Client, vm: &VirtualMachine) -> Result<Vec<Event>, kube::Error> {
    let namespace = vm.metadata.namespace.as_deref().unwrap_or_default();
    let name = vm.metadata.name.as_deref().unwrap_or_default();
    let api = Api::<Event>::namespaced(client, namespace);
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=VirtualMachine,involvedObject.name={name}"
    ));
    Ok(api.list(&params).await?.items)
}

/// `ivctl status`.
pub async fn status(cluster: &ClusterArgs, a: &StatusArgs) -> Result<(), VmError> {
    let namespace = cluster.namespace().await;
    let client = cluster.client().await?;
    let api = Api::<VirtualMachine>::namespaced(client.clone(), &namespace);
    let vm = get_vm(&api, &namespace, &a.name).await?;
    // Events are context, not the answer: a cluster that refuses them still gets a report.
    let events = match events_of(client, &vm).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: cannot list the VM's events: {}", error_chain(&e));
            Vec::new()
        }
    };
    let report = Report::new(&vm, &events);
    match a.output {
        OutputFormat::Text => print!("{}", report.to_text(Timestamp::now())),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| VmError::Render(e.to_string()))?
        ),
        OutputFormat::Yaml => print!(
            "{}",
            serde_saphyr::to_string(&report).map_err(|e| VmError::Render(e.to_string()))?
        ),
    }
    Ok(())
}
